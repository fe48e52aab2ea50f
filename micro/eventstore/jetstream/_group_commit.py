"""Group commit: appends to different streams that meet in time leave as one atomic batch.

With ``sync_interval: always`` the server syncs its disk once per stored message, and a
JetStream publish costs it about as much again in bookkeeping; an ADR-50 atomic batch pays
both once for the whole batch. So while one batch (or lone append) is out at the server,
the appends that arrive meanwhile wait and leave together in the next one, each message
still carrying its own ``Nats-Expected-Last-Subject-Sequence`` and ``Nats-Msg-Id``. An
append that finds nothing out leaves at once, so a lone caller waits for nobody.

A batch is stored whole or not at all. When the server refuses one, the refusal does not
say whose message caused it, so each append in it is sent again on its own, all at once,
and gets its own answer: a conflict stays one append's conflict. A failure with no answer
(no acknowledgement in time, a lost connection) reaches every append of the batch.

Without grouping (``grouping=False``: a server with the default disk sync, where each atomic
batch costs it a sync of its own) every append leaves at once, as many in flight as callers;
an append of several events is still one atomic batch.

An append waits for the line at most the store's timeout: one still queued when its time
is up fails without leaving. Once it leaves it waits up to the timeout again for its
acknowledgement, so a server that stops answering fails an append within twice the timeout.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from nats.errors import ConnectionClosedError, MaxPayloadError

from micro._inbox import Received

__all__ = ["MAX_BATCH", "GroupCommit", "Outgoing"]

MAX_BATCH: Final = 1000
"""The server's limit on messages in one atomic batch."""

Request = Callable[[str, bytes, dict[str, str], float], Awaitable[Received]]
Publish = Callable[[str, bytes, dict[str, str]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message of an append: its subject, body and own headers."""

    subject: str
    body: bytes
    headers: dict[str, str]


@dataclass(slots=True)
class _Waiting:
    """An append waiting for the line; an outcome of None sends it again on its own."""

    messages: Sequence[Outgoing]
    deadline: float
    outcome: asyncio.Future[dict[str, Any] | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class GroupCommit:
    """Sends appends, one batch out at a time, batching those that queue up meanwhile.

    ``publish`` returns the parsed acknowledgement of the append's last message: ``seq``
    (its stream sequence) and, for a message sent alone, ``duplicate``; or the server's
    ``error``. Failures without an answer (``TimeoutError``, ``NoRespondersError``, nats-py
    errors) are raised as they are; after ``close`` every append fails with
    ``ConnectionClosedError``.
    """

    def __init__(
        self, request: Request, publish: Publish, timeout: float, *, grouping: bool = True
    ) -> None:
        self._grouping = grouping
        self._request = request
        self._publish = publish
        self._timeout = timeout
        self._queue: deque[_Waiting] = deque()
        self._out = False
        self._closed = False
        self._senders: set[asyncio.Task[None]] = set()

    async def publish(self, messages: Sequence[Outgoing]) -> dict[str, Any]:
        if not self._grouping:
            return await self._send(messages)  # each append in flight on its own
        if not self._out:
            self._out = True
            try:
                return await self._send(messages)
            finally:
                self._next()
        loop = asyncio.get_running_loop()
        waiting = _Waiting(messages, loop.time() + self._timeout)
        self._queue.append(waiting)
        outcome = await waiting.outcome
        if outcome is None:  # its batch was refused as a whole
            return await self._send(messages)
        return outcome

    @property
    def queued(self) -> int:
        """Appends waiting for the line (not those whose callers gave up)."""
        return sum(not waiting.outcome.done() for waiting in self._queue)

    def stop(self) -> None:
        """Refuse new appends and fail the queued ones: they never left, nothing is stored."""
        self._closed = True
        self._fail_queue(ConnectionClosedError())

    async def close(self) -> None:
        """``stop``, then wait for the batches out to end (close their replies first)."""
        self.stop()
        while self._senders:
            await asyncio.gather(*self._senders, return_exceptions=True)

    def _fail_queue(self, error: BaseException) -> None:
        queued = list(self._queue)
        self._queue.clear()
        self._resolve_all(queued, error)

    def _next(self) -> None:
        """Send what queued up while the last batch was out, or mark the line free."""
        if self._closed:
            self._fail_queue(ConnectionClosedError())
        batch: list[_Waiting] = []
        size = 0
        queue = self._queue
        now = asyncio.get_running_loop().time()
        while queue:
            waiting = queue[0]
            if waiting.outcome.done():  # its caller gave up before it left
                queue.popleft()
                continue
            if waiting.deadline <= now:
                queue.popleft().outcome.set_exception(TimeoutError("no turn to publish in time"))
                continue
            if batch and size + len(waiting.messages) > MAX_BATCH:
                break
            batch.append(queue.popleft())
            size += len(waiting.messages)
        if not batch:
            self._out = False
            return
        sender = asyncio.create_task(self._send_batch(batch))
        self._senders.add(sender)
        sender.add_done_callback(self._senders.discard)

    async def _send_batch(self, batch: list[_Waiting]) -> None:
        try:
            # A caller may have given up between being picked and this task's first step.
            batch = [waiting for waiting in batch if not waiting.outcome.done()]
            if batch:
                await self._settle(batch)
        finally:
            for waiting in batch:  # cancelled, or failed in an unforeseen way
                if not waiting.outcome.done():
                    waiting.outcome.set_exception(ConnectionClosedError())
            self._next()

    async def _settle(self, batch: list[_Waiting]) -> None:
        """Send the batch and give each append its outcome."""
        together = len(batch) > 1
        messages = [message for waiting in batch for message in waiting.messages]
        try:
            ack = await self._send(messages)
        except MaxPayloadError as error:
            # One message too big for the connection: let it find that out on its own.
            self._resolve_all(batch, None if together else error)
            return
        except Exception as error:  # no answer: the same news for every append
            self._resolve_all(batch, error)
            return
        if not together:
            self._resolve_all(batch, ack)  # its own answer, refusal or not
        elif isinstance(ack.get("error"), dict) or ack.get("count") != len(messages):
            # Refused (a conflict, a duplicate id, an outage: whose, the server does not
            # say), or an acknowledgement whose count cannot place each append: one by one.
            self._resolve_all(batch, None)
        else:
            sequence = int(ack["seq"]) - len(messages)
            for waiting in batch:
                sequence += len(waiting.messages)
                if not waiting.outcome.done():
                    waiting.outcome.set_result({"seq": sequence, "duplicate": False})

    @staticmethod
    def _resolve_all(batch: list[_Waiting], outcome: dict[str, Any] | BaseException | None) -> None:
        for waiting in batch:
            if waiting.outcome.done():
                continue
            if isinstance(outcome, BaseException):
                waiting.outcome.set_exception(outcome)
            else:
                waiting.outcome.set_result(outcome)

    async def _send(self, messages: Sequence[Outgoing]) -> dict[str, Any]:
        """Publish the messages, atomically if more than one; the parsed acknowledgement."""
        if self._closed:
            raise ConnectionClosedError
        if len(messages) == 1:
            only = messages[0]
            reply = await self._request(only.subject, only.body, only.headers, self._timeout)
            ack: dict[str, Any] = orjson.loads(reply.data)
            return ack
        batch_id = uuid.uuid4().hex
        last = len(messages) - 1
        for index, message in enumerate(messages):
            headers = {
                **message.headers,
                "Nats-Batch-Id": batch_id,
                "Nats-Batch-Sequence": str(index + 1),
            }
            if index < last:
                # Messages on one connection arrive in order, so only the commit needs a
                # reply: a whole batch costs one round trip.
                await self._publish(message.subject, message.body, headers)
            else:
                headers["Nats-Batch-Commit"] = "1"
                reply = await self._request(message.subject, message.body, headers, self._timeout)
        ack = orjson.loads(reply.data)
        return ack
