from micro.readmodel import AppliedEvent


def on_added(event: AppliedEvent, models) -> None:
    tally = models.tally.get(event.data.id)
    if tally is None:
        models.tally.insert({"id": event.data.id, "total": event.data.amount, "count": 1})
    else:
        models.tally.update(tally.id, total=tally.total + event.data.amount, count=tally.count + 1)


reducers = {"Added": on_added}
