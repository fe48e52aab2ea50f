"""A rule with a bug: its decision raises something no rule should raise."""

from pydantic import BaseModel

from micro.readmodel import Event


class Request(BaseModel):
    id: str
    where: str = "validation"


class Exploded(Event):
    id: str


def stream(request: Request) -> str:
    return f"tally-{request.id}"


def validation(request: Request, models) -> None:
    if request.where == "validation":
        raise KeyError("a bug in the rule")


def events(request: Request, models) -> list[Event]:
    if request.where == "events":
        return [Exploded(id=request.id, unexpected="field")]  # fails the event's schema
    if request.where == "nothing":
        return []
    if request.where == "not a list":
        return "Exploded"  # type: ignore[return-value]
    return [Exploded(id=request.id)]


def respond(request: Request, models, events) -> dict:
    if request.where == "respond":
        raise RuntimeError("respond broke")
    return {"ok": True}
