"""A confirmed subscription is known to the server before the confirmation returns.

nats-py's ``flush`` writes its PING ahead of a SUB still queued for its flusher, so the
PONG can come back before the server has the subscription; under load, a request from
another connection then got "no responders" right after ``Micro.open`` returned. A tiny
NATS speaker records the order of what arrives on the wire, which makes the check exact.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import nats
import pytest

from micro.bus.connection import confirm


class WireRecorder:
    """Speaks just enough NATS (INFO, CONNECT, PING/PONG) and records every command."""

    def __init__(self) -> None:
        self.commands: list[str] = []
        self.answered: list[int] = []
        """For each PONG sent: how many commands had arrived when it was sent."""

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"nats://127.0.0.1:{port}"

    async def stop(self) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        info = {"server_id": "wire", "version": "2.15.1", "proto": 1, "headers": True}
        writer.write(f"INFO {json.dumps(info)}\r\n".encode())
        await writer.drain()
        while line := await reader.readline():
            command = line.decode().strip()
            self.commands.append(command.split(" ", 1)[0])
            if command == "PING":
                self.answered.append(len(self.commands))
                writer.write(b"PONG\r\n")
                await writer.drain()
        writer.close()


@pytest.fixture
async def recorder() -> AsyncIterator[WireRecorder]:
    wire = WireRecorder()
    yield wire
    await wire.stop()


async def test_confirm_returns_only_after_a_pong_that_follows_the_sub(
    recorder: WireRecorder,
) -> None:
    client = await nats.connect(await recorder.start(), allow_reconnect=False)
    try:
        await client.subscribe("orders.cmd.place", queue="orders")
        pongs_before = len(recorder.answered)
        await confirm(client, 5)
        sub_at = recorder.commands.index("SUB") + 1
        # The last PONG the client waited for was sent after the server had read the SUB.
        assert recorder.answered[-1] > sub_at
        assert len(recorder.answered) > pongs_before
    finally:
        await client.close()


async def test_a_plain_flush_can_be_answered_before_the_sub_arrives(
    recorder: WireRecorder,
) -> None:
    """Why ``confirm`` exists: if nats-py ever orders its PING after queued commands, this
    test fails, and ``confirm`` can go back to a single flush."""
    client = await nats.connect(await recorder.start(), allow_reconnect=False)
    try:
        await client.subscribe("orders.cmd.place", queue="orders")
        await client.flush(timeout=5)
        await client.flush(timeout=5)  # only so that the SUB has surely arrived by now
        first_pong_after_connect = recorder.answered[1]
        assert first_pong_after_connect < recorder.commands.index("SUB") + 1
    finally:
        await client.close()
