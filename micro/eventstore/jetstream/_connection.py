"""The store's own connection, for a store given a URL rather than a service's client."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

import nats
from nats.aio.client import Client
from nats.errors import Error as NatsError

from micro.errors import EventStoreUnavailableError
from micro.eventstore.jetstream._api import unavailable

__all__ = ["connect"]


async def connect(url: str) -> Client:
    """A connection of the store's own, or ``EventStoreUnavailableError`` naming the URL."""
    servers = [part.strip() for part in url.split(",") if part.strip()]
    # nats-py keeps retrying a first connection that fails; a TCP probe turns a wrong URL
    # or a stopped server into an immediate, clear error instead.
    refused = await _refusal(servers)
    if refused is not None:
        raise EventStoreUnavailableError(
            f"event store unavailable: nothing accepts connections at {url}: {refused}",
            details={"url": url},
        ) from refused
    try:
        return await asyncio.wait_for(
            nats.connect(
                servers=servers,
                name="micro-eventstore",
                connect_timeout=2,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                pending_size=64 * 1024 * 1024,
            ),
            timeout=5,
        )
    except (TimeoutError, NatsError, OSError) as error:
        raise unavailable(f"cannot connect to NATS at {url}", error) from error


async def _refusal(servers: list[str]) -> OSError | None:
    """None when some server accepts TCP connections, else why the last one did not."""
    refused: OSError = ConnectionRefusedError("no server given")
    for server in servers:
        split = urlsplit(server if "://" in server else f"nats://{server}")
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(split.hostname or "127.0.0.1", split.port or 4222), 2
            )
        except (TimeoutError, OSError) as error:
            refused = error if isinstance(error, OSError) else TimeoutError("no answer in 2s")
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return None
    return refused
