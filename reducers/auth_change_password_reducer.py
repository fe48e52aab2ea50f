from __future__ import annotations

from typing import Any


def on_password_changed(event: Any, models: Any) -> None:
    changed = event.data
    models.auth_user.update(
        changed.user_id, password_hash=changed.password_hash, password_changed_at=event.recorded_at
    )
    for session_id in changed.ended_sessions:
        models.auth_session.remove(session_id)


reducers = {"PasswordChanged": on_password_changed}
