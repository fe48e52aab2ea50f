"""Event handlers (the ``app_stream`` module): side effects and process managers.

    @micro.on_event("TransferRequested")
    async def carry_out(event):
        await micro.act("withdraw", {...}, idempotency_key=f"{event.data.id}-debit")

Handlers of one group share a durable checkpoint in a JetStream key-value bucket, so after
a restart a group resumes after the last event it handled. Delivery is at least once: an
instance that crashes between handling an event and storing the checkpoint handles that
event again, and two instances of a group may race on one event. Handlers therefore make
their effects idempotent; commands sent with an idempotency key derived from the event
(as above) make a repeat a no-op that gets the first answer again, a refusal included (a
handler that compensated for a refusal never sees the command succeed on a repeat). The
checkpoint is advanced by compare-and-set, so instances of a group never move it backwards
and skip events another instance finished.

A handler that keeps failing (``attempts`` tries with backoff) stops its group loudly:
``health()`` reports it and nothing is silently skipped. Losing NATS or JetStream for a while
(a restart, a node lost, a leader election) is not a failure of the handlers: the group
logs it, waits with backoff and resumes after the last event it handled; a handler whose
calls fail with retryable errors (timeouts, services or the store unavailable) is retried
for up to ``outage`` seconds before that counts as failing. The checkpoint
bucket is replicated like the event stream (``event_store_replicas``), so losing one node of
a cluster loses no checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from nats.errors import Error as NatsError
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from opentelemetry.trace import Span, StatusCode

from micro._tasks import stop_task
from micro.context import current_context, new_id
from micro.errors import ConfigError, MicroError
from micro.readmodel.event import AppliedEvent, Event
from micro.telemetry import tracing

if TYPE_CHECKING:
    from micro.command.commander import Commander
    from micro.host import Host

__all__ = ["EventHandlers"]

_log = structlog.get_logger("micro.app_stream")

Handler = Callable[[AppliedEvent], Any]

_MAX_RESUME_DELAY = 5.0  # seconds between attempts to resume after losing the store


def _transient(error: BaseException) -> bool:
    """True for an outage of NATS or the store (worth waiting out), not a bug."""
    if isinstance(error, MicroError):
        return error.retryable
    return isinstance(error, NatsError | OSError | TimeoutError)


@dataclass
class _Group:
    name: str
    handlers: dict[str, list[Handler]] = field(default_factory=dict)
    position: int = 0
    handled: int = 0
    failure: str | None = None
    task: asyncio.Task[None] | None = None
    caught_up: asyncio.Event = field(default_factory=asyncio.Event)


class EventHandlers:
    """Runs ``on_event`` handlers with a durable checkpoint per group."""

    def __init__(
        self, micro: Host, commander: Commander, *, attempts: int = 5, outage: float = 120.0
    ) -> None:
        self.micro = micro
        self.commander = commander
        self.attempts = attempts
        self.outage = outage
        """Seconds a handler failing with retryable errors is retried before it fails."""
        self.groups: dict[str, _Group] = {}
        self._kv: KeyValue | None = None
        self._stopping = False

    def on(
        self, event_type: type[Event] | str, handler: Handler, *, group: str | None = None
    ) -> None:
        if isinstance(event_type, type) and issubclass(event_type, Event):
            name = event_type.type_name()
            self.commander.types.add(event_type)
        elif isinstance(event_type, str) and event_type:
            name = event_type
        else:
            raise ConfigError(f"on_event takes an Event class or a type name, not {event_type!r}")
        if not callable(handler):
            raise ConfigError(f"the handler for {name} is not callable")
        try:
            inspect.signature(handler).bind(None)
        except TypeError:
            raise ConfigError(
                f"the handler for {name} must take one argument (the event)"
            ) from None
        group_name = group or self.micro.settings.service
        if not group_name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"handler group {group_name!r}: letters, digits, '-' and '_' only")
        self.groups.setdefault(group_name, _Group(group_name)).handlers.setdefault(name, []).append(
            handler
        )

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            client = self.micro.client
            if client is None:
                raise RuntimeError("not connected")
            jetstream = client.jetstream()
            bucket = f"{self.micro.settings.namespace}_checkpoints"
            try:
                self._kv = await jetstream.key_value(bucket)
            except BucketNotFoundError:
                self._kv = await jetstream.create_key_value(
                    bucket=bucket,
                    history=1,
                    replicas=self.micro.settings.event_store_replicas,
                )
        return self._kv

    async def _checkpoint(self, group: _Group) -> tuple[int, int]:
        """(position, revision) of the group's checkpoint; (0, 0) if none yet."""
        kv = await self._bucket()
        try:
            entry = await kv.get(f"group.{group.name}")
        except KeyNotFoundError:
            return 0, 0
        return int(orjson.loads(entry.value or b"0")), int(entry.revision or 0)

    async def _advance(self, group: _Group, position: int, revision: int) -> int:
        kv = await self._bucket()
        key = f"group.{group.name}"
        value = orjson.dumps(position)
        try:
            if revision == 0:
                return int(await kv.create(key, value))
            return int(await kv.update(key, value, last=revision))
        except KeyWrongLastSequenceError:
            # Another instance moved it: keep the furthest point, never go back.
            current, current_revision = await self._checkpoint(group)
            if current < position:
                return await self._advance(group, position, current_revision)
            return current_revision
        except Exception as error:
            if revision == 0:
                current, current_revision = await self._checkpoint(group)
                if current < position:
                    return await self._advance(group, position, current_revision)
                return current_revision
            raise error

    async def start(self) -> None:
        # Each group reads its checkpoint in its own task: a store still electing a leader
        # delays the handlers, not the start of the service.
        self._stopping = False
        for group in self.groups.values():
            group.task = asyncio.create_task(self._run(group), name=f"on_event:{group.name}")

    async def stop(self) -> None:
        self._stopping = True
        for group in self.groups.values():
            task, group.task = group.task, None
            await stop_task(task)

    async def _run(self, group: _Group) -> None:
        """Follow the store; ride out outages, stop only when a handler keeps failing."""
        delay = 0.1
        resumed = False
        while True:
            position = group.position
            try:
                if not resumed:
                    group.position, _ = await self._checkpoint(group)
                    resumed = True
                await self._follow(group)
                return  # a handler failed for good: the group is stopped
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if self._stopping:
                    return
                if not _transient(error):
                    group.failure = f"event handler group stopped: {error}"
                    _log.exception("event handler group stopped", group=group.name)
                    return
                if group.position > position:
                    delay = 0.1  # it got somewhere since the last outage: start over
                _log.warning(
                    "event handler group lost NATS or the event store; resuming",
                    group=group.name,
                    position=group.position,
                    retry_in=delay,
                    error=str(error) or type(error).__name__,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_RESUME_DELAY)

    async def _follow(self, group: _Group) -> None:
        """Handle events after ``group.position``; returns when a handler failed for good."""
        store = self.commander.store
        if store is None:
            raise RuntimeError("the commander has no event store")
        subscription = store.subscribe(group.position + 1)
        try:
            async for event in subscription:
                handlers = group.handlers.get(event.type)
                if handlers:
                    position, revision = await self._checkpoint(group)
                    if position < event.position:
                        applied = AppliedEvent(
                            event.type,
                            self.commander.types.decode(event.type, event.data, event.metadata),
                            event.stream,
                            event.version,
                            event.position,
                            event.metadata,
                        )
                        if not await self._handle(group, handlers, applied):
                            return
                        await self._advance(group, event.position, revision)
                        group.handled += 1
                group.position = event.position
        finally:
            with contextlib.suppress(Exception):
                await subscription.aclose()

    async def _handle(self, group: _Group, handlers: list[Handler], event: AppliedEvent) -> bool:
        with tracing.linked_span(
            f"on_event {event.type}",
            event.metadata,
            **{
                "messaging.system": "nats",
                "messaging.operation.type": "process",
                "micro.event.type": event.type,
                "micro.position": event.position,
                "micro.group": group.name,
            },
        ) as span:
            handled = await self._handle_traced(group, handlers, event, span)
            if span is not None and not handled:
                span.set_status(StatusCode.ERROR, group.failure or "handler failed")
            return handled

    async def _handle_traced(
        self, group: _Group, handlers: list[Handler], event: AppliedEvent, span: Span | None
    ) -> bool:
        trace = str(event.metadata.get("correlation_id") or new_id())
        ctx = self.micro.new_context(
            f"on {event.type}", trace_id=trace, meta=event.metadata.get("meta") or {}
        )
        if span is not None:
            ctx.trace_id, ctx.span_id = tracing.trace_ids(span)
        loop = asyncio.get_running_loop()
        for handler in handlers:
            failures = tries = 0
            first_failure: float | None = None
            while True:
                token = current_context.set(ctx)
                try:
                    result = handler(event)
                    if inspect.isawaitable(result):
                        await result
                    break
                except Exception as error:
                    tries += 1
                    now = loop.time()
                    first_failure = now if first_failure is None else first_failure
                    # An outage (a timeout, a service or the store away) is waited out for
                    # a while; anything else counts towards the attempts.
                    if not (_transient(error) and now - first_failure < self.outage):
                        failures += 1
                    if failures >= self.attempts:
                        group.failure = (
                            f"handler {getattr(handler, '__name__', handler)!r} failed on "
                            f"{event.type} at position {event.position}: {error}"
                        )
                        _log.exception("event handler failed: group stopped", group=group.name)
                        return False
                    _log.warning(
                        "event handler failed, retrying",
                        group=group.name,
                        event_type=event.type,
                        attempt=tries,
                        error=str(error),
                    )
                    await asyncio.sleep(min(2.0, 0.05 * 2 ** min(tries - 1, 6)))
                finally:
                    current_context.reset(token)
        return True

    def health(self) -> dict[str, Any]:
        return {
            name: {
                "status": "failed" if g.failure else "ok",
                "position": g.position,
                "handled": g.handled,
                "reason": g.failure,
            }
            for name, g in self.groups.items()
        }
