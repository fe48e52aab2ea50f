"""Reply routing: one inbox for the store's acknowledgements and batched direct gets."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from nats.aio.client import Client
from nats.errors import Error as NatsError

from micro._inbox import Received, ReplyInbox
from micro.errors import EventStoreUnavailableError
from micro.eventstore.jetstream._api import unavailable

__all__ = ["Reply", "ReplyRouter"]


@dataclass(slots=True)
class Reply:
    """One message of a batched direct get."""

    header: dict[str, str]
    data: bytes


class ReplyRouter:
    """One inbox for all batched direct gets and append acknowledgements.

    Appends wait on a ``ReplyInbox`` rather than in ``Client.request``: every command waits
    for one acknowledgement, and the inbox's counter tokens and shared timer cost a fraction
    of a fresh NUID and ``wait_for``. A batched read answers with many messages, routed here.
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self._inbox = ReplyInbox(client, on_other=self._on_batch)
        self._waiting: dict[str, tuple[list[Reply], asyncio.Future[bool]]] = {}

    async def start(self) -> None:
        await self._inbox.start()

    async def close(self) -> None:
        await self._inbox.close()

    def _on_batch(self, token: str, message: Received) -> None:
        waiting = self._waiting.get(token)
        if waiting is None:
            return
        replies, done = waiting
        header = message.headers or {}
        if message.data:
            replies.append(Reply(header, message.data))
        elif not done.done():
            # A status closes the batch: 204 EOB (more may follow), 404 nothing found.
            status = header.get("Status", "")
            more = status == "204" and header.get("Nats-Num-Pending", "0") != "0"
            if status in ("204", "404"):
                done.set_result(more)
            else:
                done.set_exception(
                    EventStoreUnavailableError(
                        f"event store read failed: {status} {header.get('Description', '')}"
                    )
                )

    async def request(
        self, subject: str, body: bytes, headers: dict[str, str], timeout: float
    ) -> Received:
        """Publish and wait for the one reply; ``TimeoutError``, ``NoRespondersError``."""
        return await self._inbox.request(subject, body, headers, timeout)

    async def direct_get(
        self, subject: str, request: bytes, timeout: float
    ) -> tuple[list[Reply], bool]:
        """The messages of one batched direct get, and whether the server has more."""
        token, reply_to = self._inbox.reply_subject()
        replies: list[Reply] = []
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting[token] = (replies, done)
        try:
            await self._client.publish(subject, request, reply=reply_to)
            more = await asyncio.wait_for(done, timeout)
        except (TimeoutError, NatsError, OSError) as error:
            raise unavailable("reading events", error) from error
        finally:
            del self._waiting[token]
        return replies, more
