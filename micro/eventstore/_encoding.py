"""JSON encoding shared by the backends: one place decides what an event body looks like."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from micro.errors import ValidationError
from micro.eventstore.base import NewEvent

__all__ = ["check_unique_ids", "dumps", "loads", "recorded_at"]

loads = orjson.loads


def dumps(value: Any, *, field: str) -> bytes:
    """``value`` as JSON bytes, or ``ValidationError`` naming ``field`` when it is not JSON."""
    try:
        return orjson.dumps(value)
    except TypeError as error:
        raise ValidationError(
            f"{field} is not JSON: {error}",
            details={"fields": [{"field": field, "reason": "not JSON"}]},
        ) from error


def recorded_at() -> str:
    """Now, as the ISO-8601 UTC timestamp stored in ``metadata["recorded_at"]``."""
    return datetime.now(UTC).isoformat()


def check_unique_ids(events: Sequence[NewEvent]) -> None:
    """Two events of one append sharing an id could never both be stored: refuse them."""
    seen: set[uuid.UUID] = set()
    for index, event in enumerate(events):
        if event.id in seen:
            raise ValidationError(
                f"events[{index}] repeats the id {event.id} of an earlier event of this append",
                details={"fields": [{"field": f"events[{index}].id", "reason": "duplicate"}]},
            )
        seen.add(event.id)
