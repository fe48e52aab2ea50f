"""The ``auth`` module: users, sessions, tokens and the guard on commands.

The rules, reducers and models are sheets in the repository's top-level ``rules/``,
``reducers/`` and ``models/`` folders (shipped inside the wheel as ``micro/_sheets``). The
heavy parts (argon2, PyJWT, cryptography) load only when a service uses the module.

    micro = Micro(service="bank")
    micro.modules.want(["auth"])
    auth = micro.modules.get("auth")           # adds "auth signup", "auth login", ...
    token = (await client.act("auth login", {...}))["token"]
    await client.act("deposit", {...}, meta={"token": token})
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from micro.modules.auth.errors import LockedOutError
from micro.modules.auth.identity import (
    SYSTEM,
    AuthUser,
    current_user,
    login_problems,
    normalize_login,
    user_id_for,
    user_stream,
)

if TYPE_CHECKING:
    from micro.modules.auth.module import Auth
    from micro.modules.loader import ModuleLoader

__all__ = [
    "SYSTEM",
    "AuthUser",
    "LockedOutError",
    "current_auth",
    "current_user",
    "login_problems",
    "normalize_login",
    "register_auth",
    "user_id_for",
    "user_stream",
]


def current_auth() -> Auth:
    """The auth module running the current command (the auth sheets use it)."""
    from micro.modules.auth.module import current_auth as running

    return running()


def register_auth(loader: ModuleLoader) -> None:
    """Register the ``auth`` module (it requires the ``commander``)."""
    loader.register("auth", "micro.modules._factories:auth", requires=["commander"])
