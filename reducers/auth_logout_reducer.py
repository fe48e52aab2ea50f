from __future__ import annotations

from typing import Any


def on_logged_out(event: Any, models: Any) -> None:
    for session_id in event.data.session_ids:
        models.auth_session.remove(session_id)


reducers = {"LoggedOut": on_logged_out}
