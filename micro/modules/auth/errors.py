"""The errors the auth module adds to the tree (imported with micro, so callers rebuild them)."""

from __future__ import annotations

from micro.errors import UnauthorizedError

__all__ = ["LockedOutError"]


class LockedOutError(UnauthorizedError):
    """Too many failed logins: this login is refused until ``details["retry_after"]`` passes.

    It is an ``UnauthorizedError`` so ``except UnauthorizedError`` still catches it.
    """

    code = "locked_out"
    status = 429
