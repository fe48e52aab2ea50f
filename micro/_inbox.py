"""One reply inbox per connection user: request/reply without a NUID and a timer per call.

``Client.request`` makes a fresh NUID token and wraps its future in ``asyncio.wait_for``
(a timer handle, a waiter future and callbacks) on every call. Here a reply subject is a
counter on one wildcard subscription, and timeouts share one timer: deadlines wait in a
heap of plain tuples (compared in C), and the timer is armed for the earliest of them,
rounded up to a few milliseconds so that a busy inbox wakes it rarely.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from collections.abc import Callable
from typing import Protocol

from nats.aio.client import Client
from nats.aio.subscription import Subscription
from nats.errors import ConnectionClosedError, NoRespondersError
from nats.errors import Error as NatsError

from micro._direct import Incoming, parse_headers, subscribe_direct

__all__ = ["Received", "ReplyInbox"]


class Received(Protocol):
    """A reply as its reader sees it: nats-py's ``Msg``, or a direct ``Incoming``."""

    @property
    def data(self) -> bytes: ...

    @property
    def headers(self) -> dict[str, str] | None: ...


_GRANULARITY = 0.005
"""How late a timeout may fire, in seconds: the price of sharing one timer."""


class ReplyInbox:
    """Publishes requests and routes each reply to its waiter, by token.

    ``on_other`` receives the messages whose token no single-reply request waits for: the
    event store's batched reads, which answer one request with many messages.
    """

    def __init__(
        self, client: Client, on_other: Callable[[str, Received], None] | None = None
    ) -> None:
        self._client = client
        self._prefix = client.new_inbox()
        self._token_at = len(self._prefix) + 1
        self._on_other = on_other
        self._subscription: Subscription | None = None
        self._pending: dict[str, tuple[asyncio.Future[Received], float]] = {}
        self._deadlines: list[tuple[float, str]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._counter = 0

    async def start(self) -> None:
        if self._subscription is None:
            self._subscription = await subscribe_direct(
                self._client, f"{self._prefix}.*", self._on_direct
            )

    async def close(self) -> None:
        """Unsubscribe; requests still waiting fail with ``ConnectionClosedError``."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for waiter, _ in self._pending.values():
            if not waiter.done():
                waiter.set_exception(ConnectionClosedError())
        self._pending.clear()
        self._deadlines.clear()
        if self._subscription is not None:
            with contextlib.suppress(NatsError):
                await self._subscription.unsubscribe()
            self._subscription = None

    def reply_subject(self) -> tuple[str, str]:
        """A fresh (token, reply subject) pair."""
        self._counter += 1
        token = str(self._counter)
        return token, f"{self._prefix}.{token}"

    async def request(
        self, subject: str, body: bytes, headers: dict[str, str] | None, timeout: float
    ) -> Received:
        """Publish and wait for the one reply; ``TimeoutError``, ``NoRespondersError``."""
        token, reply_to = self.reply_subject()
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Received] = loop.create_future()
        deadline = loop.time() + timeout
        deadlines = self._deadlines
        if len(deadlines) > 1024 and len(deadlines) > 4 * len(self._pending):
            # Answered requests leave their deadline behind until it passes: with long
            # timeouts, drop them all at once rather than let the heap grow with the load.
            deadlines[:] = [(at, key) for key, (_, at) in self._pending.items()]
            heapq.heapify(deadlines)
        self._pending[token] = (waiter, deadline)
        heapq.heappush(deadlines, (deadline, token))
        if self._timer is None or deadline < self._timer_at - _GRANULARITY:
            self._arm(loop, deadline)
        try:
            await self._client.publish(subject, body, reply=reply_to, headers=headers)
            message = await waiter
        finally:
            self._pending.pop(token, None)
        if not message.data and message.headers and message.headers.get("Status") == "503":
            raise NoRespondersError
        return message

    def _arm(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline + _GRANULARITY
        self._timer = loop.call_at(self._timer_at, self._expire)

    def _expire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, token = heapq.heappop(deadlines)
            pending = self._pending.pop(token, None)
            if pending is not None and not pending[0].done():
                pending[0].set_exception(TimeoutError("no reply in time"))
        # Answered requests leave their deadline behind; the heap drops it when it passes.
        if deadlines:
            self._arm(loop, deadlines[0][0])

    def _on_direct(self, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        token = subject[self._token_at :].decode()
        message = Incoming(reply.decode() if reply else "", data, parse_headers(headers))
        pending = self._pending.pop(token, None)
        if pending is not None:
            if not pending[0].done():
                pending[0].set_result(message)
        elif self._on_other is not None:
            self._on_other(token, message)
