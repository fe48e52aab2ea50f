"""The reply inbox shared by calls and appends: routing, timeouts, no responders, close."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, NoRespondersError

from micro._direct import DirectClient
from micro._inbox import ReplyInbox
from micro.bus.nats_client import ConnectOptions, open_client
from micro.testing import NatsServer


@pytest.fixture(params=["direct", "plain"])
async def client(nats_server: NatsServer, request: pytest.FixtureRequest) -> AsyncIterator[Client]:
    """Every connection micro opens (direct replies), and any other nats-py client."""
    if request.param == "direct":
        connection: Client = await open_client(
            nats_server.url, ConnectOptions(), name="inbox-test", connect_timeout=2
        )
        assert isinstance(connection, DirectClient)
    else:
        connection = await nats.connect(nats_server.url)
    yield connection
    await connection.close()


async def echo_after(client: Client, subject: str, pause: float) -> None:
    async def answer(message: Msg) -> None:
        await asyncio.sleep(pause)
        await message.respond(b"re:" + message.data)

    await client.subscribe(subject, cb=answer)


async def test_each_reply_reaches_its_own_request(client: Client) -> None:
    async def answer(message: Msg) -> None:
        await asyncio.sleep(int(message.data) % 7 / 1000)  # out of order on purpose
        await message.respond(b"re:" + message.data)

    await client.subscribe("inbox.echo", cb=answer)
    inbox = ReplyInbox(client)
    await inbox.start()
    replies = await asyncio.gather(
        *(inbox.request("inbox.echo", str(n).encode(), None, 5) for n in range(200))
    )
    assert [reply.data for reply in replies] == [f"re:{n}".encode() for n in range(200)]
    await inbox.close()


async def test_a_request_without_a_reply_times_out_near_its_own_deadline(client: Client) -> None:
    await echo_after(client, "inbox.slow", 1.0)
    inbox = ReplyInbox(client)
    await inbox.start()
    started = time.monotonic()
    # A long request first: the shorter one after it must not wait for its deadline.
    long = asyncio.ensure_future(inbox.request("inbox.slow", b"a", None, 30))
    with pytest.raises(TimeoutError):
        await inbox.request("inbox.slow", b"b", None, 0.2)
    # Far below the long request's 30 s: a timer armed only for the earliest deadline
    # seen first would keep the short one waiting that long.
    assert time.monotonic() - started < 5
    assert (await long).data == b"re:a"
    await inbox.close()


async def test_a_subject_nobody_serves_raises_no_responders(client: Client) -> None:
    inbox = ReplyInbox(client)
    await inbox.start()
    with pytest.raises(NoRespondersError):
        await inbox.request("inbox.nobody", b"", {"A": "b"}, 5)
    await inbox.close()


async def test_answered_deadlines_are_dropped_while_long_requests_stay_bounded(
    client: Client,
) -> None:
    await echo_after(client, "inbox.fast", 0)
    inbox = ReplyInbox(client)
    await inbox.start()
    for _ in range(5):
        replies = await asyncio.gather(
            *(inbox.request("inbox.fast", b"x", None, 600) for _ in range(1000))
        )
        assert len(replies) == 1000
    # 5,000 answered requests with ten-minute deadlines: the heap was compacted meanwhile.
    assert len(inbox._deadlines) <= 2048
    slow = asyncio.ensure_future(inbox.request("inbox.unanswered", b"x", None, 600))
    await asyncio.sleep(0)
    await inbox.close()
    with pytest.raises(ConnectionClosedError):
        await slow


async def test_other_messages_go_to_the_fallback(client: Client) -> None:
    seen: list[tuple[str, bytes]] = []
    both = asyncio.Event()

    def other(token: str, message: Msg) -> None:
        seen.append((token, message.data))
        if len(seen) == 2:
            both.set()

    inbox = ReplyInbox(client, on_other=other)
    await inbox.start()
    token, subject = inbox.reply_subject()
    await client.publish(subject, b"one")
    await client.publish(subject, b"two")
    await asyncio.wait_for(both.wait(), 5)
    assert seen == [(token, b"one"), (token, b"two")]
    await inbox.close()
