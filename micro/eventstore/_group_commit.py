"""Group commit: appends to different streams that meet in time leave as one atomic batch.

With ``sync_interval: always`` the server syncs its disk once per stored message, and a
JetStream publish costs it about as much again in bookkeeping; an ADR-50 atomic batch pays
both once for the whole batch. So while one publish is out at the server, the appends that
arrive meanwhile wait and leave together in the next batch, each message still carrying its
own ``Nats-Expected-Last-Subject-Sequence`` and ``Nats-Msg-Id``. An append that finds
nothing out leaves at once, so a lone caller waits for nobody.

A batch is stored whole or not at all. When the server refuses one, the refusal does not
say whose message caused it, so each append in it is sent again on its own and gets its
own answer: a conflict stays one append's conflict. Refusals that concern everyone (the
stream unavailable, no answer in time) reach every append of the batch as they are.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from nats.aio.msg import Msg
from nats.errors import MaxPayloadError

__all__ = ["GroupCommit", "Outgoing"]

MAX_BATCH: Final = 1000
"""The server's limit on messages in one atomic batch."""

Request = Callable[[str, bytes, dict[str, str], float], Awaitable[Msg]]
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
    outcome: asyncio.Future[dict[str, Any] | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class GroupCommit:
    """Sends appends, one publish out at a time, batching those that queue up meanwhile.

    ``publish`` returns the parsed acknowledgement of the append's last message: ``seq``
    (its stream sequence) and, for a message sent alone, ``duplicate``; or the server's
    ``error``. Transport failures (``TimeoutError``, ``NoRespondersError``, nats-py errors)
    are raised as they are.
    """

    def __init__(self, request: Request, publish: Publish, timeout: float) -> None:
        self._request = request
        self._publish = publish
        self._timeout = timeout
        self._queue: deque[_Waiting] = deque()
        self._out = False
        self._senders: set[asyncio.Task[None]] = set()

    async def publish(self, messages: Sequence[Outgoing]) -> dict[str, Any]:
        if not self._out:
            self._out = True
            try:
                return await self._send(messages)
            finally:
                self._next()
        waiting = _Waiting(messages)
        self._queue.append(waiting)
        outcome = await waiting.outcome
        if outcome is None:  # its batch was refused as a whole
            return await self._send(messages)
        return outcome

    @property
    def queued(self) -> int:
        """Appends waiting for the publish that is out."""
        return len(self._queue)

    async def close(self) -> None:
        """Wait for the batches already out; appends still queued go with them."""
        while self._senders:
            await asyncio.gather(*self._senders, return_exceptions=True)

    def _next(self) -> None:
        """Send what queued up while the last publish was out, or mark the line free."""
        batch: list[_Waiting] = []
        size = 0
        queue = self._queue
        while queue:
            waiting = queue[0]
            if waiting.outcome.done():  # its caller gave up before it left
                queue.popleft()
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
            if len(batch) == 1:
                await self._settle_alone(batch[0])
            else:
                await self._settle_together(batch)
        finally:
            self._next()

    async def _settle_alone(self, waiting: _Waiting) -> None:
        try:
            outcome = await self._send(waiting.messages)
        except Exception as error:  # the append's own failure, for its caller to judge
            if not waiting.outcome.done():
                waiting.outcome.set_exception(error)
            return
        if not waiting.outcome.done():
            waiting.outcome.set_result(outcome)

    async def _settle_together(self, batch: list[_Waiting]) -> None:
        messages = [message for waiting in batch for message in waiting.messages]
        try:
            ack = await self._send(messages)
        except MaxPayloadError:
            # One message too big for the connection: let it find that out on its own.
            self._resolve_all(batch, None)
            return
        except Exception as error:
            for waiting in batch:
                if not waiting.outcome.done():
                    waiting.outcome.set_exception(error)
            return
        problem = ack.get("error")
        if isinstance(problem, dict):
            # 503: the stream cannot store anything now, whoever asks; otherwise the
            # refusal is some append's own (a conflict, a duplicate id): ask one by one.
            self._resolve_all(batch, ack if problem.get("code") == 503 else None)
            return
        sequence = int(ack["seq"]) - len(messages)
        for waiting in batch:
            sequence += len(waiting.messages)
            if not waiting.outcome.done():
                waiting.outcome.set_result({"seq": sequence, "duplicate": False})

    @staticmethod
    def _resolve_all(batch: list[_Waiting], outcome: dict[str, Any] | None) -> None:
        for waiting in batch:
            if not waiting.outcome.done():
                waiting.outcome.set_result(outcome)

    async def _send(self, messages: Sequence[Outgoing]) -> dict[str, Any]:
        """Publish the messages, atomically if more than one; the parsed acknowledgement."""
        last = len(messages) - 1
        if not last:
            only = messages[0]
            reply = await self._request(only.subject, only.body, only.headers, self._timeout)
            ack: dict[str, Any] = orjson.loads(reply.data)
            return ack
        batch_id = uuid.uuid4().hex
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
