def on_marked(event, models) -> None:
    tally = models.tally.get("marks")
    count = tally.count if tally else 0
    models.tally.put({"id": "marks", "total": 0, "count": count + 1})


reducers = {"Marked": on_marked}
