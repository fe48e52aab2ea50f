"""Ask for money to move between two accounts; the transfer process carries it out."""

from pydantic import BaseModel, Field, model_validator

from micro import RuleViolation
from micro.readmodel import Event

auth = "required"  # only a logged-in user


class Request(BaseModel):
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    source: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    target: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    amount: int = Field(gt=0, le=1_000_000_000)

    @model_validator(mode="after")
    def _distinct(self) -> "Request":
        if self.source == self.target:
            raise ValueError("source and target must be different accounts")
        return self


class TransferRequested(Event):
    id: str
    source: str
    target: str
    amount: int


def stream(request: Request) -> str:
    return f"transfer-{request.id}"


def validation(request: Request, models) -> None:
    if request.id in models.transfer:
        raise RuleViolation(f"transfer {request.id} already exists")
    for account in (request.source, request.target):
        if account not in models.account:
            raise RuleViolation(f"account {account} does not exist")


def events(request: Request, models) -> list[Event]:
    return [TransferRequested(**request.model_dump())]


def respond(request: Request, models, events) -> dict:
    return models.transfer.require(request.id).model_dump()
