"""Record a mark on a fixed stream; the default reply (stream, position, events)."""

from pydantic import BaseModel

from micro.readmodel import Event


class Request(BaseModel):
    label: str
    copies: int = 1


class Marked(Event):
    label: str


stream = "marks"


def events(request: Request, models) -> list[Event]:
    return [Marked(label=request.label) for _ in range(request.copies)]
