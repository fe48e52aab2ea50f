"""Put money into an account."""

from pydantic import BaseModel, Field

from micro import RuleViolation
from micro.readmodel import Event


class Request(BaseModel):
    id: str
    amount: int = Field(gt=0, le=1_000_000_000)


class Deposited(Event):
    id: str
    amount: int


def stream(request: Request) -> str:
    return f"account-{request.id}"


def validation(request: Request, models) -> None:
    if request.id not in models.account:
        raise RuleViolation(f"account {request.id} does not exist")


def events(request: Request, models) -> list[Event]:
    return [Deposited(id=request.id, amount=request.amount)]


def respond(request: Request, models, events) -> dict:
    return {"id": request.id, "balance": models.account.require(request.id).balance}
