from __future__ import annotations

from typing import Any


def on_session_started(event: Any, models: Any) -> None:
    started = event.data
    if started.replaces is not None:
        models.auth_session.remove(started.replaces)
    # Sessions that ran out are dropped as the user comes back: the model stays small.
    for session in models.auth_session.find(user_id=started.user_id):
        if session.expires_at <= event.recorded_at:
            models.auth_session.remove(session.id)
    models.auth_session.put(
        {
            "id": started.session_id,
            "user_id": started.user_id,
            "device": started.device,
            "started_at": event.recorded_at,
            "expires_at": started.expires_at,
        }
    )
    models.auth_user.update(started.user_id, failed_logins=0, lockouts=0, locked_until=None)


def on_login_failed(event: Any, models: Any) -> None:
    failed = event.data
    models.auth_user.update(
        failed.user_id,
        failed_logins=failed.failures,
        lockouts=failed.lockouts,
        locked_until=failed.locked_until,
    )


reducers = {"SessionStarted": on_session_started, "LoginFailed": on_login_failed}
