def on_transfer_requested(event, models) -> None:
    models.transfer.insert(event.data.model_dump())


reducers = {"TransferRequested": on_transfer_requested}
