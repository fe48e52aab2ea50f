"""Open login sessions, one per user and device; a token is valid only while its session is."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class SessionRecord(BaseModel):
    id: str
    user_id: str
    device: str
    started_at: datetime
    expires_at: datetime
    """Moved forward by each refresh."""


record = SessionRecord
key = "id"
indexes = ["user_id"]


def reset() -> list[SessionRecord]:
    return []
