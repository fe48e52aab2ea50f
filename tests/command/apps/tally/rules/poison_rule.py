"""Store an event its reducer cannot apply (fail-stop)."""

from pydantic import BaseModel

from micro.readmodel import Event


class Request(BaseModel):
    id: str


class Poisoned(Event):
    id: str


def stream(request: Request) -> str:
    return f"tally-{request.id}"


def events(request: Request, models) -> list[Event]:
    return [Poisoned(id=request.id)]
