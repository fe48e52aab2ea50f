from micro.readmodel import AppliedEvent


def on_taken(event: AppliedEvent, models) -> None:
    tally = models.tally.require(event.data.id)
    models.tally.update(tally.id, total=tally.total - event.data.amount, count=tally.count + 1)


reducers = {"Taken": on_taken}
