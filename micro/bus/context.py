"""Moved to ``micro.context`` (a foundation module: logging needs it, not the bus)."""

from __future__ import annotations

from micro.context import Context, current_context, new_id

__all__ = ["Context", "current_context", "new_id"]
