"""The event store contract every backend implements.

A store keeps named streams of events. Each event has a version inside its stream (0-based)
and a position in the store's global order (strictly increasing, starting above 0). Appends
are optimistic: the caller says which version it expects the stream to be at.
"""

from __future__ import annotations

import enum
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from micro._ids import random_uuid
from micro.errors import ConflictError, ValidationError

__all__ = [
    "ANY",
    "EXISTS",
    "NO_STREAM",
    "AppendResult",
    "EventStore",
    "ExpectedVersion",
    "NewEvent",
    "RecordedEvent",
    "StreamState",
    "reused_ids_error",
    "validate_append",
    "validate_stream_name",
    "version_matches",
]

MAX_STREAM_NAME = 200
_STREAM_NAME = re.compile(r"^[A-Za-z0-9_:@=+-]+$")


class StreamState(enum.Enum):
    """Expected versions that are not a number."""

    ANY = "any"
    """Append whatever the stream's version."""
    NO_STREAM = "no_stream"
    """Append only if the stream has no events yet."""
    EXISTS = "exists"
    """Append only if the stream has at least one event."""

    def __str__(self) -> str:
        return self.value


ANY = StreamState.ANY
NO_STREAM = StreamState.NO_STREAM
EXISTS = StreamState.EXISTS

ExpectedVersion = int | StreamState


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event about to be appended. ``id`` makes retried appends idempotent."""

    type: str
    data: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    id: uuid.UUID = field(default_factory=random_uuid)


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as stored. ``metadata["recorded_at"]`` is an ISO-8601 UTC timestamp."""

    id: uuid.UUID
    type: str
    stream: str
    version: int
    position: int
    data: dict[str, Any]
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Version of the stream's last event after the append, and that event's position."""

    version: int
    position: int
    events: tuple[RecordedEvent, ...] = field(default=(), compare=False, repr=False)
    """The appended events exactly as a read returns them, when the store knows them without
    a read; empty otherwise (an append answered as a duplicate of an earlier one). A service
    applies its own events from here instead of waiting for them to come back."""


def validate_stream_name(stream: object) -> str:
    """Return the name, or raise ``ValidationError`` saying what is wrong with it."""
    if not isinstance(stream, str):
        raise ValidationError(
            f"stream name must be a string, not {type(stream).__name__}",
            details={"fields": [{"field": "stream", "reason": "not a string"}]},
        )
    reason = None
    if not stream:
        reason = "is empty"
    elif len(stream) > MAX_STREAM_NAME:
        reason = f"is longer than {MAX_STREAM_NAME} characters"
    elif not _STREAM_NAME.match(stream):
        reason = "may use only letters, digits and _ : @ = + - (no spaces, dots or wildcards)"
    if reason:
        raise ValidationError(
            f"stream name {stream[:50]!r} {reason}",
            details={"fields": [{"field": "stream", "reason": reason}]},
        )
    return stream


def validate_append(stream: object, events: object, expected_version: object) -> None:
    """Check an append's arguments before any backend touches them."""
    validate_stream_name(stream)
    if isinstance(expected_version, bool) or not isinstance(expected_version, int | StreamState):
        raise ValidationError(
            "expected_version must be an int, NO_STREAM, EXISTS or ANY, "
            f"not {type(expected_version).__name__}",
            details={"fields": [{"field": "expected_version", "reason": "wrong type"}]},
        )
    if isinstance(expected_version, int) and expected_version < 0:
        raise ValidationError(
            "expected_version must not be negative (use NO_STREAM for a new stream)",
            details={"fields": [{"field": "expected_version", "reason": "negative"}]},
        )
    if not isinstance(events, Sequence) or not events:
        raise ValidationError(
            "events must be a non-empty sequence of NewEvent",
            details={"fields": [{"field": "events", "reason": "empty or not a sequence"}]},
        )
    for index, event in enumerate(events):
        if not isinstance(event, NewEvent):
            raise ValidationError(
                f"events[{index}] is a {type(event).__name__}, not a NewEvent",
                details={"fields": [{"field": f"events[{index}]", "reason": "not a NewEvent"}]},
            )
        if not isinstance(event.data, dict):
            raise ValidationError(
                f"events[{index}].data must be a JSON object, not {type(event.data).__name__}",
                details={"fields": [{"field": f"events[{index}].data", "reason": "not an object"}]},
            )
        if not isinstance(event.metadata, dict):
            raise ValidationError(
                f"events[{index}].metadata must be a JSON object",
                details={
                    "fields": [{"field": f"events[{index}].metadata", "reason": "not an object"}]
                },
            )
        if not event.type or not isinstance(event.type, str):
            raise ValidationError(
                f"events[{index}].type must be a non-empty string",
                details={"fields": [{"field": f"events[{index}].type", "reason": "empty"}]},
            )


def version_matches(expected: ExpectedVersion, actual: int | None) -> bool:
    """Whether a stream at version ``actual`` (``None``: no events) meets ``expected``."""
    if expected is ANY:
        return True
    if expected is NO_STREAM:
        return actual is None
    if expected is EXISTS:
        return actual is not None
    return actual == expected


def reused_ids_error(stream: str) -> ConflictError:
    """The refusal of an append whose event ids are stored, but not as this same append."""
    return ConflictError(
        f"stream {stream!r}: some of these event ids are already stored, but not as this "
        "same append (an event id must be unique across the store)",
        details={"stream": stream},
    )


class EventStore(ABC):
    """Streams of events with optimistic concurrency and one global order.

    Usage::

        async with MemoryEventStore() as store:
            result = await store.append("account-1", [NewEvent("AccountOpened", {"owner": "ada"})],
                                        expected_version=NO_STREAM)
            events = await store.read("account-1")
    """

    async def start(self) -> None:  # noqa: B027 - optional hook, most stores need it
        """Connect and create what the store needs. Idempotent."""

    async def close(self) -> None:  # noqa: B027 - optional hook, most stores need it
        """Release connections. Idempotent."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    @abstractmethod
    async def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: ExpectedVersion = ANY,
    ) -> AppendResult:
        """Append events to one stream atomically (all or none).

        Raises ``ConcurrencyError`` when the stream is not at ``expected_version``. Appending
        events whose ids are already stored appends nothing and returns the original result.

        Usage::

            result = await store.append("account-1", [NewEvent("Deposited", {"amount": 5})],
                                        expected_version=0)
        """

    @abstractmethod
    async def read(
        self,
        stream: str,
        from_version: int = 0,
        limit: int | None = None,
        *,
        backwards: bool = False,
    ) -> list[RecordedEvent]:
        """Events of one stream in version order (newest first when ``backwards``).

        ``backwards`` starts at ``from_version`` when given a positive one, else at the end.
        A stream with no events reads as an empty list.
        """

    @abstractmethod
    async def stream_version(self, stream: str) -> int | None:
        """Version of the stream's last event, or ``None`` if it has none."""

    @abstractmethod
    def read_all(
        self, from_position: int = 0, limit: int | None = None
    ) -> AsyncGenerator[RecordedEvent, None]:
        """Every event with ``position >= from_position`` in global order, up to now."""

    @abstractmethod
    def subscribe(self, from_position: int = 0) -> AsyncGenerator[RecordedEvent, None]:
        """Every event with ``position >= from_position``: history, then live, forever.

        No gap and no duplicate at the switch from history to live. Closing the iterator
        (``aclose``) ends the subscription.
        """

    @abstractmethod
    async def last_position(self) -> int:
        """Position of the newest event in the store, 0 when empty."""
