"""The auth module's error, defined with the others in ``micro.errors``."""

from __future__ import annotations

from micro.errors import LockedOutError

__all__ = ["LockedOutError"]
