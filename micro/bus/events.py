"""Events without replies: ``emit`` publishes, ``on`` listens.

An event goes to ``<namespace>.emit.<token>``. Listeners subscribe in the queue group of their
service, so each subscribing service gets the event once, on one of its instances; a
broadcast listener subscribes without a queue group, so every instance gets it. Delivery is
core NATS: at most once, to the listeners subscribed when it is published (use the event
store for events that must not be lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from micro._numbers import parse_non_negative_int
from micro.bus import headers as h
from micro.bus.caller import Caller
from micro.bus.codec import decode, encode
from micro.bus.endpoint import Endpoint
from micro.bus.responder import call_handler
from micro.bus.subjects import check_name, event_subject
from micro.context import Context, current_context, new_id
from micro.errors import MicroError, ValidationError
from micro.settings import Settings

__all__ = ["Events", "Listener"]

_log = structlog.get_logger("micro.events")


@dataclass(slots=True)
class Listener:
    """One ``on(name, handler)`` registration."""

    endpoint: Endpoint
    broadcast: bool = False
    subscription: Subscription | None = None

    @classmethod
    def build(cls, name: str, handler: Callable[..., Any], *, broadcast: bool) -> Listener:
        if not isinstance(broadcast, bool):
            raise TypeError(f"broadcast must be True or False, not {broadcast!r}")
        return cls(Endpoint.build(name, handler, kind="event"), broadcast)


class Events:
    """Publishes events and runs the listeners of one Micro."""

    def __init__(self, client: Client, settings: Settings, caller: Caller) -> None:
        self.client = client
        self.settings = settings
        self.caller = caller
        self.listeners: list[Listener] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def emit(self, name: str, payload: Any = None) -> None:
        """Publish ``name`` with ``payload`` to every service listening for it."""
        try:
            check_name(name, "event name")
        except ValueError as error:
            raise ValidationError(str(error), details={"fields": [{"field": "name"}]}) from None
        data = encode(payload, what=f"payload of event {name!r}")
        parent = current_context.get()
        headers = {h.CALLER: self.settings.service}
        if parent is not None:
            # An event emitted while serving a request belongs to that request's trace.
            headers[h.TRACE_ID] = parent.trace_id
            headers[h.PARENT_SPAN] = parent.span_id
            headers[h.HOPS] = str(parent.hops + 1)
            if parent.meta:
                headers[h.META] = orjson.dumps(parent.meta).decode()
        else:
            headers[h.TRACE_ID] = new_id()
        await self.client.publish(
            event_subject(self.settings.namespace, name), data, headers=headers
        )

    async def listen(self, listener: Listener) -> None:
        """Subscribe one listener (no flush: the caller flushes once for all)."""
        subject = event_subject(self.settings.namespace, listener.endpoint.name)
        listener.subscription = await self.client.subscribe(
            subject,
            queue="" if listener.broadcast else self.settings.service,
            cb=functools.partial(self._received, listener),
        )
        self.listeners.append(listener)

    async def _received(self, listener: Listener, msg: Msg) -> None:
        # Each event runs in a task of its own: a slow listener must not hold up the next.
        task = asyncio.create_task(self._handle(listener, msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, listener: Listener, msg: Msg) -> None:
        endpoint = listener.endpoint
        headers = msg.headers or {}
        try:
            meta = orjson.loads(headers[h.META]) if headers.get(h.META) else {}
            hops = parse_non_negative_int(headers.get(h.HOPS)) or 0
        except (ValueError, TypeError):
            meta, hops = {}, 0
        ctx = Context(
            service=self.settings.service,
            command=endpoint.name,
            trace_id=headers.get(h.TRACE_ID) or new_id(),
            span_id=new_id(),
            parent_span=headers.get(h.PARENT_SPAN),
            meta=meta if isinstance(meta, dict) else {},
            caller=headers.get(h.CALLER),
            hops=hops,
            _caller=self.caller,
        )
        token = current_context.set(ctx)
        try:
            await call_handler(endpoint, decode(msg.data, what=f"event {endpoint.name!r}"), ctx)
        except MicroError as error:
            _log.warning(
                "event listener refused an event",
                event=endpoint.name,
                error=error.message,
                trace_id=ctx.trace_id,
            )
        except Exception:
            _log.exception("event listener failed", event=endpoint.name, trace_id=ctx.trace_id)
        finally:
            ctx.finished = True
            current_context.reset(token)

    async def drain(self, timeout: float) -> None:
        """Stop listening, then wait (up to ``timeout``) for listeners still running."""
        for listener in self.listeners:
            if listener.subscription is not None:
                with contextlib.suppress(Exception):
                    await listener.subscription.drain()  # type: ignore[no-untyped-call]
        deadline = time.monotonic() + timeout
        while self._tasks and (left := deadline - time.monotonic()) > 0:
            await asyncio.wait(set(self._tasks), timeout=left)
