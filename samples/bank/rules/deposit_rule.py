"""Put money into an account."""

from pydantic import BaseModel, Field

from micro import RuleViolation
from micro.readmodel import Event

auth = "required"  # a logged-in user (or the transfer process, as the service)


class Request(BaseModel):
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    amount: int = Field(gt=0, le=1_000_000_000)


class Deposited(Event):
    id: str
    amount: int


def stream(request: Request) -> str:
    return f"account-{request.id}"


MAX_BALANCE = 1_000_000_000


def validation(request: Request, models) -> None:
    account = models.account.get(request.id)
    if account is None:
        raise RuleViolation(f"account {request.id} does not exist")
    if account.balance + request.amount > MAX_BALANCE:
        raise RuleViolation(f"account {request.id} would exceed the limit of {MAX_BALANCE}")


def events(request: Request, models) -> list[Event]:
    return [Deposited(id=request.id, amount=request.amount)]


def respond(request: Request, models, events) -> dict:
    return {"id": request.id, "balance": models.account.require(request.id).balance}
