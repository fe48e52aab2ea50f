"""Take an amount off a tally; refused while the tally holds less than that."""

from pydantic import BaseModel, Field

from micro import RuleViolation
from micro.readmodel import Event

LIMIT = 1000


class TallyShort(RuleViolation):
    """A refusal of its own kind: a retry must get this very class back."""

    code = "tally_short"


class Request(BaseModel):
    id: str = Field(min_length=1, pattern=r"^[a-z0-9-]+$")
    amount: int = Field(gt=0)


class Taken(Event):
    id: str
    amount: int


def stream(request: Request) -> str:
    return f"tally-{request.id}"


def pre_validation(request: Request) -> None:
    if request.amount > LIMIT:
        raise RuleViolation(f"no tally ever holds {request.amount} (the limit is {LIMIT})")


def validation(request: Request, models) -> None:
    tally = models.tally.get(request.id)
    total = tally.total if tally else 0
    if total < request.amount:
        raise TallyShort(
            f"tally {request.id} holds {total}, less than {request.amount}",
            details={"id": request.id, "total": total, "asked": request.amount},
        )


def events(request: Request, models) -> list[Event]:
    return [Taken(id=request.id, amount=request.amount)]


def respond(request: Request, models, events) -> dict:
    return models.tally.require(request.id).model_dump()
