"""The two Python clients of EventStoreDB / KurrentDB the ``esdb`` backend runs on.

``esdbclient`` is the one the design names and micro depends on; ``kurrentdbclient`` is its
maintained successor (same author, same API lineage, renamed exceptions), used when installed
(``pip install 'micro-es[kurrentdb]'``). Both speak the same gRPC protocol; what differs is the
module, a few names, and the URL schemes each accepts.

They cannot share a process: each registers the same protobuf messages under its own file
names, and the second to load fails. So a process uses one: the one already loaded, else the
one ``MICRO_ESDB_CLIENT`` names, else kurrentdbclient when installed, else esdbclient.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from typing import Any, Literal

from micro.errors import ConfigError

__all__ = ["CLIENTS", "ClientLibrary", "ClientName", "chosen", "installed", "library"]

ClientName = Literal["esdbclient", "kurrentdbclient"]
CLIENTS: tuple[ClientName, ...] = ("kurrentdbclient", "esdbclient")
"""Every client the backend knows, the preferred first."""


@dataclass(frozen=True, slots=True)
class ClientLibrary:
    """What the backend uses of one client library, under one set of names."""

    name: ClientName
    client: Any  # the asyncio client class
    sync_client: Any
    protos: str  # the package of the gRPC stubs it ships
    new_event: Any
    stream_state: Any
    connection_spec: Any
    base_error: type[Exception]
    grpc_error: type[Exception]
    cancelled_by_client: type[Exception]
    deadline_exceeded: type[Exception]
    discovery_failed: type[Exception]
    max_append_size_exceeded: type[Exception]
    not_found: type[Exception]
    service_unavailable: type[Exception]
    wrong_current_version: type[Exception]
    schemes: tuple[str, ...]

    def url(self, url: str) -> str:
        """``url`` with a scheme this client accepts: kurrentdb:// and esdb:// name one thing."""
        scheme, separator, rest = url.partition("://")
        if not separator or scheme.lower() in self.schemes:
            return url
        base, _, discover = scheme.lower().partition("+")
        if base in ("esdb", "kurrentdb"):
            for other in ("esdb", "kurrentdb"):
                candidate = f"{other}+{discover}" if discover else other
                if candidate in self.schemes:
                    return f"{candidate}://{rest}"
        return url


def installed() -> list[ClientName]:
    """The clients that can be imported here, the preferred first."""
    return [name for name in CLIENTS if importlib.util.find_spec(name) is not None]


def chosen() -> ClientName:
    """The client this process uses when none is named."""
    loaded = [name for name in CLIENTS if name in sys.modules]
    if loaded:
        return loaded[0]
    wanted = os.environ.get("MICRO_ESDB_CLIENT")
    if wanted:
        for name in CLIENTS:
            if name == wanted:
                return name
        raise ConfigError(
            f"MICRO_ESDB_CLIENT={wanted!r} is not a client: use one of {', '.join(CLIENTS)}"
        )
    found = installed()
    if not found:
        raise ConfigError("the esdb event store needs esdbclient or kurrentdbclient installed")
    return found[0]


def library(name: ClientName | None = None) -> ClientLibrary:
    """The client named, or the one this process uses."""
    if name is None:
        name = chosen()
    if name not in CLIENTS:
        raise ConfigError(f"unknown EventStoreDB client {name!r}: use one of {', '.join(CLIENTS)}")
    if importlib.util.find_spec(name) is None:
        extra = "micro-es[kurrentdb]" if name == "kurrentdbclient" else name
        raise ConfigError(
            f"the esdb store was asked for {name}, not installed: pip install {extra!r}"
        )
    other = [loaded for loaded in CLIENTS if loaded != name and loaded in sys.modules]
    if other:
        raise ConfigError(
            f"cannot use {name} in a process that loaded {other[0]}: their protobuf "
            "modules clash (set MICRO_ESDB_CLIENT to choose one)"
        )
    if name == "kurrentdbclient":
        return _kurrentdbclient()
    return _esdbclient()


def _esdbclient() -> ClientLibrary:
    package = importlib.import_module("esdbclient")
    errors = importlib.import_module("esdbclient.exceptions")
    spec = importlib.import_module("esdbclient.connection_spec")
    return ClientLibrary(
        name="esdbclient",
        client=package.AsyncEventStoreDBClient,
        sync_client=package.EventStoreDBClient,
        protos="esdbclient.protos.Grpc",
        new_event=package.NewEvent,
        stream_state=package.StreamState,
        connection_spec=spec.ConnectionSpec,
        base_error=errors.EventStoreDBClientException,
        grpc_error=errors.GrpcError,
        cancelled_by_client=errors.CancelledByClient,
        deadline_exceeded=errors.DeadlineExceeded,
        discovery_failed=errors.DiscoveryFailed,
        max_append_size_exceeded=errors.MaximumAppendSizeExceededError,
        not_found=errors.NotFound,
        service_unavailable=errors.ServiceUnavailable,
        wrong_current_version=errors.WrongCurrentVersion,
        schemes=("esdb", "esdb+discover"),
    )


def _kurrentdbclient() -> ClientLibrary:
    package = importlib.import_module("kurrentdbclient")
    errors = importlib.import_module("kurrentdbclient.exceptions")
    spec = importlib.import_module("kurrentdbclient.connection_spec")
    return ClientLibrary(
        name="kurrentdbclient",
        client=package.AsyncKurrentDBClient,
        sync_client=package.KurrentDBClient,
        # Where its stubs live moved between releases.
        protos=next(
            name
            for name in ("kurrentdbclient.protos.v1", "kurrentdbclient.protos.Grpc")
            if importlib.util.find_spec(name) is not None
        ),
        new_event=package.NewEvent,
        stream_state=package.StreamState,
        connection_spec=spec.ConnectionSpec,
        base_error=errors.KurrentDBClientError,
        grpc_error=errors.GrpcError,
        cancelled_by_client=errors.CancelledByClientError,
        deadline_exceeded=errors.DeadlineExceededError,
        discovery_failed=errors.DiscoveryFailedError,
        max_append_size_exceeded=errors.MaximumAppendSizeExceededError,
        not_found=errors.NotFoundError,
        service_unavailable=errors.ServiceUnavailableError,
        wrong_current_version=errors.WrongCurrentVersionError,
        schemes=tuple(spec.URI_SCHEMES_ALL),
    )
