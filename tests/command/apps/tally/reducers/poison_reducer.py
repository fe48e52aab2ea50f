def on_poisoned(event, models) -> None:
    # A reducer with a bug that changes the model before failing: the failed event must
    # leave no trace in the models.
    tally = models.tally.require(event.data.id)
    models.tally.update(tally.id, total=-1)
    models.tally.put({"id": "poisoned", "total": 0})
    raise ZeroDivisionError(f"cannot apply poison to {event.data.id}")


reducers = {"Poisoned": on_poisoned}
