"""The NATS Services API (ADR-32): every serving Micro answers ``$SRV.PING|INFO|STATS``.

Standard NATS tooling (``nats micro ls``, nats.js ``@nats-io/services``) then sees micro
services like any other: the service name, version, description and metadata come from the
settings, each command (or view) is an endpoint whose subject is its real command subject and
whose queue group is the service name. Endpoint metadata carries what ADR-32 has no field
for: the command's real name (ADR-32 endpoint names allow only ``[A-Za-z0-9_-]``), its kind,
and the JSON Schemas of its request and reply when the handler is typed.

The ``$SRV`` subjects are not namespaced (ADR-32 fixes them), so the namespace travels in
the service metadata under ``micro.namespace``; ``micro.discovery`` filters on it.

Two additions stay outside what ADR-32 tools see. An ``INFO`` request whose body is
``{"schemas": false}`` gets the answer without the JSON Schemas (micro's own polling asks
so; the schemas of an instance never change, so a follower fetches them once); an empty
body, as every ADR-32 client sends, gets the full answer. And an instance announces its
start and stop on ``<namespace>.srv.started|stopped`` (see ``announce``), so a follower of
discovery needs no polling round to see either.

Nothing here runs per command request: STATS reads the counters the responder keeps anyway.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.nuid import NUID

from micro.bus.endpoint import Endpoint
from micro.bus.responder import Responder
from micro.bus.subjects import (
    SERVICE_VERBS,
    announce_subject,
    endpoint_name,
    service_subscriptions,
)
from micro.settings import Settings

__all__ = [
    "COMMAND_KEY",
    "IDEMPOTENT_KEY",
    "INFO_RESPONSE",
    "KIND_KEY",
    "NAMESPACE_KEY",
    "PING_RESPONSE",
    "REPLY_SCHEMA_KEY",
    "REQUEST_SCHEMA_KEY",
    "STATS_RESPONSE",
    "ServiceResponder",
    "endpoint_metadata",
    "new_instance_id",
]

_log = structlog.get_logger("micro.services")

PING_RESPONSE = "io.nats.micro.v1.ping_response"
INFO_RESPONSE = "io.nats.micro.v1.info_response"
STATS_RESPONSE = "io.nats.micro.v1.stats_response"

NAMESPACE_KEY = "micro.namespace"
"""Service metadata: the namespace whose subjects the service's endpoints live under."""
COMMAND_KEY = "micro.command"
"""Endpoint metadata: the command's real name, as ``act`` takes it."""
KIND_KEY = "micro.kind"
"""Endpoint metadata: ``command`` or ``view``."""
REQUEST_SCHEMA_KEY = "micro.request_schema"
"""Endpoint metadata: JSON Schema of the request, as a JSON string; absent when untyped."""
REPLY_SCHEMA_KEY = "micro.reply_schema"
"""Endpoint metadata: JSON Schema of the reply, as a JSON string; absent when untyped."""
IDEMPOTENT_KEY = "micro.idempotent"
"""Endpoint metadata: ``true`` when the command may safely be retried."""


def endpoint_metadata(endpoint: Endpoint) -> dict[str, str]:
    """The ADR-32 metadata of one endpoint (ADR-32 metadata values are strings)."""
    metadata = dict(endpoint.metadata)
    metadata[COMMAND_KEY] = endpoint.name
    metadata[KIND_KEY] = endpoint.kind
    if endpoint.description:
        metadata["micro.description"] = endpoint.description
    if endpoint.idempotent:
        metadata[IDEMPOTENT_KEY] = "true"
    request = endpoint.request_schema()
    if request is not None:
        metadata[REQUEST_SCHEMA_KEY] = orjson.dumps(request).decode()
    reply = endpoint.reply_schema()
    if reply is not None:
        metadata[REPLY_SCHEMA_KEY] = orjson.dumps(reply).decode()
    return metadata


_SCHEMA_KEYS = frozenset({REQUEST_SCHEMA_KEY, REPLY_SCHEMA_KEY})


def _wants_schemas(body: bytes) -> bool:
    # ADR-32 requests carry an empty body (nats CLI, nats.js): they get the full answer.
    if not body:
        return True
    try:
        options = orjson.loads(body)
    except orjson.JSONDecodeError:
        return True
    return not (isinstance(options, dict) and options.get("schemas") is False)


def new_instance_id() -> str:
    """A unique id for one service instance (a NUID, as the NATS clients use)."""
    return NUID().next().decode()


def _timestamp(moment: datetime) -> str:
    # RFC 3339 in UTC with a fractional part: what nats.go, nats.js and nats.py all parse.
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ServiceResponder:
    """Answers ``$SRV`` requests for the endpoints one ``Responder`` serves."""

    def __init__(
        self,
        client: Client,
        settings: Settings,
        responder: Responder,
        *,
        instance_id: str | None = None,
        serving: Callable[[], bool] | None = None,
        lag: Callable[[], Awaitable[int | None]] | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.responder = responder
        self._serving = serving or (lambda: bool(responder.served))
        """Whether to answer at all: a Micro that serves nothing is a client, not a service."""
        self._lag = lag
        """How many events the service's models are behind the store (``None``: no models)."""
        self.id = instance_id or new_instance_id()
        self.started = datetime.now(UTC)
        self.metadata = {**settings.metadata, NAMESPACE_KEY: settings.namespace}
        self._subscriptions: list[Subscription] = []
        # Schemas are costly to build and never change once an endpoint is served.
        self._endpoint_metadata: dict[str, dict[str, str]] = {}

    async def start(self) -> None:
        """Subscribe to the ``$SRV`` subjects of this instance (no flush: the caller does)."""
        if self._subscriptions:
            return
        for subject in service_subscriptions(self.settings.service, self.id):
            self._subscriptions.append(await self.client.subscribe(subject, cb=self._on_request))

    async def stop(self) -> None:
        """Stop answering, so discovery no longer lists an instance that is going away."""
        subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    def _identity(self, kind: str) -> dict[str, Any]:
        return {
            "type": kind,
            "name": self.settings.service,
            "id": self.id,
            "version": self.settings.version,
            "metadata": self.metadata,
        }

    def ping(self) -> dict[str, Any]:
        """The ``io.nats.micro.v1.ping_response`` of this instance."""
        return self._identity(PING_RESPONSE)

    def info(self, *, schemas: bool = True) -> dict[str, Any]:
        """The ``io.nats.micro.v1.info_response`` of this instance (``schemas=False``: the
        endpoints' metadata without their JSON Schemas, the bulk of an answer)."""
        endpoints = []
        for name, served in list(self.responder.served.items()):
            metadata = self._endpoint_metadata.get(name)
            if metadata is None:
                metadata = self._endpoint_metadata[name] = endpoint_metadata(served.endpoint)
            if not schemas:
                metadata = {k: v for k, v in metadata.items() if k not in _SCHEMA_KEYS}
            endpoints.append(
                {
                    "name": endpoint_name(name),
                    "subject": served.subject,
                    "queue_group": self.settings.service,
                    "metadata": metadata,
                }
            )
        return {
            **self._identity(INFO_RESPONSE),
            "description": self.settings.description,
            "endpoints": endpoints,
        }

    def stats(self, lag: int | None = None) -> dict[str, Any]:
        """The ``io.nats.micro.v1.stats_response`` of this instance: real counters.

        Each endpoint's ``data`` (free-form in ADR-32) holds its latency percentiles
        (``p50_ms``, ``p90_ms``, ``p99_ms``), its errors by code, and ``lag``: the events
        the service's models are behind the store, when it has models.
        """
        endpoints = []
        for name, served in list(self.responder.served.items()):
            stats = served.stats
            data: dict[str, Any] = {
                **stats.latency.summary(),
                "errors_by_code": dict(stats.errors_by_code),
                "in_flight": self.responder.in_flight,
            }
            if lag is not None:
                data["lag"] = lag
            endpoints.append(
                {
                    "name": endpoint_name(name),
                    "subject": served.subject,
                    "queue_group": self.settings.service,
                    "num_requests": stats.requests,
                    "num_errors": stats.errors,
                    "last_error": stats.last_error,
                    "processing_time": stats.processing_time_ns,
                    "average_processing_time": stats.average_ns,
                    "data": data,
                }
            )
        return {
            **self._identity(STATS_RESPONSE),
            "started": _timestamp(self.started),
            "endpoints": endpoints,
        }

    async def announce(self, event: str) -> None:
        """Tell followers of discovery that this instance ``started`` or ``stopped``."""
        if self._serving():
            await self.client.publish(
                announce_subject(self.settings.namespace, event), orjson.dumps(self.ping())
            )

    async def _on_request(self, msg: Msg) -> None:
        # Subjects are $SRV.<VERB>[.<name>[.<id>]]; the subscriptions fix the rest, so only
        # the verb can be wrong. Unknown verbs and requests without an inbox get no answer;
        # the body is read only by INFO, and anything but {"schemas": false} means the
        # full answer, so no body can make this fail.
        if not msg.reply or not self._serving():
            return
        verb = msg.subject.split(".", 2)[1] if msg.subject.count(".") >= 1 else ""
        if verb not in SERVICE_VERBS:
            return
        try:
            if verb == "PING":
                body = self.ping()
            elif verb == "INFO":
                body = self.info(schemas=_wants_schemas(msg.data))
            else:
                body = self.stats(await self._lag() if self._lag is not None else None)
            await self.client.publish(msg.reply, orjson.dumps(body))
        except Exception:
            # A discovery answer that cannot be built must never take the service down.
            _log.exception("cannot answer a $SRV request", subject=msg.subject)
