"""Passwords: strength rules and argon2id hashing, off the event loop.

A password never leaves this module in any form but its argon2id hash. Hashing takes tens
of milliseconds and tens of MiB by design, so it runs in a worker thread, and a semaphore
bounds how many run at once: a flood of logins queues instead of exhausting memory.
"""

from __future__ import annotations

import asyncio
import unicodedata
from typing import Any

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from micro.errors import ValidationError
from micro.settings import Settings

__all__ = ["MAX_PASSWORD_CHARS", "PasswordHasher", "password_problems"]

MAX_PASSWORD_CHARS = 1024
"""Hard cap in the request schemas; ``auth_password_max_length`` (bytes) is checked after."""

# The handful every cracking list starts with: refused whatever the other rules say.
_COMMON = frozenset(
    {
        "password",
        "passw0rd",
        "password1",
        "password123",
        "123456789012",
        "qwertyuiop",
        "qwerty123456",
        "iloveyou",
        "letmein",
        "welcome",
        "admin",
        "administrator",
        "changeme",
        "trustno1",
    }
)


def password_problems(
    password: str, *, min_length: int, max_bytes: int, login: str = "", name: str = ""
) -> list[str]:
    """Why ``password`` is refused (empty when it is acceptable).

    Long passphrases (20 characters or more) need no character mix; shorter passwords need
    three of lower case, upper case, digits and other characters.
    """
    problems = []
    size = len(password.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        problems.append(f"must be at most {max_bytes} bytes")
        return problems  # nothing else is worth checking on an oversized input
    if len(password) < min_length:
        problems.append(f"must be at least {min_length} characters")
    if any(unicodedata.category(char) == "Cc" for char in password):
        problems.append("must not contain control characters")
    classes = sum(
        (
            any(char.islower() for char in password),
            any(char.isupper() for char in password),
            any(char.isdigit() for char in password),
            any(not char.isalnum() for char in password),
        )
    )
    if len(password) < 20 and classes < 3:
        problems.append(
            "needs three of: lower case, upper case, digits, other characters "
            "(or 20 characters or more)"
        )
    lowered = password.lower()
    if lowered in _COMMON or lowered.rstrip("0123456789!") in _COMMON:
        problems.append("is too common")
    for what, value in (("login", login), ("name", name)):
        if len(value) >= 3 and value.lower() in lowered:
            problems.append(f"must not contain the {what}")
    return problems


def check_password(
    password: str,
    settings: Settings,
    *,
    field: str = "password",
    login: str = "",
    name: str = "",
    confirmation: str | None = None,
    confirmation_field: str = "password_confirmation",
) -> None:
    """Raise ``ValidationError`` with one entry per problem, each naming its field."""
    fields: list[dict[str, Any]] = [
        {"field": field, "reason": f"password {problem}", "type": "password_strength"}
        for problem in password_problems(
            password,
            min_length=settings.auth_password_min_length,
            max_bytes=settings.auth_password_max_length,
            login=login,
            name=name,
        )
    ]
    if confirmation is not None and confirmation != password:
        fields.append(
            {"field": confirmation_field, "reason": "does not match", "type": "confirmation"}
        )
    if fields:
        summary = "; ".join(f"{item['field']}: {item['reason']}" for item in fields)
        raise ValidationError(f"invalid password: {summary}", details={"fields": fields})


class PasswordHasher:
    """argon2id with the costs from settings; hashing and checking run in threads."""

    def __init__(self, settings: Settings) -> None:
        self.max_bytes = settings.auth_password_max_length
        self._hasher = argon2.PasswordHasher(
            time_cost=settings.auth_hash_time_cost,
            memory_cost=settings.auth_hash_memory_kib,
            parallelism=settings.auth_hash_parallelism,
            type=argon2.Type.ID,
        )
        self._slots = asyncio.Semaphore(settings.auth_hash_concurrency)
        self._decoy: str | None = None

    def _bounded(self, password: str) -> bytes:
        data = password.encode("utf-8", "surrogatepass")
        if len(data) > self.max_bytes:
            # Never hash an unbounded input: argon2's cost grows with it.
            raise ValidationError(
                f"password: must be at most {self.max_bytes} bytes",
                details={"fields": [{"field": "password", "reason": "too long"}]},
            )
        return data

    async def hash(self, password: str) -> str:
        """The argon2id hash of ``password`` (encoded with its salt and costs)."""
        data = self._bounded(password)
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, data)

    async def verify(self, hashed: str, password: str) -> bool:
        """True when ``password`` matches ``hashed``; never raises on a mismatch."""
        try:
            data = self._bounded(password)
        except ValidationError:
            return False
        async with self._slots:
            try:
                return await asyncio.to_thread(self._hasher.verify, hashed, data)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False

    async def waste(self, password: str) -> None:
        """Spend the time of one verification, so an unknown login answers as slowly."""
        if self._decoy is None:
            self._decoy = await self.hash("decoy password, never matched")
        await self.verify(self._decoy, password)
