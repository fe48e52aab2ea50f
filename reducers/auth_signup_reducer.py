from __future__ import annotations

from typing import Any


def on_signed_up(event: Any, models: Any) -> None:
    models.auth_user.insert(
        {
            "id": event.data.user_id,
            "login": event.data.login,
            "name": event.data.name,
            "password_hash": event.data.password_hash,
            "signed_up_at": event.recorded_at,
        }
    )


reducers = {"UserSignedUp": on_signed_up}
