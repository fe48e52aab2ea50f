def on_something(event, models) -> None:
    pass
