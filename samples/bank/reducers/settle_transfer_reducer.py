def on_debited(event, models) -> None:
    models.transfer.update(event.data.id, status="debited")


def on_completed(event, models) -> None:
    models.transfer.update(event.data.id, status="completed")


def on_failed(event, models) -> None:
    models.transfer.update(event.data.id, status="failed", reason=event.data.reason)


reducers = {
    "TransferDebited": on_debited,
    "TransferCompleted": on_completed,
    "TransferFailed": on_failed,
}
