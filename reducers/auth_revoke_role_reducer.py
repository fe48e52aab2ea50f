from __future__ import annotations

from typing import Any


def on_role_revoked(event: Any, models: Any) -> None:
    user = models.auth_user.require(event.data.user_id)
    models.auth_user.update(user.id, roles=[role for role in user.roles if role != event.data.role])


reducers = {"RoleRevoked": on_role_revoked}
