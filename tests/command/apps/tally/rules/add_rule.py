"""Add an amount to a tally (opened on first use); a tally never passes its limit."""

from pydantic import BaseModel, Field

from micro import RuleViolation
from micro.readmodel import Event

LIMIT = 1000


class Request(BaseModel):
    id: str = Field(min_length=1, pattern=r"^[a-z0-9-]+$")
    amount: int = Field(gt=0)
    note: str = ""


class Added(Event):
    id: str
    amount: int


def stream(request: Request) -> str:
    return f"tally-{request.id}"


def pre_validation(request: Request) -> None:
    if request.note == "forbidden":
        raise ValueError("that note is not allowed")


def validation(request: Request, models) -> None:
    tally = models.tally.get(request.id)
    total = tally.total if tally else 0
    if total + request.amount > LIMIT:
        raise RuleViolation(f"tally {request.id} would pass its limit of {LIMIT} (at {total})")


def events(request: Request, models) -> list[Event]:
    return [Added(id=request.id, amount=request.amount)]


def respond(request: Request, models, events) -> dict:
    return models.tally.require(request.id).model_dump()
