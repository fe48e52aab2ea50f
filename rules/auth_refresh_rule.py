"""Trade a valid token for a new one on the same session, moving the session's expiry on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from micro import RuleViolation
from micro.modules.auth import current_auth, current_user
from micro.modules.auth import user_stream as stream_of
from micro.readmodel import Event

auth = "required"


class Request(BaseModel):
    pass


class SessionRefreshed(Event):
    user_id: str
    session_id: str
    expires_at: datetime


def stream(request: Request) -> str:
    return stream_of(current_user().id)


def validation(request: Request, models: Any) -> None:
    if current_user().session is None:
        raise RuleViolation("only a user's token can be refreshed")


def events(request: Request, models: Any) -> list[Event]:
    user = current_user()
    ttl = current_auth().settings.auth_session_ttl
    return [
        SessionRefreshed(
            user_id=user.id,
            session_id=user.session or "",
            expires_at=datetime.now(UTC) + timedelta(seconds=ttl),
        )
    ]


def respond(request: Request, models: Any, events: list[Event]) -> dict[str, Any]:
    user = current_user()
    return current_auth().session_token(models.auth_user.require(user.id), user.session or "")
