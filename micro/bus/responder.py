"""The serving side of request/reply: subscriptions, dispatch, replies and error replies.

Each endpoint has its own subject and subscribes in the service's queue group, so instances
of one service share the load and other services never see its requests. A sync handler
with no hooks runs inline in the subscription's callback (no task per request: the fast
path); anything that may wait runs in a task of its own so requests proceed concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from nats.aio.client import Client
from nats.aio.subscription import Subscription

from micro._direct import Incoming, parse_headers, subscribe_direct
from micro._numbers import parse_non_negative_int
from micro.bus import headers as h
from micro.bus.codec import encode
from micro.bus.codecs import decode_body, encode_body
from micro.bus.connection import confirm
from micro.bus.endpoint import Endpoint
from micro.bus.load import LoadMonitor
from micro.bus.subjects import command_subject
from micro.context import Context, current_context, new_id
from micro.errors import (
    BadRequestError,
    InternalError,
    LoopDetectedError,
    MicroError,
    OverloadedError,
    TimeoutError,
    ValidationError,
)
from micro.settings import Settings
from micro.telemetry import LatencyHistogram, metrics, tracing

if TYPE_CHECKING:
    from micro.bus.caller import Caller
    from micro.bus.hooks import Hooks

__all__ = ["FALLBACK_KIND", "EndpointStats", "Responder", "call_handler"]


FALLBACK_KIND = "fallback"
"""The kind of the endpoint that answers commands no service serves (``Micro.fallback``)."""

_log = structlog.get_logger("micro.responder")


@dataclass(slots=True)
class EndpointStats:
    """What the NATS Services API reports in STATS for one endpoint."""

    requests: int = 0
    errors: int = 0
    processing_time_ns: int = 0
    last_error: str = ""
    errors_by_code: dict[str, int] = field(default_factory=dict)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    @property
    def average_ns(self) -> int:
        return self.processing_time_ns // self.requests if self.requests else 0


@dataclass(slots=True)
class _Served:
    endpoint: Endpoint
    subject: str
    stats: EndpointStats = field(default_factory=EndpointStats)
    subscription: Subscription | None = None


class Responder:
    """Serves a set of endpoints on one NATS connection."""

    def __init__(self, client: Client, settings: Settings, caller: Caller, hooks: Hooks) -> None:
        self.client = client
        self.settings = settings
        self.caller = caller
        self.hooks = hooks
        self.served: dict[str, _Served] = {}
        self.started_at = time.time()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._draining = False
        self._max_in_flight = settings.max_in_flight
        self._active = 0
        self.load: LoadMonitor | None = None
        if settings.shed_loop_lag or settings.shed_rss_mib:
            self.load = LoadMonitor(
                max_lag=settings.shed_loop_lag, max_rss=settings.shed_rss_mib * 2**20
            )

    @property
    def in_flight(self) -> int:
        return self._active

    async def serve(self, endpoints: list[Endpoint]) -> None:
        """Subscribe every endpoint; returns once the server confirmed the subscriptions."""
        if self.load is not None:
            self.load.start()
        for endpoint in endpoints:
            await self.add(endpoint, flush=False)
        await confirm(self.client, self.settings.connect_timeout)

    async def add(
        self, endpoint: Endpoint, *, flush: bool = True, subject: str | None = None
    ) -> None:
        """Serve ``endpoint`` on its command subject (or on ``subject``)."""
        if subject is None:
            subject = command_subject(self.settings.namespace, endpoint.name)
        served = _Served(endpoint, subject)
        dispatch = self._dispatcher(served)

        def on_message(
            _subject: bytes, reply: bytes, data: bytes, headers: bytes | None
        ) -> Awaitable[None] | None:
            return dispatch(Incoming(reply.decode(), data, parse_headers(headers)))

        served.subscription = await subscribe_direct(
            self.client, subject, on_message, queue=self.settings.service
        )
        self.served[endpoint.name] = served
        if flush:
            await confirm(self.client, self.settings.connect_timeout)

    def _dispatcher(self, served: _Served) -> Callable[[Incoming], Awaitable[None] | None]:
        """The function each request of ``served`` goes to.

        It returns what must finish before the next message is read (the inline fast path,
        and refusals), or ``None`` once the request runs in a task of its own.
        """
        endpoint = served.endpoint
        hooks = self.hooks

        def dispatch(msg: Incoming) -> Awaitable[None] | None:
            if self._draining:
                return None  # drained subscriptions may still hand over a last message
            if self._active >= self._max_in_flight or self.load is not None:
                why = self._overloaded()
                if why is not None:
                    served.stats.requests += 1
                    error = OverloadedError(
                        f"{self.settings.service!r} {why}; try again shortly",
                        service=self.settings.service,
                    )
                    return self._reply_error(msg, error, served, None)
            # Counted here, not when the task starts: messages arriving in one burst are
            # all dispatched before any task runs, and each must see the ones before it.
            self._active += 1
            # Decided per message: hooks and middleware may be added while serving. Inline
            # work runs on the connection's reader, so it must never wait for a reply: no
            # hook (an on_error hook may call out) and a handler that cannot await.
            if (
                not endpoint.is_async
                and not endpoint.middleware
                and not hooks.server_side
                and not hooks.on_error
            ):
                return self._handle(served, msg)
            task = asyncio.create_task(self._handle(served, msg))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
            return None

        return dispatch

    def _overloaded(self) -> str | None:
        """Why a new request is refused now (too many in flight, or shedding), if it is."""
        if self._active >= self._max_in_flight:
            return f"has {self._active} requests in flight (limit {self._max_in_flight})"
        reason = self.load.reason() if self.load is not None else None
        return None if reason is None else f"sheds load: {reason}"

    def _context(self, endpoint: Endpoint, msg: Incoming) -> Context:
        headers = msg.headers
        if not headers:
            return Context(
                service=self.settings.service,
                command=endpoint.name,
                trace_id=new_id(),
                span_id=new_id(),
                _caller=self.caller,
            )
        meta_raw = headers.get(h.META)
        deadline_raw = headers.get(h.DEADLINE)
        hops_raw = headers.get(h.HOPS)
        min_position = headers.get(h.MIN_POSITION)
        try:
            meta = orjson.loads(meta_raw) if meta_raw else {}
            if not isinstance(meta, dict):
                raise TypeError("not an object")
            deadline_ms = _header_number(h.DEADLINE, deadline_raw)
            deadline = deadline_ms / 1000 if deadline_ms is not None else None
            hops = _header_number(h.HOPS, hops_raw) or 0
            position = _header_number(h.MIN_POSITION, min_position)
        except (ValueError, TypeError) as error:
            raise BadRequestError(f"malformed micro headers: {error}") from error
        return Context(
            service=self.settings.service,
            command=endpoint.name,
            trace_id=headers.get(h.TRACE_ID) or new_id(),
            span_id=headers.get(h.SPAN_ID) or new_id(),
            parent_span=headers.get(h.PARENT_SPAN),
            meta=meta,
            deadline=deadline,
            caller=headers.get(h.CALLER),
            hops=hops,
            idempotency_key=headers.get(h.IDEMPOTENCY_KEY),
            min_position=position,
            _caller=self.caller,
        )

    async def _handle(self, served: _Served, msg: Incoming) -> None:
        """Serve one request; the dispatcher already counted it in ``_active``."""
        started = time.perf_counter_ns()
        endpoint = served.endpoint
        ctx: Context | None = None
        token = None
        span = None
        failure: BaseException | None = None
        codec: str | None = None
        try:
            ctx = self._context(endpoint, msg)
            headers = msg.headers
            if headers:
                if endpoint.kind == FALLBACK_KIND:
                    ctx.command = headers.get(h.COMMAND) or ctx.command
                codec = headers.get(h.CODEC)
                if headers.get(h.STREAM) == "1" and msg.reply:
                    ctx._send = self._sender(msg.reply, endpoint.name, codec)
            if (tracer := tracing.tracer()) is not None:
                span = tracing.start_server_span(tracer, ctx.command, served.subject, headers)
                ctx.trace_id, ctx.span_id = tracing.trace_ids(span[0])
            token = current_context.set(ctx)
            if ctx.hops >= self.settings.max_hops:
                raise LoopDetectedError(
                    f"{endpoint.name!r} was reached after {ctx.hops} nested calls "
                    f"(limit {self.settings.max_hops}): the call chain loops"
                )
            if ctx.deadline is not None and ctx.deadline <= time.time():
                raise TimeoutError(f"the deadline of {endpoint.name!r} passed before it started")
            payload = decode_body(msg.data, codec, what="payload")
            if self.hooks.server_side:
                reply = await self.hooks.run_server(endpoint, payload, ctx, self._invoke)
            else:
                reply = await self._invoke(endpoint, payload, ctx)
            try:
                body = (
                    encode(endpoint.dump(reply), what="reply")
                    if codec is None
                    else encode_body(endpoint.dump(reply), codec, what="reply")
                )
            except ValidationError as error:
                raise InternalError(
                    f"{endpoint.name!r} returned a value that cannot be sent: {error}"
                ) from error
        except MicroError as error:
            failure = error
            await self._reply_error(msg, error, served, ctx)
        except Exception as error:
            failure = error
            _log.exception(
                "handler failed", command=endpoint.name, trace_id=ctx.trace_id if ctx else None
            )
            internal = InternalError(
                f"internal error in {endpoint.name!r} (trace {ctx.trace_id if ctx else '-'})"
            )
            internal.__cause__ = error
            await self._reply_error(msg, internal, served, ctx)
        else:
            ctx.finished = True
            if msg.reply:
                reply_headers = None
                if (
                    ctx._send is not None
                    or ctx.position is not None
                    or codec is not None
                    or ctx.token is not None
                ):
                    reply_headers = {}
                    if ctx._send is not None:
                        reply_headers[h.STREAM] = "end"
                    if ctx.position is not None:
                        reply_headers[h.POSITION] = str(ctx.position)
                    if codec is not None:
                        reply_headers[h.CODEC] = codec
                    if ctx.token is not None:
                        reply_headers[h.TOKEN] = ctx.token
                await self.client.publish(msg.reply, body, headers=reply_headers)
        finally:
            self._active -= 1
            if token is not None:
                current_context.reset(token)
            elapsed = time.perf_counter_ns() - started
            stats = served.stats
            stats.requests += 1
            stats.processing_time_ns += elapsed
            stats.latency.record(elapsed)
            if span is not None:
                tracing.end_span(span[0], failure, span[1])
            if (measures := metrics.instruments()) is not None:
                measures.command_duration.record(
                    elapsed / 1e9,
                    {"micro.service": self.settings.service, "micro.command": endpoint.name},
                )

    async def _invoke(self, endpoint: Endpoint, payload: Any, ctx: Context) -> Any:
        """Validate the payload and run the handler (and its middleware)."""
        if endpoint.middleware:
            return await _chain(endpoint, 0)(payload, ctx)
        return await call_handler(endpoint, payload, ctx)

    def _sender(self, reply: str, name: str, codec: str | None) -> Callable[[Any], Awaitable[None]]:
        stream_headers = {h.STREAM: "more"}
        if codec is not None:
            stream_headers[h.CODEC] = codec

        async def send(message: Any) -> None:
            data = encode_body(message, codec or "json", what=f"message sent by {name!r}")
            await self.client.publish(reply, data, headers=stream_headers)

        return send

    async def _reply_error(
        self, msg: Incoming, error: MicroError, served: _Served, ctx: Context | None
    ) -> None:
        served.stats.errors += 1
        by_code = served.stats.errors_by_code
        by_code[error.code] = by_code.get(error.code, 0) + 1
        served.stats.last_error = f"{error.code}: {error.message}"[:200]
        if error.service is None:
            error.service = self.settings.service
        if ctx is not None:
            ctx.finished = True
            error.trace_id = error.trace_id or ctx.trace_id
            error.hops = max(error.hops, ctx.hops)
            if self.hooks.on_error:
                await self.hooks.run_on_error(served.endpoint, error, ctx)
        if not msg.reply:
            return
        message = " ".join(error.message.split())[:500]  # headers are one line
        error_headers = {h.SERVICE_ERROR: message, h.SERVICE_ERROR_CODE: str(error.status)}
        if ctx is not None and ctx._send is not None:
            error_headers[h.STREAM] = "end"
        if served.endpoint.idempotent:
            # Tells any caller that a retryable error may be retried, even one that did not
            # declare the command idempotent itself. Only on errors: successes stay lean.
            error_headers[h.IDEMPOTENT] = "true"
        await self.client.publish(msg.reply, orjson.dumps(error.to_wire()), headers=error_headers)

    async def drain(self, timeout: float) -> None:
        """Stop taking requests, then wait (up to ``timeout``) for those in flight."""
        for served in self.served.values():
            if served.subscription is not None:
                # drain, not unsubscribe: requests already delivered are still answered
                with contextlib.suppress(Exception):
                    await served.subscription.drain()  # type: ignore[no-untyped-call]
        deadline = time.monotonic() + timeout
        while self._in_flight and time.monotonic() < deadline:
            await asyncio.wait(set(self._in_flight), timeout=deadline - time.monotonic())
        self._draining = True
        if self.load is not None:
            await self.load.stop()
        if self._in_flight:
            _log.warning("requests still in flight after drain timeout", count=len(self._in_flight))


async def call_handler(endpoint: Endpoint, payload: Any, ctx: Context) -> Any:
    """Validate the payload and run the handler alone (no middleware, no hooks)."""
    if endpoint.takes_payload:
        argument = endpoint.parse(payload, ctx.command)
        result = (
            endpoint.handler(argument, ctx)
            if endpoint.takes_context
            else endpoint.handler(argument)
        )
    else:
        result = endpoint.handler(ctx) if endpoint.takes_context else endpoint.handler()
    # An awaitable has __await__ on its type (coroutines, futures, tasks): one attribute
    # look-up, where inspect.isawaitable runs an ABC check on every plain result.
    if hasattr(type(result), "__await__"):
        result = await result
    return result


def _chain(endpoint: Endpoint, index: int) -> Callable[[Any, Context], Awaitable[Any]]:
    if index == len(endpoint.middleware):

        async def last(payload: Any, ctx: Context) -> Any:
            return await call_handler(endpoint, payload, ctx)

        return last
    middleware = endpoint.middleware[index]
    following = _chain(endpoint, index + 1)

    async def step(payload: Any, ctx: Context) -> Any:
        result: Any = middleware(payload, ctx, following)
        # A plain function that returns ``call_next(...)`` hands back a coroutine: await it.
        if inspect.isawaitable(result):
            result = await result
        return result

    return step


def _header_number(name: str, text: str | None) -> int | None:
    """A numeric header (``None`` when absent); ``ValueError`` naming it when malformed."""
    if not text:
        return None
    number = parse_non_negative_int(text)
    if number is None:
        raise ValueError(f"{name} is not a non-negative integer: {text[:40]!r}")
    return number
