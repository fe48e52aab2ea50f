def on_withdrawn(event, models) -> None:
    account = models.account.require(event.data.id)
    models.account.update(account.id, balance=account.balance - event.data.amount)


reducers = {"Withdrawn": on_withdrawn}
