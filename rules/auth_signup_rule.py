"""Create a user: name, login, password (twice). The password is stored only as a hash."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, SecretStr

from micro import ConflictError, ValidationError
from micro.modules.auth import current_auth, login_problems, normalize_login, user_id_for
from micro.modules.auth import user_stream as stream_of
from micro.modules.auth.passwords import MAX_PASSWORD_CHARS, check_password
from micro.readmodel import Event


class Request(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    login: str = Field(min_length=1, max_length=64)
    password: SecretStr = Field(min_length=1, max_length=MAX_PASSWORD_CHARS)
    password_confirmation: SecretStr = Field(min_length=1, max_length=MAX_PASSWORD_CHARS)


class UserSignedUp(Event):
    user_id: str
    login: str
    name: str
    password_hash: str


def pre_validation(request: Request) -> None:
    login = normalize_login(request.login)
    fields: list[dict[str, Any]] = [
        {"field": "login", "reason": f"login {problem}", "type": "login"}
        for problem in login_problems(login)
    ]
    try:
        check_password(
            request.password.get_secret_value(),
            current_auth().settings,
            login=login,
            name=request.name,
            confirmation=request.password_confirmation.get_secret_value(),
        )
    except ValidationError as error:
        fields.extend(error.fields)
    if fields:
        summary = "; ".join(f"{item['field']}: {item['reason']}" for item in fields)
        raise ValidationError(f"invalid sign-up: {summary}", details={"fields": fields})


def stream(request: Request) -> str:
    return stream_of(user_id_for(request.login))


def validation(request: Request, models: Any) -> None:
    if user_id_for(request.login) in models.auth_user:
        raise ConflictError(
            "this login is taken",
            details={"fields": [{"field": "login", "reason": "already taken", "type": "taken"}]},
        )


async def events(request: Request, models: Any) -> list[Event]:
    password_hash = await current_auth().passwords.hash(request.password.get_secret_value())
    return [
        UserSignedUp(
            user_id=user_id_for(request.login),
            login=normalize_login(request.login),
            name=request.name,
            password_hash=password_hash,
        )
    ]


def respond(request: Request, models: Any, events: list[Event]) -> dict[str, Any]:
    user = models.auth_user.require(user_id_for(request.login))
    return {"id": user.id, "login": user.login, "name": user.name}
