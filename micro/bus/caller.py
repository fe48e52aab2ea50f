"""The calling side of request/reply: ``act`` and ``act_stream``.

Inside a handler, calls carry the request's trace id, meta, hop count and remaining deadline
(read from the current context), so a chain of calls shares one trace and one deadline.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import random
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from micro._inbox import Received, ReplyInbox
from micro._numbers import parse_non_negative_int
from micro.bus import headers as h
from micro.bus.codec import decode, encode
from micro.bus.codecs import DEFAULT_CODEC, decode_body, encode_body
from micro.bus.hooks import Hooks
from micro.bus.subjects import check_name, command_subject, fallback_subject
from micro.context import Context, current_context, new_id
from micro.errors import (
    LoopDetectedError,
    MicroError,
    PayloadTooLargeError,
    ServiceNotFoundError,
    TimeoutError,
    ValidationError,
)
from micro.settings import Settings
from micro.telemetry import tracing

if TYPE_CHECKING:
    from micro.bus.endpoint import Endpoint

__all__ = ["DEFAULT_RETRY", "Caller", "Reply", "RetryPolicy", "check_min_position"]

_STATUS = "Status"


@dataclass(frozen=True, slots=True)
class Reply:
    """A decoded reply with what its headers said."""

    value: Any
    position: int | None = None
    token: str | None = None
    """A fresh token for the caller's session, when the session slid (``Micro-Token``)."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded exponential backoff with full jitter, for retryable errors only.

    Retries never outlive the call's deadline: a pause that would end past it ends the call.
    """

    attempts: int = 3
    """Tries in all, the first included."""
    delay: float = 0.05
    """Upper bound of the first pause, in seconds."""
    factor: float = 2.0
    """How much the bound grows after each try."""
    max_delay: float = 1.0
    """The bound never grows past this."""

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise TypeError(f"attempts must be an int, not {self.attempts!r}")
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {self.attempts}")
        if self.delay < 0 or self.max_delay < 0 or self.factor < 1:
            raise ValueError("delay and max_delay must be >= 0 and factor >= 1")

    def pause(self, attempt: int) -> float:
        """Seconds to wait after try number ``attempt`` (0-based) failed."""
        return random.uniform(0, min(self.max_delay, self.delay * self.factor**attempt))


DEFAULT_RETRY = RetryPolicy()


def check_min_position(min_position: object) -> None:
    """Raise ``ValidationError`` unless ``min_position`` is ``None`` or an event position."""
    if min_position is not None and (
        isinstance(min_position, bool) or not isinstance(min_position, int) or min_position < 0
    ):
        raise ValidationError(
            f"min_position must be a non-negative integer (an event position), "
            f"not {min_position!r}",
            details={"fields": [{"field": "min_position", "reason": "not a position"}]},
        )


class Caller:
    """Sends requests for one Micro; the connection is shared with its responder.

    Calls are retried only for commands known to be idempotent, and only on retryable
    errors: those with a policy in ``retries`` (``Micro.retry``), those this process serves
    with ``idempotent=True``, and those whose service said so (in discovery or on an error
    reply). Retrying anything else could run a command twice.
    """

    def __init__(
        self,
        client: Client,
        settings: Settings,
        hooks: Hooks,
        *,
        retries: dict[str, RetryPolicy] | None = None,
        local: Mapping[str, Endpoint] | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.hooks = hooks
        self.retries = retries if retries is not None else {}
        """Retry policies declared by name; shared with ``Micro.retry``."""
        self.idempotent: set[str] = set()
        """Commands learned to be idempotent from discovery or from their error replies."""
        self._local = local if local is not None else {}
        self._subjects: dict[str, str] = {}
        self._inbox = ReplyInbox(client)

    async def start(self) -> None:
        """Subscribe the reply inbox; calls are possible from then on."""
        await self._inbox.start()

    def policy(self, name: str) -> RetryPolicy | None:
        """How calls to ``name`` are retried, or ``None`` when they are not."""
        declared = self.retries.get(name)
        if declared is not None:
            return declared
        local = self._local.get(name)
        if name in self.idempotent or (local is not None and local.idempotent):
            return DEFAULT_RETRY
        return None

    def _prepare(
        self,
        name: str,
        payload: Any,
        timeout: float | None,
        meta: dict[str, Any] | None,
        idempotency_key: str | None,
        min_position: int | None,
        parent: Context | None,
        stream: bool,
    ) -> tuple[str, bytes, dict[str, str], float]:
        subject = self._subjects.get(name)
        if subject is None:
            try:
                check_name(name)
            except ValueError as error:
                raise ValidationError(str(error), details={"fields": [{"field": "name"}]}) from None
            subject = self._subjects[name] = command_subject(self.settings.namespace, name)
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
        ):
            raise ValidationError(
                f"timeout must be a positive number of seconds, not {timeout!r}",
                details={"fields": [{"field": "timeout", "reason": "not positive"}]},
            )
        check_min_position(min_position)
        if meta is not None and not isinstance(meta, dict):
            raise ValidationError(
                f"meta must be a dict, not {type(meta).__name__}",
                details={"fields": [{"field": "meta", "reason": "not an object"}]},
            )
        codec = self.settings.codec
        data = encode(payload) if codec == DEFAULT_CODEC else encode_body(payload, codec)
        limit = self.client.max_payload
        if limit and len(data) > limit - 4096:  # headers travel in the same message
            raise PayloadTooLargeError(
                f"payload of {name!r} is {len(data)} bytes; the NATS server's max_payload is "
                f"{limit} bytes",
                details={"limit": limit, "size": len(data)},
            )
        wait = timeout if timeout is not None else self.settings.request_timeout
        now = time.time()
        # Only what the callee needs travels: every header costs parsing on both sides.
        headers: dict[str, str]
        if parent is not None:
            if parent.hops + 1 >= self.settings.max_hops:
                raise LoopDetectedError(
                    f"calling {name!r} would be call number {parent.hops + 1} in one chain "
                    f"(limit {self.settings.max_hops})",
                    trace_id=parent.trace_id,
                    hops=parent.hops + 1,
                )
            headers = {
                h.TRACE_ID: parent.trace_id,
                h.PARENT_SPAN: parent.span_id,
                h.HOPS: str(parent.hops + 1),
                h.CALLER: parent.service,
            }
            if parent.deadline is not None:
                wait = min(wait, parent.deadline - now)
                if wait <= 0:
                    raise TimeoutError(
                        f"no time left to call {name!r}: the request's deadline has passed",
                        trace_id=parent.trace_id,
                    )
            merged = {**parent.meta, **meta} if meta else parent.meta
        else:
            headers = {h.TRACE_ID: new_id()}
            merged = meta or {}
        headers[h.DEADLINE] = str(int((now + wait) * 1000))
        if merged:
            headers[h.META] = orjson.dumps(merged).decode()
        if idempotency_key is not None:
            headers[h.IDEMPOTENCY_KEY] = str(idempotency_key)
        if min_position is not None:
            headers[h.MIN_POSITION] = str(int(min_position))
        if stream:
            headers[h.STREAM] = "1"
        if codec != DEFAULT_CODEC:
            headers[h.CODEC] = codec
        return subject, data, headers, wait

    async def request(
        self,
        name: str,
        payload: Any = None,
        *,
        timeout: float | None = None,
        meta: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        min_position: int | None = None,
        parent: Context | None = None,
        retry: RetryPolicy | None = None,
    ) -> Reply:
        """Send one request and decode its reply, raising the error the service sent."""
        if parent is None:
            parent = current_context.get()
        subject, data, headers, wait = self._prepare(
            name, payload, timeout, meta, idempotency_key, min_position, parent, False
        )
        if self.hooks.on_act:
            # A client-side guard: raising here stops the call before it is sent.
            await self.hooks.run_simple("on_act", name, payload, parent)
        span = None
        if (tracer := tracing.tracer()) is not None:
            span = tracing.start_client_span(tracer, name, subject, headers)
            headers[h.TRACE_ID] = tracing.trace_ids(span)[0]
        started = time.perf_counter()
        attempt = 0
        try:
            while True:
                try:
                    reply = await self._send(name, subject, data, headers, wait)
                    break
                except MicroError as error:
                    if not error.retryable:
                        raise
                    # Looked up only now: the error reply itself may have taught us.
                    policy = retry or self.policy(name)
                    if policy is None or attempt + 1 >= policy.attempts:
                        raise
                    pause = policy.pause(attempt)
                    deadline = int(headers[h.DEADLINE]) / 1000
                    if time.time() + pause >= deadline:
                        raise
                    await asyncio.sleep(pause)
                    attempt += 1
                    wait = deadline - time.time()
                    if wait <= 0:
                        # The pause overslept the deadline (a busy loop): the
                        # last error says more than a zero-length send would.
                        raise
        except MicroError as error:
            if span is not None:
                tracing.end_span(span, error)
            if self.hooks.on_act_finished:
                await self.hooks.run_observers(
                    "on_act_finished", name, error, time.perf_counter() - started
                )
            raise
        except BaseException as error:
            if span is not None:  # cancelled, or a bug: the span still ends, failed
                tracing.end_span(span, error)
            raise
        if span is not None:
            tracing.end_span(span)
        if self.hooks.on_act_finished:
            await self.hooks.run_observers(
                "on_act_finished", name, reply.value, time.perf_counter() - started
            )
        return reply

    async def act(self, name: str, payload: Any = None, **options: Any) -> Any:
        return (await self.request(name, payload, **options)).value

    async def _send(
        self, name: str, subject: str, data: bytes, headers: dict[str, str], wait: float
    ) -> Reply:
        try:
            try:
                msg = await self._inbox.request(subject, data, headers, wait)
            except NoRespondersError:
                # Nobody serves the command: the namespace's fallback, if a service holds
                # one, answers instead. Asked only now, so served calls pay nothing for it.
                msg = await self._inbox.request(
                    fallback_subject(self.settings.namespace),
                    data,
                    {**headers, h.COMMAND: name},
                    wait,
                )
        except NoRespondersError:
            raise ServiceNotFoundError(
                f"no service serves {name!r}", trace_id=headers[h.TRACE_ID]
            ) from None
        except (NatsTimeoutError, builtins.TimeoutError):
            raise TimeoutError(
                f"{name!r} did not reply within {wait:.3f}s (deadline "
                f"{time.strftime('%H:%M:%S', time.gmtime(int(headers[h.DEADLINE]) / 1000))} UTC)",
                trace_id=headers[h.TRACE_ID],
                details={"command": name, "timeout": round(wait, 3)},
            ) from None
        if msg.headers and msg.headers.get(h.IDEMPOTENT) == "true":
            self.idempotent.add(name)
        return _read_reply(msg)

    async def stream(
        self,
        name: str,
        payload: Any = None,
        *,
        timeout: float | None = None,
        meta: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        parent: Context | None = None,
    ) -> AsyncGenerator[Any, None]:
        """Yield each intermediate message, then the final reply.

        ``timeout`` is a deadline for the whole stream, from the request to the final reply,
        not a gap between messages: a stream still running when it passes raises
        ``TimeoutError``. It shrinks like any deadline when called from inside a handler.
        Streams are not retried. A consumer may stop early (``break``): the inbox is dropped
        when the generator is closed, and the service's later messages are discarded by
        NATS without ever holding the service up.
        """
        if parent is None:
            parent = current_context.get()
        subject, data, headers, wait = self._prepare(
            name, payload, timeout, meta, idempotency_key, None, parent, True
        )
        if self.hooks.on_act:
            await self.hooks.run_simple("on_act", name, payload, parent)
        span = None
        if (tracer := tracing.tracer()) is not None:
            span = tracing.start_client_span(tracer, name, subject, headers)
            headers[h.TRACE_ID] = tracing.trace_ids(span)[0]
        started = time.perf_counter()
        outcome: Any = None
        deadline = time.monotonic() + wait
        inbox = self.client.new_inbox()
        subscription = await self.client.subscribe(inbox)
        try:
            await self.client.publish(subject, data, reply=inbox, headers=headers)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"the stream of {name!r} did not end within {wait:.3f}s",
                        trace_id=headers[h.TRACE_ID],
                    )
                try:
                    msg = await subscription.next_msg(timeout=left)
                except NatsTimeoutError:
                    continue
                if msg.headers and msg.headers.get(_STATUS) == "503":
                    raise ServiceNotFoundError(
                        f"no service serves {name!r}", trace_id=headers[h.TRACE_ID]
                    )
                kind = msg.headers.get(h.STREAM) if msg.headers else None
                if kind == "more":
                    codec = (msg.headers or {}).get(h.CODEC)
                    yield decode_body(msg.data, codec, what="stream message")
                    continue
                outcome = _read_reply(msg).value
                yield outcome
                return
        except MicroError as error:
            outcome = error
            raise
        finally:
            # unsubscribe() only queues an UNSUB: it never waits on the server
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
            if span is not None:
                tracing.end_span(span, outcome if isinstance(outcome, MicroError) else None)
            if self.hooks.on_act_finished:
                await self.hooks.run_observers(
                    "on_act_finished", name, outcome, time.perf_counter() - started
                )


def _read_reply(msg: Received) -> Reply:
    headers = msg.headers
    if headers:
        code = headers.get(h.SERVICE_ERROR_CODE)
        if code is not None:
            try:
                body = decode(msg.data, what="error reply")
            except MicroError:
                body = None
            status = parse_non_negative_int(code)
            if body is None:
                body = {"error": {"code": "remote_error", "message": headers.get(h.SERVICE_ERROR)}}
            raise MicroError.from_wire(body, status=status)
        position = headers.get(h.POSITION)
        codec = headers.get(h.CODEC)
        value = decode(msg.data, what="reply") if codec is None else decode_body(msg.data, codec)
        return Reply(value, parse_non_negative_int(position), headers.get(h.TOKEN))
    return Reply(decode(msg.data, what="reply"))
