"""Record how a transfer went (sent by the transfer process, not by people)."""

from typing import Literal

from pydantic import BaseModel, Field

from micro import RuleViolation
from micro.readmodel import Event

roles = ["service"]  # only the transfer process (with its service token) settles


class Request(BaseModel):
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    outcome: Literal["debited", "completed", "failed"]
    reason: str = ""
    refunded: bool = False
    """A debited transfer fails only once its debit went back to the source."""


class TransferDebited(Event):
    id: str


class TransferCompleted(Event):
    id: str


class TransferFailed(Event):
    id: str
    reason: str


_NEXT = {"requested": {"debited", "failed"}, "debited": {"completed", "failed"}}


def stream(request: Request) -> str:
    return f"transfer-{request.id}"


def validation(request: Request, models) -> None:
    transfer = models.transfer.get(request.id)
    if transfer is None:
        raise RuleViolation(f"transfer {request.id} does not exist")
    if request.outcome not in _NEXT.get(transfer.status, set()):
        raise RuleViolation(f"transfer {request.id} is {transfer.status}, not {request.outcome}")
    if transfer.status == "debited" and request.outcome == "failed" and not request.refunded:
        # The money left the source: failing now without giving it back would lose it.
        raise RuleViolation(f"transfer {request.id} is debited: it fails only once refunded")


def events(request: Request, models) -> list[Event]:
    if request.outcome == "debited":
        return [TransferDebited(id=request.id)]
    if request.outcome == "completed":
        return [TransferCompleted(id=request.id)]
    return [TransferFailed(id=request.id, reason=request.reason)]


def respond(request: Request, models, events) -> dict:
    return models.transfer.require(request.id).model_dump()
