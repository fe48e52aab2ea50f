"""Direct subscriptions: the raw parts of each message, straight from the protocol parser."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.protocol.parser import Parser

from micro._direct import DirectClient, _MessageParser, parse_headers, subscribe_direct
from micro.bus.connection import confirm
from micro.bus.nats_client import ConnectOptions, open_client
from micro.loop import run
from micro.testing import NatsServer
from micro.testing.waiting import wait_until

STATUS = b"NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 0\r\n\r\n"
HEADERS = b'NATS/1.0\r\nMicro-Trace-Id: 0011223344556677\r\nMicro-Meta: {"a": "b:c"}\r\n\r\n'
PROTOCOL = b"".join(
    [
        b'INFO {"server_id":"x","max_payload":1048576}\r\n',
        b"MSG a.b 1 5\r\nhello\r\n",
        b"MSG a.b 1 _INBOX.x.1 2\r\nhi\r\n",
        b"PING\r\n",
        b"HMSG c.d 2 %d %d\r\n%sbody\r\n" % (len(HEADERS), len(HEADERS) + 4, HEADERS),
        b"HMSG c.d 2 $JS.ACK.S.C.1.7.7.1.0 %d %d\r\n%s\r\n" % (len(STATUS), len(STATUS), STATUS),
        b"+OK\r\n",
        b"MSG e 3 0\r\n\r\n",
        b"PONG\r\n",
        b"HMSG f 4 r %d %d\r\n%s{}\r\n" % (len(HEADERS), len(HEADERS) + 2, HEADERS),
    ]
)


class _Recorder:
    """Stands in for the client: records what the parser hands over."""

    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []

    async def _process_msg(self, *parts: Any) -> None:
        self.seen.append(("msg", *parts))

    async def _process_info(self, info: dict[str, Any]) -> None:
        self.seen.append(("info", info["server_id"]))

    async def _process_ping(self) -> None:
        self.seen.append(("ping",))

    async def _process_pong(self) -> None:
        self.seen.append(("pong",))

    async def _process_err(self, message: str) -> None:
        self.seen.append(("err", message))


async def _parse(parser_class: type[Parser], chunks: list[bytes]) -> list[tuple[Any, ...]]:
    recorder = _Recorder()
    parser = parser_class(recorder)
    for chunk in chunks:
        await parser.parse(chunk)
    return recorder.seen


async def test_the_message_parser_hands_over_what_nats_py_does_at_every_split() -> None:
    expected = await _parse(Parser, [PROTOCOL])
    assert [entry[0] for entry in expected].count("msg") == 6
    for split in range(1, len(PROTOCOL)):
        chunks = [PROTOCOL[:split], PROTOCOL[split:]]
        assert await _parse(_MessageParser, chunks) == expected, f"split at {split}"
    byte_by_byte = [PROTOCOL[index : index + 1] for index in range(len(PROTOCOL))]
    assert await _parse(_MessageParser, byte_by_byte) == expected


async def test_the_message_parser_refuses_a_malformed_message_line() -> None:
    with pytest.raises(nats.errors.ProtocolError):
        await _parse(_MessageParser, [b"MSG a.b x 5\r\nhello\r\n"])


def test_parse_headers_reads_names_values_and_the_status_line() -> None:
    assert parse_headers(None) is None
    assert parse_headers(HEADERS) == {
        "Micro-Trace-Id": "0011223344556677",
        "Micro-Meta": '{"a": "b:c"}',
    }
    assert parse_headers(STATUS) == {
        "Status": "100",
        "Description": "Idle Heartbeat",
        "Nats-Last-Consumer": "0",
    }
    assert parse_headers(b"NATS/1.0 503\r\n\r\n") == {"Status": "503"}
    assert parse_headers(b"NATS/1.0\r\nno colon here\r\nA:b\r\n\r\n") == {"A": "b"}


@pytest.fixture
async def direct(nats_server: NatsServer) -> AsyncIterator[DirectClient]:
    client = await open_client(nats_server.url, ConnectOptions(), name="direct", connect_timeout=2)
    assert isinstance(client, DirectClient)
    yield client
    await client.close()


@pytest.fixture
async def plain(nats_server: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


@pytest.mark.parametrize("kind", ["direct", "plain"])
async def test_a_handler_gets_subject_reply_data_and_raw_headers(
    direct: DirectClient, plain: Client, kind: str
) -> None:
    receiver = direct if kind == "direct" else plain
    got: list[tuple[bytes, bytes, bytes, bytes | None]] = []
    arrived = asyncio.Event()

    def handler(subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        got.append((subject, reply, data, headers))
        if len(got) == 2:
            arrived.set()

    await subscribe_direct(receiver, "direct.test.*", handler)
    await confirm(receiver, 5)
    await plain.publish("direct.test.one", b"1", reply="back")
    await plain.publish("direct.test.two", b"2", headers={"K": "v: w"})
    await asyncio.wait_for(arrived.wait(), 5)
    assert [(s, r, d) for s, r, d, _ in got] == [
        (b"direct.test.one", b"back", b"1"),
        (b"direct.test.two", b"", b"2"),
    ]
    assert got[0][3] is None
    assert parse_headers(got[1][3]) == {"K": "v: w"}


async def test_an_awaitable_from_the_handler_finishes_before_the_next_message(
    direct: DirectClient, plain: Client
) -> None:
    order: list[str] = []
    done = asyncio.Event()

    async def slow(data: bytes) -> None:
        order.append(f"start {data.decode()}")
        await asyncio.sleep(0.01)
        order.append(f"end {data.decode()}")
        if data == b"2":
            done.set()

    await direct.subscribe_direct("direct.order", lambda _s, _r, data, _h: slow(data))
    await confirm(direct, 5)
    await plain.publish("direct.order", b"1")
    await plain.publish("direct.order", b"2")
    await asyncio.wait_for(done.wait(), 5)
    assert order == ["start 1", "end 1", "start 2", "end 2"]


async def test_an_unsubscribed_handler_gets_nothing_more(
    direct: DirectClient, plain: Client
) -> None:
    got: list[bytes] = []
    subscription = await direct.subscribe_direct("direct.gone", lambda _s, _r, d, _h: got.append(d))
    await confirm(direct, 5)
    await plain.publish("direct.gone", b"before")
    await wait_until(lambda: got == [b"before"], timeout=5)
    await subscription.unsubscribe()
    assert direct._direct == {}
    await confirm(direct, 5)
    await plain.publish("direct.gone", b"after")
    await confirm(plain, 5)
    await confirm(direct, 5)  # "after", had it been routed here, comes before this PONG
    assert got == [b"before"]


def test_closing_after_the_server_died_with_data_pending_ends_cleanly(tmp_path: Path) -> None:
    server = NatsServer(store_dir=tmp_path).start()

    async def orphan() -> bool:
        client = await open_client(server.url, ConnectOptions(), name="orphan", connect_timeout=2)
        try:
            server.kill()
            await wait_until(lambda: not client.is_connected, timeout=10, what="the loss noticed")
            await client.publish("nowhere", b"pending")  # buffered while reconnecting
            assert client._pending_data_size > 0
        finally:
            await client.close()  # uvloop raised here, writing to the dead socket
        return client.is_closed

    try:
        assert run(orphan(), loop="uvloop")
    finally:
        server.stop()
