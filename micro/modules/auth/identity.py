"""Who is who: login normalisation, user ids and streams, the user a request runs as."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from micro.context import current_context
from micro.errors import UnauthorizedError

__all__ = [
    "SYSTEM",
    "AuthUser",
    "current_user",
    "login_problems",
    "normalize_login",
    "user_id_for",
    "user_stream",
]

_LOGIN = re.compile(r"^[a-z0-9][a-z0-9._@+-]{2,63}$")


def normalize_login(login: str) -> str:
    """The canonical form of a login: NFKC, case-folded, trimmed (``Ann@X.org`` = ``ann@x.org``)."""
    return unicodedata.normalize("NFKC", login).casefold().strip()


def login_problems(login: str) -> list[str]:
    """Why a (normalised) login is refused at signup; empty when it is fine."""
    if not _LOGIN.match(login):
        return [
            "must be 3 to 64 characters: letters, digits and . _ @ + -, starting with a "
            "letter or digit"
        ]
    return []


def user_id_for(login: str) -> str:
    """The user id of a login: derived from it, so one login can only ever have one stream."""
    digest = hashlib.sha256(b"micro-auth-login\x00" + normalize_login(login).encode())
    return "u" + digest.hexdigest()[:31]


def user_stream(user_id: str) -> str:
    """The event stream of one user (sign-up, sessions, password, roles)."""
    return f"auth-user-{user_id}"


@dataclass(frozen=True, slots=True)
class AuthUser:
    """The authenticated caller, as handlers see it in ``ctx.user``."""

    id: str
    login: str
    name: str = ""
    roles: frozenset[str] = frozenset()
    session: str | None = None
    kind: str = "user"
    """``user`` (logged in), ``service`` (a service acting as itself) or ``system``."""
    claims: dict[str, Any] = field(default_factory=dict, repr=False)
    """The token's verified claims."""
    secrets: dict[str, Any] = field(default_factory=dict, repr=False)
    """The token's secret claims, decrypted (services only ever see them)."""

    def has_role(self, *roles: str) -> bool:
        """True when the user holds any of ``roles``."""
        return bool(self.roles.intersection(roles))

    def public(self) -> dict[str, Any]:
        """What may be shown to the user: never claims or secrets."""
        return {
            "id": self.id,
            "login": self.login,
            "name": self.name,
            "roles": sorted(self.roles),
            "session": self.session,
            "kind": self.kind,
        }


SYSTEM = AuthUser(
    id="system", login="system", name="system", roles=frozenset({"admin"}), kind="system"
)
"""The user of in-process commands (seeding the first admin); never comes from a token."""


def current_user() -> AuthUser:
    """The user of the request being served; ``UnauthorizedError`` when there is none."""
    ctx = current_context.get()
    user = ctx.user if ctx is not None else None
    if not isinstance(user, AuthUser):
        raise UnauthorizedError(
            "this command needs a logged-in user", details={"reason": "missing"}
        )
    return user
