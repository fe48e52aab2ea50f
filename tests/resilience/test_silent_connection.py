"""A connection whose server falls silent is given up and made again, within pings.

A network cut that drops packets (no reset, no refusal) leaves a TCP connection looking
open. The partition suite found an instance cut off from its node deaf for minutes: nats-py
pings every two minutes by default. A tiny NATS speaker that answers the handshake and then
never again stands in for the cut, so this runs without the partition rig.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from micro.bus.connection import connect
from micro.settings import Settings
from micro.testing import wait_until


class SilentServer:
    """Answers INFO, CONNECT and the client's first PING of each connection, then nothing."""

    def __init__(self) -> None:
        self.connections = 0

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"nats://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        info = {"server_id": "silent", "version": "2.15.1", "proto": 1, "headers": True}
        writer.write(f"INFO {json.dumps(info)}\r\n".encode())
        answered = False
        while line := await reader.readline():
            if line.strip() == b"PING" and not answered:
                answered = True
                writer.write(b"PONG\r\n")
                await writer.drain()
        writer.close()


async def test_a_connection_that_stops_answering_pings_is_made_again(tmp_path: Path) -> None:
    server = SilentServer()
    url = await server.start()
    settings = Settings(nats_url=url, embedded=False, ping_interval=0.2, data_dir=tmp_path)
    client = await connect(settings)  # a TCP probe, then the connection itself
    connected = server.connections
    try:
        await wait_until(
            lambda: server.connections > connected, 5, "a new connection after silence"
        )
    finally:
        await client.close()
        await server.stop()


def test_the_default_ping_interval_notices_a_silent_cut_within_seconds() -> None:
    assert Settings().ping_interval * 3 <= 15
