def on_paid(event, models) -> None:
    models.payment.put(event.data.model_dump())


reducers = {"Paid": on_paid}
