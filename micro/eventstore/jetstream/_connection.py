"""The store's own connection, for a store given a URL rather than a service's client.

It is opened by the same helper as every other connection micro opens
(``micro.bus.nats_client.open_client``): the same TLS, credentials and inbox prefix, and an
error that names the server, never a password.
"""

from __future__ import annotations

from nats.aio.client import Client

from micro.bus.nats_client import ConnectOptions, open_client
from micro.errors import EventStoreUnavailableError

__all__ = ["connect"]


async def connect(url: str, options: ConnectOptions) -> Client:
    """A connection of the store's own, or ``EventStoreUnavailableError`` naming the server."""
    return await open_client(
        url,
        options,
        name="micro-eventstore",
        connect_timeout=2.0,
        unavailable=EventStoreUnavailableError,
        # as a service's own connection (Settings.ping_interval): a silent cut is noticed
        # within three pings, not nats-py's six minutes
        ping_interval=5.0,
    )
