"""The calling side of request/reply: ``act`` and ``act_stream``.

Inside a handler, calls carry the request's trace id, meta, hop count and remaining deadline
(read from the current context), so a chain of calls shares one trace and one deadline.
"""

from __future__ import annotations

import asyncio
import builtins
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from micro.bus import headers as h
from micro.bus.codec import decode, encode
from micro.bus.context import Context, current_context, new_id
from micro.bus.hooks import Hooks
from micro.bus.subjects import check_name, command_subject
from micro.errors import (
    LoopDetectedError,
    MicroError,
    PayloadTooLargeError,
    ServiceNotFoundError,
    TimeoutError,
    ValidationError,
)
from micro.settings import Settings

__all__ = ["Caller", "Reply", "RetryPolicy"]

_STATUS = "Status"


@dataclass(frozen=True, slots=True)
class Reply:
    """A decoded reply with what its headers said."""

    value: Any
    position: int | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded exponential backoff with full jitter, for retryable errors only."""

    attempts: int = 3
    delay: float = 0.05
    factor: float = 2.0
    max_delay: float = 1.0

    def pause(self, attempt: int) -> float:
        return random.uniform(0, min(self.max_delay, self.delay * self.factor**attempt))


class Caller:
    """Sends requests for one Micro; the connection is shared with its responder."""

    def __init__(self, client: Client, settings: Settings, hooks: Hooks) -> None:
        self.client = client
        self.settings = settings
        self.hooks = hooks
        self._subjects: dict[str, str] = {}

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
        if meta is not None and not isinstance(meta, dict):
            raise ValidationError(
                f"meta must be a dict, not {type(meta).__name__}",
                details={"fields": [{"field": "meta", "reason": "not an object"}]},
            )
        data = encode(payload)
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
            await self.hooks.run_simple("on_act", name, payload, parent)
        started = time.perf_counter()
        attempt = 0
        try:
            while True:
                try:
                    reply = await self._send(name, subject, data, headers, wait)
                    break
                except MicroError as error:
                    if retry is None or not error.retryable or attempt + 1 >= retry.attempts:
                        raise
                    pause = retry.pause(attempt)
                    deadline = int(headers[h.DEADLINE]) / 1000
                    if time.time() + pause >= deadline:
                        raise
                    await asyncio.sleep(pause)
                    attempt += 1
                    wait = deadline - time.time()
        except MicroError as error:
            if self.hooks.on_act_finished:
                await self.hooks.run_simple(
                    "on_act_finished", name, error, time.perf_counter() - started
                )
            raise
        if self.hooks.on_act_finished:
            await self.hooks.run_simple(
                "on_act_finished", name, reply.value, time.perf_counter() - started
            )
        return reply

    async def act(self, name: str, payload: Any = None, **options: Any) -> Any:
        return (await self.request(name, payload, **options)).value

    async def _send(
        self, name: str, subject: str, data: bytes, headers: dict[str, str], wait: float
    ) -> Reply:
        try:
            msg = await self.client.request(subject, data, timeout=wait, headers=headers)
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
    ) -> AsyncIterator[Any]:
        """Yield each intermediate message, then the final reply.

        ``timeout`` bounds the whole stream, first message to final reply; it shrinks like
        any deadline when called from inside a handler.
        """
        if parent is None:
            parent = current_context.get()
        subject, data, headers, wait = self._prepare(
            name, payload, timeout, meta, idempotency_key, None, parent, True
        )
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
                    yield decode(msg.data, what="stream message")
                    continue
                yield _read_reply(msg).value
                return
        finally:
            await subscription.unsubscribe()


def _read_reply(msg: Msg) -> Reply:
    headers = msg.headers
    if headers:
        code = headers.get(h.SERVICE_ERROR_CODE)
        if code is not None:
            try:
                body = decode(msg.data, what="error reply")
            except MicroError:
                body = None
            status = int(code) if code.isdigit() else None
            if body is None:
                body = {"error": {"code": "remote_error", "message": headers.get(h.SERVICE_ERROR)}}
            raise MicroError.from_wire(body, status=status)
        position = headers.get(h.POSITION)
        return Reply(decode(msg.data, what="reply"), int(position) if position else None)
    return Reply(decode(msg.data, what="reply"))
