"""Event stores: one contract (``EventStore``), three backends chosen by settings.

- ``jetstream`` (default): NATS JetStream, one stream for all events.
- ``esdb``: EventStoreDB / KurrentDB through kurrentdbclient or esdbclient
  (``MICRO_EVENT_STORE_URL``).
- ``memory``: in this process only, for unit tests and throwaway runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from micro.bus.nats_client import ConnectOptions
from micro.errors import ConfigError
from micro.eventstore.base import (
    ANY,
    EXISTS,
    NO_STREAM,
    AppendResult,
    EventStore,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
    StreamState,
)
from micro.eventstore.jetstream import JetStreamEventStore
from micro.eventstore.memory import MemoryEventStore

if TYPE_CHECKING:
    from nats.aio.client import Client

    from micro.settings import Settings

__all__ = [
    "ANY",
    "EXISTS",
    "NO_STREAM",
    "AppendResult",
    "EventStore",
    "ExpectedVersion",
    "JetStreamEventStore",
    "MemoryEventStore",
    "NewEvent",
    "RecordedEvent",
    "StreamState",
    "open_event_store",
]


def open_event_store(settings: Settings, client: Client | None = None) -> EventStore:
    """The event store ``settings`` ask for (not started yet).

    ``client`` is a connected nats-py client to share (JetStream only); without one the
    store connects to ``settings.nats_url`` itself, with the same TLS and credentials as
    every other connection. A JetStream store appends as ``settings.service``
    (``<namespace>.ev.<service>.<stream>``).
    """
    kind = settings.event_store
    if kind == "memory":
        return MemoryEventStore()
    if kind == "esdb":
        if not settings.event_store_url:
            raise ConfigError(
                "MICRO_EVENT_STORE=esdb needs MICRO_EVENT_STORE_URL (esdb://host:2113?Tls=false)"
            )
        # Imported here: the client and grpc are heavy, and only this backend needs them.
        from micro.eventstore.esdb import EsdbEventStore

        return EsdbEventStore(settings.event_store_url)
    if client is None and not settings.nats_url:
        raise ConfigError(
            "the jetstream event store needs a connected client or NATS_URL "
            "(micro.bus.connection.connect resolves the local or embedded server)"
        )
    return JetStreamEventStore(
        client,
        connect_options=None if client is not None else ConnectOptions.from_settings(settings),
        owner=settings.service,
        url=None if client is not None else settings.nats_url,
        namespace=settings.namespace,
        replicas=settings.event_store_replicas,
        duplicate_window=settings.event_store_duplicate_window,
        start_timeout=settings.event_store_start_timeout,
        group_commit=settings.event_store_group_commit == "on"
        or (settings.event_store_group_commit == "auto" and not settings.nats_url),
    )
