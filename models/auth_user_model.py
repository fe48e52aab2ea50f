"""Users of the auth module: login, name, password hash, roles and login failures."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class UserRecord(BaseModel):
    id: str
    login: str
    name: str
    password_hash: str
    """argon2id hash: the only form of the password ever stored."""
    roles: list[str] = Field(default_factory=list)
    failed_logins: int = 0
    """Failed logins since the last success or lockout."""
    lockouts: int = 0
    """Lockouts since the last successful login: each one lasts longer."""
    locked_until: datetime | None = None
    signed_up_at: datetime
    password_changed_at: datetime | None = None


record = UserRecord
key = "id"
indexes = ["login"]


def reset() -> list[UserRecord]:
    return []
