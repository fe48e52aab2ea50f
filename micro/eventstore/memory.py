"""An event store in process memory, for unit tests and throwaway runs.

It keeps each event as JSON bytes, so what a reader gets back is always a fresh copy and
data that JSON cannot hold is refused exactly as the persistent backends refuse it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass

from micro.errors import ConcurrencyError
from micro.eventstore._encoding import check_unique_ids, dumps, loads, recorded_at
from micro.eventstore.base import (
    ANY,
    AppendResult,
    EventStore,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
    reused_ids_error,
    validate_append,
    validate_stream_name,
    version_matches,
)

__all__ = ["MemoryEventStore"]


@dataclass(frozen=True, slots=True)
class _Stored:
    id: uuid.UUID
    type: str
    stream: str
    version: int
    position: int
    data: bytes
    metadata: bytes

    def recorded(self) -> RecordedEvent:
        return RecordedEvent(
            id=self.id,
            type=self.type,
            stream=self.stream,
            version=self.version,
            position=self.position,
            data=loads(self.data),
            metadata=loads(self.metadata),
        )


class MemoryEventStore(EventStore):
    """Every event in a list; the position of an event is its index plus one."""

    def __init__(self) -> None:
        self._events: list[_Stored] = []
        self._streams: dict[str, list[int]] = {}
        self._by_id: dict[uuid.UUID, int] = {}
        # Replaced after every append: subscribers wait on the one current when they ran dry.
        self._appended = asyncio.Event()

    async def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: ExpectedVersion = ANY,
    ) -> AppendResult:
        validate_append(stream, events, expected_version)
        check_unique_ids(events)
        if (original := self._original(stream, events)) is not None:
            return original
        indexes = self._streams.get(stream, [])
        actual = len(indexes) - 1 if indexes else None
        if not version_matches(expected_version, actual):
            raise ConcurrencyError.for_stream(stream, expected_version, actual)

        # Encode everything before storing anything: one bad event must store none.
        at = recorded_at()
        encoded = [
            (
                dumps(event.data, field=f"events[{index}].data"),
                dumps({**event.metadata, "recorded_at": at}, field=f"events[{index}].metadata"),
            )
            for index, event in enumerate(events)
        ]
        version = -1 if actual is None else actual
        for event, (data, metadata) in zip(events, encoded, strict=True):
            version += 1
            position = len(self._events) + 1
            self._events.append(
                _Stored(event.id, event.type, stream, version, position, data, metadata)
            )
            self._streams.setdefault(stream, []).append(position - 1)
            self._by_id[event.id] = position - 1
        self._appended.set()
        self._appended = asyncio.Event()
        recorded = tuple(
            stored.recorded() for stored in self._events[len(self._events) - len(events) :]
        )
        return AppendResult(version=version, position=len(self._events), events=recorded)

    def _original(self, stream: str, events: Sequence[NewEvent]) -> AppendResult | None:
        """The result of the earlier append that stored these very events, if there was one."""
        stored = [self._by_id.get(event.id) for event in events]
        if all(index is None for index in stored):
            return None
        first = stored[0]
        same_append = first is not None and all(
            index == first + offset for offset, index in enumerate(stored)
        )
        if not same_append or self._events[first].stream != stream:  # type: ignore[index]
            raise reused_ids_error(stream)
        last = self._events[stored[-1]]  # type: ignore[index]
        return AppendResult(version=last.version, position=last.position)

    async def read(
        self,
        stream: str,
        from_version: int = 0,
        limit: int | None = None,
        *,
        backwards: bool = False,
    ) -> list[RecordedEvent]:
        validate_stream_name(stream)
        indexes = self._streams.get(stream, [])
        if backwards:
            end = from_version + 1 if from_version > 0 else len(indexes)
            chosen = indexes[:end][::-1]
        else:
            chosen = indexes[from_version:]
        if limit is not None:
            chosen = chosen[: max(limit, 0)]
        return [self._events[index].recorded() for index in chosen]

    async def stream_version(self, stream: str) -> int | None:
        validate_stream_name(stream)
        indexes = self._streams.get(stream)
        return len(indexes) - 1 if indexes else None

    async def read_all(
        self, from_position: int = 0, limit: int | None = None
    ) -> AsyncGenerator[RecordedEvent, None]:
        start = max(from_position, 1) - 1
        end = len(self._events) if limit is None else min(len(self._events), start + limit)
        for index in range(start, end):
            yield self._events[index].recorded()

    async def subscribe(self, from_position: int = 0) -> AsyncGenerator[RecordedEvent, None]:
        index = max(from_position, 1) - 1
        while True:
            if index < len(self._events):
                yield self._events[index].recorded()
                index += 1
            else:
                await self._appended.wait()

    async def last_position(self) -> int:
        return len(self._events)
