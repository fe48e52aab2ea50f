from __future__ import annotations

from typing import Any


def on_role_granted(event: Any, models: Any) -> None:
    user = models.auth_user.require(event.data.user_id)
    models.auth_user.update(user.id, roles=sorted({*user.roles, event.data.role}))


reducers = {"RoleGranted": on_role_granted}
