"""Open a session on a device and get a token; a new login on a device replaces its session.

A wrong password and an unknown login get the same error. Failed logins are counted per
login; after ``auth_lockout_attempts`` in a row the login is locked for a growing period.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field, SecretStr

from micro import ValidationError
from micro.modules.auth import current_auth, user_id_for
from micro.modules.auth import user_stream as stream_of
from micro.modules.auth.passwords import MAX_PASSWORD_CHARS
from micro.readmodel import Event


class Request(BaseModel):
    login: str = Field(min_length=1, max_length=256)
    password: SecretStr = Field(min_length=1, max_length=MAX_PASSWORD_CHARS)
    device: str = Field(default="default", min_length=1, max_length=64)


class SessionStarted(Event):
    user_id: str
    session_id: str
    device: str
    expires_at: datetime
    replaces: str | None = None
    """The session this device had before, ended by this login."""


class LoginFailed(Event):
    user_id: str
    failures: int
    lockouts: int
    locked_until: datetime | None = None


def pre_validation(request: Request) -> None:
    limit = current_auth().settings.auth_password_max_length
    if len(request.password.get_secret_value().encode("utf-8", "surrogatepass")) > limit:
        # No stored password can be this long: refused before any hashing, nothing stored.
        raise ValidationError(
            f"password: must be at most {limit} bytes",
            details={"fields": [{"field": "password", "reason": "too long", "type": "too_long"}]},
        )


def stream(request: Request) -> str:
    return stream_of(user_id_for(request.login))


async def validation(request: Request, models: Any) -> None:
    auth = current_auth()
    user = models.auth_user.get(user_id_for(request.login))
    if user is None:
        await auth.refuse_unknown_login(request.login, request.password.get_secret_value())
    auth.check_lockout(user.locked_until)


async def events(request: Request, models: Any) -> list[Event]:
    auth = current_auth()
    user = models.auth_user.require(user_id_for(request.login))
    if not await auth.passwords.verify(user.password_hash, request.password.get_secret_value()):
        failures, lockouts, locked_until = auth.lockout_after(user.failed_logins, user.lockouts)
        return [
            LoginFailed(
                user_id=user.id, failures=failures, lockouts=lockouts, locked_until=locked_until
            )
        ]
    previous = [s for s in models.auth_session.find(user_id=user.id) if s.device == request.device]
    return [
        SessionStarted(
            user_id=user.id,
            session_id=uuid.uuid4().hex,
            device=request.device,
            expires_at=datetime.now(UTC) + timedelta(seconds=auth.settings.auth_session_ttl),
            replaces=previous[0].id if previous else None,
        )
    ]


def respond(request: Request, models: Any, events: list[Event]) -> dict[str, Any]:
    auth = current_auth()
    started = events[0] if events else None
    if not isinstance(started, SessionStarted):
        # The failure is stored (it counts towards the lockout); the caller learns only this.
        raise auth.bad_credentials()
    user = models.auth_user.require(started.user_id)
    return auth.session_token(user, started.session_id)
