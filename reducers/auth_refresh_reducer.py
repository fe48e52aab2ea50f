from __future__ import annotations

from typing import Any


def on_refreshed(event: Any, models: Any) -> None:
    if event.data.session_id in models.auth_session:
        models.auth_session.update(event.data.session_id, expires_at=event.data.expires_at)


reducers = {"SessionRefreshed": on_refreshed}
