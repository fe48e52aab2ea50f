"""Change the caller's password; every other session of the user ends."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, SecretStr

from micro import ValidationError
from micro.modules.auth import current_auth, current_user
from micro.modules.auth import user_stream as stream_of
from micro.modules.auth.passwords import MAX_PASSWORD_CHARS, check_password
from micro.readmodel import Event

auth = "required"


class Request(BaseModel):
    current_password: SecretStr = Field(min_length=1, max_length=MAX_PASSWORD_CHARS)
    new_password: SecretStr = Field(min_length=1, max_length=MAX_PASSWORD_CHARS)
    new_password_confirmation: SecretStr = Field(min_length=1, max_length=MAX_PASSWORD_CHARS)


class PasswordChanged(Event):
    user_id: str
    password_hash: str
    ended_sessions: list[str]


def pre_validation(request: Request) -> None:
    user = current_user()
    check_password(
        request.new_password.get_secret_value(),
        current_auth().settings,
        field="new_password",
        login=user.login,
        name=user.name,
        confirmation=request.new_password_confirmation.get_secret_value(),
        confirmation_field="new_password_confirmation",
    )


def stream(request: Request) -> str:
    return stream_of(current_user().id)


async def validation(request: Request, models: Any) -> None:
    record = models.auth_user.require(current_user().id)
    passwords = current_auth().passwords
    if not await passwords.verify(
        record.password_hash, request.current_password.get_secret_value()
    ):
        raise ValidationError(
            "the current password is wrong",
            details={"fields": [{"field": "current_password", "reason": "wrong password"}]},
        )


async def events(request: Request, models: Any) -> list[Event]:
    user = current_user()
    password_hash = await current_auth().passwords.hash(request.new_password.get_secret_value())
    others = [s.id for s in models.auth_session.find(user_id=user.id) if s.id != user.session]
    return [PasswordChanged(user_id=user.id, password_hash=password_hash, ended_sessions=others)]


def respond(request: Request, models: Any, events: list[Event]) -> dict[str, Any]:
    return {"sessions_ended": len(events[0].ended_sessions) if events else 0}  # type: ignore[attr-defined]
