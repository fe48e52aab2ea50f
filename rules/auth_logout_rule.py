"""End the caller's session (or all of the user's sessions): its tokens stop working."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from micro.modules.auth import current_user
from micro.modules.auth import user_stream as stream_of
from micro.readmodel import Event

auth = "required"


class Request(BaseModel):
    all_devices: bool = False


class LoggedOut(Event):
    user_id: str
    session_ids: list[str]


def stream(request: Request) -> str:
    return stream_of(current_user().id)


def events(request: Request, models: Any) -> list[Event]:
    user = current_user()
    if request.all_devices:
        ended = [session.id for session in models.auth_session.find(user_id=user.id)]
    else:
        ended = [user.session] if user.session else []
    return [LoggedOut(user_id=user.id, session_ids=ended)]


def respond(request: Request, models: Any, events: list[Event]) -> dict[str, Any]:
    return {"sessions_ended": len(events[0].session_ids) if events else 0}  # type: ignore[attr-defined]
