def on_account_opened(event, models) -> None:
    models.account.insert(
        {"id": event.data.id, "owner": event.data.owner, "opened_at": event.recorded_at}
    )


reducers = {"AccountOpened": on_account_opened}
