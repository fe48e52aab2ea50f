"""The projector: applies every stored event, in order, to a service's models.

It subscribes from its checkpoint (the position of the last event applied), catches up,
then follows live. Commands and views wait on it: a command's reply goes out only once the
events it appended are applied here, and a view asked for ``min_position`` waits for it.

A reducer that raises stops the projector (fail-stop): the models are left exactly as they
were before the failing event, the failure is logged loudly, reported by ``health()``, and
every command or view waiting on the models gets an ``UnavailableError`` saying why. A
silent skip would leave models quietly wrong forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from micro._tasks import stop_task
from micro.errors import TimeoutError, UnavailableError
from micro.eventstore.base import EventStore, RecordedEvent
from micro.readmodel.event import AppliedEvent, EventTypes
from micro.readmodel.model import Models
from micro.telemetry import metrics, tracing

__all__ = ["Ledger", "Projector", "Reducer"]

_log = structlog.get_logger("micro.projector")

Reducer = Callable[[AppliedEvent, Models], None]


class _Expired(Exception):
    """A wait for a position ran out of time."""


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(_Expired())


class Ledger(Protocol):
    """What a projector keeps beside its models, fed every event it applies.

    The command layer keeps its idempotency keys this way (``micro.command.idempotency``);
    a snapshot stores the ledger's rows with the models, so both restore to one position.
    """

    def see(self, event: RecordedEvent) -> None:
        """Note one applied event."""
        ...

    def clear(self) -> None:
        """Forget everything (before a snapshot is loaded)."""
        ...

    def dump(self) -> list[Any]:
        """Rows of plain JSON values, for a snapshot."""
        ...

    def load(self, rows: list[Any], *, snapshot_format: int) -> None:
        """Rows a snapshot stored; ``ValueError`` when they are malformed."""
        ...


class Projector:
    """Keeps a set of models up to date with the event store."""

    def __init__(
        self,
        store: EventStore,
        models: Models,
        reducers: dict[str, list[Reducer]],
        types: EventTypes,
        *,
        name: str = "models",
        ledger: Ledger | None = None,
    ) -> None:
        self.store = store
        self.models = models
        self.reducers = reducers
        self.types = types
        self.name = name
        self.position = 0
        """Position of the last event applied (0: none)."""
        self.versions: dict[str, int] = {}
        """Version of each stream as the models know it."""
        self.ledger = ledger
        """Fed every applied event (the command layer's idempotency keys), if given."""
        self.failure: str | None = None
        self.applied = 0
        self.head = 0
        """The newest stream position known to exist (for the lag the metrics report)."""
        self.caught_up_at: float | None = None
        """When the models last reached ``head`` (epoch seconds)."""
        self.snapshot_at: float | None = None
        """When a snapshot of these models was last saved or restored (epoch seconds)."""
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._counter = itertools.count()
        self._journal = models.record_changes()
        self._task: asyncio.Task[None] | None = None
        self._head_task: asyncio.Task[None] | None = None
        self._gate = asyncio.Lock()

    # -- running ------------------------------------------------------------------------

    async def start(self, timeout: float | None = None) -> None:
        """Subscribe from the checkpoint and return once caught up with the store."""
        target = await self.store.last_position()
        self.head = max(self.head, target)
        metrics.watch_projector(self)
        self._head_task = metrics.follow_head(self)
        self._task = asyncio.create_task(self._follow(), name=f"projector:{self.name}")
        started = time.monotonic()
        await self.wait_for(target, timeout)
        _log.info(
            "models caught up",
            models=self.models.names(),
            position=self.position,
            seconds=round(time.monotonic() - started, 3),
        )

    async def stop(self) -> None:
        metrics.forget_projector(self)
        head_task, self._head_task = self._head_task, None
        await stop_task(head_task)
        task, self._task = self._task, None
        await stop_task(task)

    async def _follow(self) -> None:
        subscription = self.store.subscribe(self.position + 1)
        try:
            async for event in subscription:
                if self._gate.locked():
                    async with self._gate:  # a rebuild swaps models: wait for it
                        pass
                if not self.apply(event):
                    return
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self._fail(f"event subscription failed: {error}")
        finally:
            with contextlib.suppress(Exception):
                await subscription.aclose()

    def apply_appended(self, events: tuple[RecordedEvent, ...]) -> None:
        """Apply events this service just appended, when they are exactly the next ones.

        The subscription would bring them back a moment later; nothing can come between
        them and the models' position, so applying them now gives the same models sooner
        (the copy the subscription delivers is then skipped). Anything else (a gap: other
        writers' events still on their way; a rebuild swapping the models) is left to the
        subscription.
        """
        if (
            not events
            or events[0].position != self.position + 1
            or self.failure is not None
            or self._gate.locked()
        ):
            return
        for event in events:
            if not self.apply(event):
                return

    def apply(self, event: RecordedEvent) -> bool:
        """Apply one event; False when a reducer failed (the projector stops)."""
        if self.failure is not None:
            return False  # stopped: nothing more is applied, whoever hands the event in
        if event.position <= self.position:
            return True  # already applied (a resumed subscription may repeat one)
        reducers = self.reducers.get(event.type)
        if reducers:
            self._journal.clear()
            try:
                applied = AppliedEvent(
                    event.type,
                    self.types.decode(event.type, event.data, event.metadata),
                    event.stream,
                    event.version,
                    event.position,
                    event.metadata,
                )
                for reducer in reducers:
                    reducer(applied, self.models)
            except Exception as error:
                self.models.undo()  # what the failed event half did must not stay
                _log.exception(
                    "reducer failed: models stopped",
                    event_type=event.type,
                    stream=event.stream,
                    position=event.position,
                )
                self._fail(
                    f"reducer for {event.type} failed at position {event.position} "
                    f"(stream {event.stream!r}): {type(error).__name__}: {error}"
                )
                return False
        self.versions[event.stream] = event.version
        if self.ledger is not None:
            self.ledger.see(event)
        self.position = event.position
        self.applied += 1
        if self.position >= self.head:
            self.head = self.position
            self.caught_up_at = time.time()
        waiters = self._waiters
        while waiters and waiters[0][0] <= self.position:
            _, _, future = heapq.heappop(waiters)
            if not future.done():
                future.set_result(None)
        return True

    def _fail(self, reason: str) -> None:
        self.failure = reason
        error = self._failure_error()
        for _, _, future in self._waiters:
            if not future.done():
                future.set_exception(error)
        self._waiters.clear()

    def _failure_error(self) -> UnavailableError:
        return UnavailableError(
            f"models {', '.join(self.models.names())} are stopped: {self.failure}",
            retryable=False,
        )

    # -- waiting ------------------------------------------------------------------------

    async def wait_for(self, position: int, timeout: float | None) -> None:
        """Return once ``position`` is applied; ``TimeoutError`` after ``timeout`` seconds."""
        if self.failure is not None:
            raise self._failure_error()
        if position <= self.position:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._waiters, (position, next(self._counter), future))
        # A plain timer rather than asyncio.wait_for: every command waits here, and a timer
        # handle is much cheaper than wait_for's extra task and future.
        timer = loop.call_later(timeout, _expire, future) if timeout is not None else None
        try:
            await future
        except _Expired:
            raise TimeoutError(
                f"models did not reach position {position} within {timeout}s "
                f"(they are at {self.position})",
                details={"position": position, "applied": self.position},
            ) from None
        finally:
            if timer is not None:
                timer.cancel()

    async def catch_up(self, timeout: float | None) -> None:
        """Wait until every event stored so far is applied."""
        head = await self.store.last_position()
        self.head = max(self.head, head)
        await self.wait_for(head, timeout)

    def health(self) -> dict[str, Any]:
        return {
            "status": "failed" if self.failure else "ok",
            "position": self.position,
            "applied": self.applied,
            "reason": self.failure,
        }

    # -- rebuilding ---------------------------------------------------------------------

    async def rebuild(self, names: list[str], fresh: Models) -> int:
        """Replay everything into ``fresh`` models, then swap the named ones in.

        The live models keep serving while the copy replays; only the final catch-up and
        the swap hold new events (and so the commands waiting on them) back briefly.
        """
        with tracing.span("rebuild", **{"micro.models": ",".join(names)}):
            return await self._rebuild(names, fresh)

    async def _rebuild(self, names: list[str], fresh: Models) -> int:
        shadow = Projector(self.store, fresh, self.reducers, self.types, name=f"{self.name}*")
        async for event in self.store.read_all(1):
            if event.position > self.position or not shadow.apply(event):
                break
        if shadow.failure:
            raise UnavailableError(f"rebuild failed: {shadow.failure}", retryable=False)
        async with self._gate:
            async for event in self.store.read_all(shadow.position + 1):
                if event.position > self.position:
                    break
                if not shadow.apply(event):
                    raise UnavailableError(f"rebuild failed: {shadow.failure}", retryable=False)
            for name in names:
                self.models.replace(fresh[name])
        return shadow.applied
