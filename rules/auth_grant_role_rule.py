"""Give a user a role (admins only)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from micro import RuleViolation
from micro.modules.auth import user_id_for
from micro.modules.auth import user_stream as stream_of
from micro.readmodel import Event

roles = ["admin"]


class Request(BaseModel):
    login: str = Field(min_length=1, max_length=256)
    role: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_.-]*$")


class RoleGranted(Event):
    user_id: str
    role: str


def stream(request: Request) -> str:
    return stream_of(user_id_for(request.login))


def validation(request: Request, models: Any) -> None:
    user = models.auth_user.get(user_id_for(request.login))
    if user is None:
        raise RuleViolation(f"no user with the login {request.login!r}")
    if request.role in user.roles:
        raise RuleViolation(f"{user.login} already has the role {request.role!r}")


def events(request: Request, models: Any) -> list[Event]:
    return [RoleGranted(user_id=user_id_for(request.login), role=request.role)]


def respond(request: Request, models: Any, events: list[Event]) -> dict[str, Any]:
    user = models.auth_user.require(user_id_for(request.login))
    return {"login": user.login, "roles": sorted(user.roles)}
