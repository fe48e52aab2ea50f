"""A TCP forwarder from a listening socket it inherits to one address, run as a script.

The partition rig starts it inside a node's network namespace (``ip netns exec``) with a
socket the test process bound on 127.0.0.1 in its own namespace: the listening socket
stays where it was made, the connections it opens are made where the forwarder runs. So
a test reaches every node from loopback while the nodes' addresses exist only inside the
rig's namespaces.

    python _tcp_proxy.py <listening fd> <host> <port>
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys

_CHUNK = 64 * 1024


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(_CHUNK):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def _serve(listener: socket.socket, host: str, port: int) -> None:
    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), 5
            )
        except (OSError, TimeoutError):
            writer.close()
            return
        # Either side closing closes both: a killed node is a closed connection to the client.
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    server = await asyncio.start_server(forward, sock=listener)
    async with server:
        await server.serve_forever()


def main() -> None:
    fd, host, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    listener = socket.socket(fileno=fd)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(listener, host, port))


if __name__ == "__main__":
    main()
