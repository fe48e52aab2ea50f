"""The live feed of events the gateway streams to browsers over Server-Sent Events.

One subscription to the event store feeds every connected client through a bounded queue
each (a thousand browsers cost one consumer, not a thousand). A client that asks to start
from a position first gets the history from the store, then the live events, with no gap
and no duplicate: its queue is registered before the history is read, and live events at
or below the last position sent are skipped. A client too slow to keep up is cut off; its
browser reconnects with ``Last-Event-ID`` and resumes where it was.

What a caller may see: the feed is for authenticated callers only (the gateway checks the
bearer token), and it never shows events of streams whose name starts with one of the
hidden prefixes (users and sessions: credentials live there). Event metadata is cut down
to the command, the correlation id and the time it was recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import structlog

from micro._tasks import stop_task
from micro.eventstore.base import EventStore, RecordedEvent

__all__ = ["EventFeed", "FeedOverflow", "public_event"]

_log = structlog.get_logger("micro.gateway")

_SHOWN_METADATA = ("command", "correlation_id", "recorded_at")


class FeedOverflow(Exception):
    """A client's queue filled up: it is cut off and resumes from its last event id."""


def public_event(event: RecordedEvent) -> dict[str, Any]:
    """What a caller of the feed sees of one event."""
    return {
        "id": str(event.id),
        "type": event.type,
        "stream": event.stream,
        "version": event.version,
        "position": event.position,
        "data": event.data,
        "metadata": {k: event.metadata[k] for k in _SHOWN_METADATA if k in event.metadata},
    }


class EventFeed:
    """Fans one event store subscription out to many clients."""

    def __init__(
        self, store: EventStore, *, hidden_prefixes: Sequence[str] = (), queue_size: int = 1000
    ) -> None:
        self.store = store
        self.hidden_prefixes = tuple(hidden_prefixes)
        self.queue_size = queue_size
        self.position = 0
        """Position of the newest event the feed has seen."""
        self.failure: str | None = None
        self._clients: set[asyncio.Queue[RecordedEvent | None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._advanced = asyncio.Condition()

    def visible(self, event: RecordedEvent) -> bool:
        return not event.stream.startswith(self.hidden_prefixes)

    async def start(self) -> None:
        self.position = await self.store.last_position()
        self._task = asyncio.create_task(self._follow(), name="gateway-feed")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)
        for queue in list(self._clients):
            self._offer(queue, None)

    async def _follow(self) -> None:
        subscription = self.store.subscribe(self.position + 1)
        try:
            async for event in subscription:
                self.position = max(self.position, event.position)
                for queue in list(self._clients):
                    self._offer(queue, event)
                async with self._advanced:
                    self._advanced.notify_all()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self.failure = f"event subscription failed: {error}"
            _log.exception("event feed stopped")
            for queue in list(self._clients):
                self._offer(queue, None)
        finally:
            with contextlib.suppress(Exception):
                await subscription.aclose()

    def _offer(
        self, queue: asyncio.Queue[RecordedEvent | None], event: RecordedEvent | None
    ) -> None:
        try:
            queue.put_nowait(event)
        except asyncio.QueueFull:
            # Cut the slow client off: the None we force in ends its stream.
            with contextlib.suppress(asyncio.QueueEmpty):
                while True:
                    queue.get_nowait()
            queue.put_nowait(None)
            self._clients.discard(queue)

    async def wait_for(self, position: int, timeout: float) -> bool:
        """True once the feed has seen ``position`` (False after ``timeout`` seconds)."""
        async with self._advanced:
            try:
                await asyncio.wait_for(
                    self._advanced.wait_for(lambda: self.position >= position), timeout
                )
            except TimeoutError:
                return False
        return True

    async def events(self, from_position: int | None = None) -> AsyncGenerator[RecordedEvent, None]:
        """Visible events from ``from_position`` (history first), else from now on, live."""
        queue: asyncio.Queue[RecordedEvent | None] = asyncio.Queue(self.queue_size)
        self._clients.add(queue)
        last = self.position
        try:
            if from_position is not None and from_position <= self.position:
                last = from_position - 1
                async for event in self.store.read_all(from_position):
                    last = event.position
                    if self.visible(event):
                        yield event
            while True:
                live = await queue.get()
                if live is None:
                    if self.failure is not None or queue not in self._clients:
                        raise FeedOverflow(self.failure or "the client fell behind")
                    return
                if live.position <= last:
                    continue
                last = live.position
                if self.visible(live):
                    yield live
        finally:
            self._clients.discard(queue)
