"""A response's head leaves with its body, and never waits past one turn of the loop."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from micro.gateway.protocol import HeadWithBody
from tests.gateway.support import Stack

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class Recorder:
    """Keeps what was written, as a socket transport would send it."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> Any:
        return f"info {name}"


def wrap() -> tuple[HeadWithBody, Recorder]:
    recorder = Recorder()
    loop = asyncio.get_running_loop()
    return HeadWithBody(cast(asyncio.Transport, recorder), loop), recorder


async def test_a_head_and_its_body_leave_in_one_write() -> None:
    transport, recorder = wrap()
    transport.write(HEAD)
    transport.write(b"{}")
    assert recorder.writes == [HEAD + b"{}"]
    await asyncio.sleep(0)
    assert recorder.writes == [HEAD + b"{}"]


async def test_a_head_alone_leaves_at_the_next_turn_of_the_loop() -> None:
    transport, recorder = wrap()
    transport.write(HEAD)
    assert recorder.writes == []
    await asyncio.sleep(0)
    assert recorder.writes == [HEAD]
    transport.write(b"data: 1\n\n")
    assert recorder.writes == [HEAD, b"data: 1\n\n"]


async def test_closing_sends_a_held_head_first_and_the_rest_passes_through() -> None:
    transport, recorder = wrap()
    transport.write(HEAD)
    transport.close()
    assert recorder.writes == [HEAD]
    assert recorder.closed
    assert transport.get_extra_info("peername") == "info peername"


async def test_streams_and_plain_calls_still_answer_through_the_server(stack: Stack) -> None:
    answer = await stack.client.post("/api/demo/greet", json={"name": "ada"})
    assert answer.status_code == 200
    assert answer.json()["greeting"] == "hello ada"
    async with stack.client.stream(
        "POST", "/api/demo/count", json={}, headers={"accept": "text/event-stream"}
    ) as streamed:
        assert streamed.headers["content-type"].startswith("text/event-stream")
        text = "".join([chunk async for chunk in streamed.aiter_text()])
    assert text.count("event: message") == 3
    assert "event: result" in text
