"""Finding services: the Python client of the NATS Services API (ADR-32).

A request to ``$SRV.INFO`` (or ``$SRV.INFO.<name>``) is answered by every running instance,
so replies are gathered on a fresh inbox until they stop coming: a look ends after a quiet
gap (``discovery_gap``), and at the latest at ``discovery_deadline``, in which case the list
says it is ``partial``. A fixed window would cut a large answer short without a sign: at
thousands of instances the answers take longer than any small window. Each reply becomes a
``ServiceRecord``: one per instance, with its endpoints and their schemas, and with
statistics when asked for. Services of other namespaces (and non-micro services) are left out
unless asked for, because ``$SRV`` subjects are shared by everyone on the NATS server.

Usage::

    async with Micro() as micro:
        for record in await micro.services(stats=True):
            print(record.service, record.version, [e.name for e in record.endpoints])
        await micro.discover(wait_for=["bank", "auth"], timeout=10)

A stable view that follows discovery over time is ``micro.directory.Directory``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any

import orjson
import pydantic
from nats.aio.client import Client
from nats.errors import Error as NatsError
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
from micro.errors import ValidationError

__all__ = [
    "DEFAULT_DEADLINE",
    "DEFAULT_GAP",
    "LEAN_INFO_REQUEST",
    "EndpointRecord",
    "EndpointStatsRecord",
    "ServiceList",
    "ServiceRecord",
    "check_positive",
    "group_by_service",
    "list_services",
]

DEFAULT_GAP = 0.3
"""Quiet seconds after the last answer that end a look at discovery (as the ``nats`` CLI)."""
DEFAULT_DEADLINE = 5.0
"""Seconds a look at discovery lasts at most, however long the answers keep coming."""


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


class ServiceList(list[ServiceRecord]):
    """The instances that answered one look, and whether the look saw every answer.

    ``partial`` is true when the deadline ended the look while answers were still arriving:
    more instances may be running than the list holds.
    """

    partial: bool = False

    def __init__(self, records: Iterable[ServiceRecord] = (), *, partial: bool = False) -> None:
        super().__init__(records)
        self.partial = partial


_PAUSE_FACTOR = 2.0


def _paused(last: float | None, quiet: float) -> tuple[float, float]:
    """The time of a reply that just arrived, and the quiet gap widened by the pause before it."""
    now = time.monotonic()
    if last is not None:
        quiet = max(quiet, _PAUSE_FACTOR * (now - last))
    return now, quiet


class _Gathered:
    def __init__(self) -> None:
        self.replies: list[dict[str, Any]] = []
        self.partial = False


async def _gather(
    client: Client,
    subject: str,
    kind: str,
    *,
    gap: float,
    deadline: float,
    body: bytes = b"",
    expected: Collection[str] = (),
    most: int | None = None,
) -> _Gathered:
    """The JSON replies of type ``kind`` to one request, gathered on a fresh inbox.

    The first reply is awaited until ``deadline`` (a busy machine can be slow to start
    answering; with no subscriber at all the server says so at once). After it, reading
    goes on while replies keep coming and ends after ``gap`` quiet seconds, once every id in
    ``expected`` answered (a known instance may answer late), and in any case at
    ``deadline``. A pause between replies longer than half the gap widens the gap to twice
    that pause: on a loaded machine the pauses grow, and the one that ends the look should
    stand out from those before it. Ending at the deadline with no reply yet, or replies
    still coming, is partial.
    """
    inbox = client.new_inbox()
    subscription = await client.subscribe(inbox)
    gathered = _Gathered()
    waiting = set(expected)
    try:
        await client.publish(subject, body, reply=inbox)
        end = time.monotonic() + deadline
        last: float | None = None
        quiet = gap
        while True:
            now = time.monotonic()
            if now >= end:
                # Something subscribes (else "no responders" came) but kept answering, or
                # never answered: either way more may have been on the way.
                gathered.partial = last is None or now - last < quiet
                break
            quiet_until = end if last is None or waiting else last + quiet
            if now >= quiet_until:
                # A stalled reader would take its own stall for a quiet gap: after a round
                # trip to the server, everything sent before it has been read.
                with contextlib.suppress(NatsError, TimeoutError):
                    await client.flush(timeout=max(1, int(end - now + 0.999)))
                if subscription.pending_msgs == 0:
                    break
                last, quiet = _paused(last, quiet)
                continue
            try:
                msg = await subscription.next_msg(timeout=quiet_until - now)
            except (NatsTimeoutError, TimeoutError):
                continue
            if msg.headers and msg.headers.get("Status") == "503":
                break  # "no responders": nothing subscribes to the subject, nothing will come
            last, quiet = _paused(last, quiet)
            try:
                reply = orjson.loads(msg.data)
            except orjson.JSONDecodeError:
                continue
            if isinstance(reply, dict) and reply.get("type") == kind:
                gathered.replies.append(reply)
                waiting.discard(str(reply.get("id")))
                if most is not None and len(gathered.replies) >= most:
                    break
    finally:
        await subscription.unsubscribe()
    return gathered


def _in_namespace(body: dict[str, Any], namespace: str | None) -> bool:
    if namespace is None:
        return True
    metadata = body.get("metadata")
    return isinstance(metadata, dict) and metadata.get(NAMESPACE_KEY) == namespace


LEAN_INFO_REQUEST = orjson.dumps({"schemas": False})
"""The body of an ``$SRV.INFO`` request for answers without the endpoints' JSON Schemas."""


async def list_services(
    client: Client,
    *,
    namespace: str | None,
    service: str | None = None,
    instance: str | None = None,
    stats: bool = False,
    schemas: bool = True,
    gap: float = DEFAULT_GAP,
    deadline: float = DEFAULT_DEADLINE,
    expected: Collection[str] = (),
) -> ServiceList:
    """Every instance that answers ``$SRV.INFO``, gathered until the answers stop.

    ``namespace=None`` keeps services of every namespace and non-micro services too;
    ``service`` asks only the instances of that service (``instance``: only that one of
    them); ``stats`` adds ``$SRV.STATS``;
    ``schemas=False`` asks micro services to leave their endpoints' JSON Schemas out.
    Gathering ends ``gap`` seconds after the last answer (not before every id in
    ``expected`` answered) or at ``deadline``; the result is ``partial`` when the deadline
    cut it short.
    """
    check_positive("gap", gap)
    check_positive("deadline", deadline)
    info_subject = service_subject("INFO", service, instance)
    body = b"" if schemas else LEAN_INFO_REQUEST
    most = 1 if instance is not None else None  # one instance answers once
    if not stats:
        infos = await _gather(
            client,
            info_subject,
            INFO_RESPONSE,
            gap=gap,
            deadline=deadline,
            body=body,
            expected=expected,
            most=most,
        )
        by_id: dict[Any, dict[str, Any]] = {}
        partial = infos.partial
    else:
        infos, statistics = await asyncio.gather(
            _gather(
                client,
                info_subject,
                INFO_RESPONSE,
                gap=gap,
                deadline=deadline,
                body=body,
                expected=expected,
                most=most,
            ),
            _gather(
                client,
                service_subject("STATS", service, instance),
                STATS_RESPONSE,
                gap=gap,
                deadline=deadline,
                most=most,
            ),
        )
        by_id = {reply.get("id"): reply for reply in statistics.replies}
        partial = infos.partial or statistics.partial
    records = (
        _service(reply, by_id.get(reply.get("id")) if stats else None)
        for reply in infos.replies
        if _in_namespace(reply, namespace)
    )
    return ServiceList((record for record in records if record is not None), partial=partial)


def check_positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValidationError(
            f"{name} must be a positive number, not {value!r}",
            details={"fields": [{"field": name, "reason": "not positive"}]},
        )
