"""Open a new account for an owner."""

from pydantic import BaseModel, Field

from micro import RuleViolation
from micro.readmodel import Event

auth = "required"  # only a logged-in user


class Request(BaseModel):
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    owner: str = Field(min_length=1, max_length=100)


class AccountOpened(Event):
    id: str
    owner: str


def stream(request: Request) -> str:
    return f"account-{request.id}"


def validation(request: Request, models) -> None:
    if request.id in models.account:
        raise RuleViolation(f"account {request.id} already exists")


def events(request: Request, models) -> list[Event]:
    return [AccountOpened(id=request.id, owner=request.owner)]


def respond(request: Request, models, events) -> dict:
    return models.account.require(request.id).model_dump(mode="json")
