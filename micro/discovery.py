"""Finding services: the Python client of the NATS Services API (ADR-32).

A request to ``$SRV.INFO`` (or ``$SRV.INFO.<name>``) is answered by every running instance,
so replies are gathered on a fresh inbox for a short window. Each reply becomes a
``ServiceRecord``: one per instance, with its endpoints and their schemas, and with
statistics when asked for. Services of other namespaces (and non-micro services) are left out
unless asked for, because ``$SRV`` subjects are shared by everyone on the NATS server.

Usage::

    async with Micro() as micro:
        for record in await micro.services(stats=True):
            print(record.service, record.version, [e.name for e in record.endpoints])
        await micro.discover(wait_for=["bank", "auth"], timeout=10)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import orjson
import pydantic
from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeoutError
from pydantic import BaseModel, ConfigDict, Field

from micro.bus.services import (
    COMMAND_KEY,
    IDEMPOTENT_KEY,
    INFO_RESPONSE,
    KIND_KEY,
    NAMESPACE_KEY,
    REPLY_SCHEMA_KEY,
    REQUEST_SCHEMA_KEY,
    STATS_RESPONSE,
)
from micro.bus.subjects import service_subject
from micro.errors import DiscoveryTimeoutError, ValidationError

__all__ = [
    "DEFAULT_WINDOW",
    "EndpointRecord",
    "EndpointStatsRecord",
    "ServiceRecord",
    "discover",
    "group_by_service",
    "list_services",
]

DEFAULT_WINDOW = 0.25
"""Seconds replies to one ``$SRV`` request are gathered for."""


class EndpointStatsRecord(BaseModel):
    """What ``$SRV.STATS`` says about one endpoint of one instance."""

    model_config = ConfigDict(frozen=True)

    requests: int = 0
    errors: int = 0
    processing_time_ns: int = 0
    average_processing_time_ns: int = 0
    last_error: str = ""
    data: dict[str, Any] = Field(default_factory=dict)
    """ADR-32's free-form ``data``: micro puts latency percentiles, errors by code and lag."""


class EndpointRecord(BaseModel):
    """One endpoint of a service instance, as its ``$SRV.INFO`` describes it."""

    model_config = ConfigDict(frozen=True)

    name: str
    """The command name, as ``act`` takes it (the ADR-32 name for non-micro services)."""
    endpoint: str
    """The ADR-32 endpoint name."""
    subject: str
    queue_group: str = ""
    kind: str = "command"
    idempotent: bool = False
    request_schema: dict[str, Any] | None = None
    reply_schema: dict[str, Any] | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    stats: EndpointStatsRecord | None = None


class ServiceRecord(BaseModel):
    """One running instance of a service."""

    model_config = ConfigDict(frozen=True)

    service: str
    id: str
    version: str
    description: str = ""
    namespace: str | None = None
    """``None`` for services that are not micro services."""
    metadata: dict[str, str] = Field(default_factory=dict)
    endpoints: list[EndpointRecord] = Field(default_factory=list)
    started: datetime | None = None
    """When the instance started; known only when statistics were asked for."""

    def endpoint(self, name: str) -> EndpointRecord | None:
        """The endpoint serving command ``name``, if this instance has it."""
        return next((endpoint for endpoint in self.endpoints if endpoint.name == name), None)


def group_by_service(records: Iterable[ServiceRecord]) -> dict[str, list[ServiceRecord]]:
    """Instances grouped by service name, names sorted."""
    groups: dict[str, list[ServiceRecord]] = {}
    for record in sorted(records, key=lambda record: (record.service, record.id)):
        groups.setdefault(record.service, []).append(record)
    return groups


# -- reading replies (untrusted input: anything that does not fit is skipped) ----------------


def _strings(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(key): str(item) for key, item in value.items() if item is not None}


def _schema(metadata: dict[str, str], key: str) -> dict[str, Any] | None:
    raw = metadata.get(key)
    if raw is None:
        return None
    try:
        schema = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return schema if isinstance(schema, dict) else None


def _endpoint(data: Any, stats: dict[str, EndpointStatsRecord]) -> EndpointRecord | None:
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    metadata = _strings(data.get("metadata"))
    subject = str(data.get("subject") or data["name"])
    return EndpointRecord(
        name=metadata.get(COMMAND_KEY, data["name"]),
        endpoint=data["name"],
        subject=subject,
        queue_group=str(data.get("queue_group") or ""),
        kind=metadata.get(KIND_KEY, "command"),
        idempotent=metadata.get(IDEMPOTENT_KEY) == "true",
        request_schema=_schema(metadata, REQUEST_SCHEMA_KEY),
        reply_schema=_schema(metadata, REPLY_SCHEMA_KEY),
        metadata=metadata,
        stats=stats.get(subject),
    )


def _endpoint_stats(data: Any) -> tuple[str, EndpointStatsRecord] | None:
    if not isinstance(data, dict) or not isinstance(data.get("subject"), str):
        return None
    try:
        record = EndpointStatsRecord(
            requests=data.get("num_requests") or 0,
            errors=data.get("num_errors") or 0,
            processing_time_ns=data.get("processing_time") or 0,
            average_processing_time_ns=data.get("average_processing_time") or 0,
            last_error=data.get("last_error") or "",
            data=data.get("data") if isinstance(data.get("data"), dict) else {},
        )
    except pydantic.ValidationError:
        return None
    return data["subject"], record


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _started(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _service(info: dict[str, Any], stats: dict[str, Any] | None) -> ServiceRecord | None:
    endpoint_stats: dict[str, EndpointStatsRecord] = {}
    started = None
    if stats is not None:
        for item in _items(stats.get("endpoints")):
            parsed = _endpoint_stats(item)
            if parsed is not None:
                endpoint_stats[parsed[0]] = parsed[1]
        started = _started(stats.get("started"))
    metadata = _strings(info.get("metadata"))
    endpoints = [_endpoint(item, endpoint_stats) for item in _items(info.get("endpoints"))]
    try:
        return ServiceRecord(
            service=info["name"],
            id=info["id"],
            version=info["version"],
            description=info.get("description") or "",
            namespace=metadata.get(NAMESPACE_KEY),
            metadata=metadata,
            endpoints=[endpoint for endpoint in endpoints if endpoint is not None],
            started=started,
        )
    except (KeyError, pydantic.ValidationError):
        return None  # not an ADR-32 answer: someone else's service, or a broken one


# -- asking --------------------------------------------------------------------------------


async def _gather(
    client: Client,
    subject: str,
    kind: str,
    window: float,
    enough: Callable[[list[dict[str, Any]]], bool] | None = None,
) -> list[dict[str, Any]]:
    """The JSON replies of type ``kind`` to one request, gathered on a fresh inbox."""
    inbox = client.new_inbox()
    subscription = await client.subscribe(inbox)
    replies: list[dict[str, Any]] = []
    try:
        await client.publish(subject, b"", reply=inbox)
        deadline = time.monotonic() + window
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = await subscription.next_msg(timeout=left)
            except (NatsTimeoutError, TimeoutError):
                break
            if msg.headers and msg.headers.get("Status") == "503":
                break  # "no responders": nothing subscribes to the subject, nothing will come
            try:
                body = orjson.loads(msg.data)
            except orjson.JSONDecodeError:
                continue
            if isinstance(body, dict) and body.get("type") == kind:
                replies.append(body)
                if enough is not None and enough(replies):
                    break
    finally:
        await subscription.unsubscribe()
    return replies


def _in_namespace(body: dict[str, Any], namespace: str | None) -> bool:
    if namespace is None:
        return True
    metadata = body.get("metadata")
    return isinstance(metadata, dict) and metadata.get(NAMESPACE_KEY) == namespace


async def list_services(
    client: Client,
    *,
    namespace: str | None,
    service: str | None = None,
    stats: bool = False,
    window: float = DEFAULT_WINDOW,
    enough: Callable[[list[ServiceRecord]], bool] | None = None,
) -> list[ServiceRecord]:
    """Every instance that answers ``$SRV.INFO`` within ``window`` seconds.

    ``namespace=None`` keeps services of every namespace and non-micro services too;
    ``service`` asks only the instances of that service; ``stats`` adds ``$SRV.STATS``.
    ``enough`` may end the window early once the records gathered so far suffice.
    """
    _check_positive("window", window)

    def parse(bodies: list[dict[str, Any]]) -> list[ServiceRecord]:
        records = (_service(body, None) for body in bodies if _in_namespace(body, namespace))
        return [record for record in records if record is not None]

    finished = None if enough is None else (lambda bodies: enough(parse(bodies)))
    info_subject = service_subject("INFO", service)
    if not stats:
        return parse(await _gather(client, info_subject, INFO_RESPONSE, window, finished))
    infos, statistics = await asyncio.gather(
        _gather(client, info_subject, INFO_RESPONSE, window),
        _gather(client, service_subject("STATS", service), STATS_RESPONSE, window),
    )
    by_id = {body.get("id"): body for body in statistics}
    records = (
        _service(body, by_id.get(body.get("id")))
        for body in infos
        if _in_namespace(body, namespace)
    )
    return [record for record in records if record is not None]


def _check_positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValidationError(
            f"{name} must be a positive number, not {value!r}",
            details={"fields": [{"field": name, "reason": "not positive"}]},
        )


async def discover(
    client: Client,
    wait_for: str | Iterable[str],
    *,
    namespace: str | None,
    timeout: float = 10.0,
    delay: float = 0.05,
    factor: float = 2.0,
    max_delay: float = 1.0,
    window: float = DEFAULT_WINDOW,
) -> list[ServiceRecord]:
    """Wait until every service in ``wait_for`` has at least one instance.

    Returns the instances seen by the last look (the look ends as soon as every awaited
    service answered, so other instances may be missing from it: ``list_services`` for all).

    Asks ``$SRV.INFO`` again after ``delay`` seconds, the pause growing by ``factor`` up to
    ``max_delay``, until ``timeout``; then raises ``DiscoveryTimeoutError`` naming the
    services still missing.
    """
    wanted = {wait_for} if isinstance(wait_for, str) else set(wait_for)
    for number, name in (("timeout", timeout), ("delay", delay), ("max_delay", max_delay)):
        _check_positive(number, name)
    if isinstance(factor, bool) or not isinstance(factor, int | float) or factor < 1:
        raise ValidationError(
            f"factor must be a number >= 1, not {factor!r}",
            details={"fields": [{"field": "factor", "reason": "below 1"}]},
        )
    if not wanted:
        return await list_services(client, namespace=namespace, window=window)
    deadline = time.monotonic() + timeout
    pause = delay
    missing = sorted(wanted)
    while True:
        left = deadline - time.monotonic()

        def complete(records: list[ServiceRecord]) -> bool:
            return wanted <= {record.service for record in records}

        records = await list_services(
            client,
            namespace=namespace,
            service=next(iter(wanted)) if len(wanted) == 1 else None,
            window=max(0.001, min(window, left)),
            enough=complete,
        )
        missing = sorted(wanted - {record.service for record in records})
        if not missing:
            return records
        left = deadline - time.monotonic()
        if left <= 0:
            break
        await asyncio.sleep(min(pause, left))
        pause = min(max_delay, pause * factor)
    where = f" in namespace {namespace!r}" if namespace is not None else ""
    raise DiscoveryTimeoutError(
        f"services still missing after {timeout:g}s{where}: {', '.join(missing)}",
        details={"missing": missing, "namespace": namespace, "timeout": timeout},
    )
