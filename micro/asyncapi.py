"""The AsyncAPI 3.0 document of the services running in a namespace, from live discovery.

Each command and view is a channel (its NATS subject) with a request/reply operation: the
request message carries the JSON Schema its service published, the reply goes to the
caller's inbox (a channel with no fixed address) as the reply or as the error envelope.
Served by the gateway at ``/asyncapi.json`` (``micro.gateway.asyncapi``) and printed by
``micro asyncapi``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from micro._schemas import ERROR_SCHEMA, hoist
from micro.bus.responder import FALLBACK_KIND
from micro.bus.subjects import encode_name
from micro.discovery import EndpointRecord, ServiceRecord

__all__ = ["build_asyncapi"]

_HEADERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "Micro-Trace-Id": {"type": "string", "description": "the trace this call is part of"},
        "Micro-Span-Id": {"type": "string"},
        "Micro-Parent-Span": {"type": "string"},
        "Micro-Deadline": {
            "type": "string",
            "pattern": "^[0-9]+$",
            "description": "absolute deadline, epoch milliseconds",
        },
        "Micro-Meta": {
            "type": "string",
            "description": "JSON object propagated to child calls (the auth token lives here)",
        },
        "Micro-Idempotency-Key": {"type": "string"},
        "Micro-Caller": {"type": "string"},
        "Micro-Min-Position": {"type": "string", "pattern": "^[0-9]+$"},
    },
}

_ERROR_HEADERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "Nats-Service-Error": {"type": "string"},
        "Nats-Service-Error-Code": {"type": "string", "description": "an HTTP-like status"},
    },
}


def _key(name: str) -> str:
    # Component keys allow letters, digits, '.', '-' and '_'; the subject token is
    # reversible and '~' (its escape) never meets a '.' of its own.
    return encode_name(name).replace("~", ".")


def _endpoints(records: list[ServiceRecord]) -> list[tuple[ServiceRecord, EndpointRecord]]:
    seen: dict[str, tuple[ServiceRecord, EndpointRecord]] = {}
    for record in sorted(records, key=lambda r: (r.service, r.id)):
        for endpoint in record.endpoints:
            if endpoint.kind == FALLBACK_KIND:
                continue  # callers never address it: it answers commands nobody serves
            seen.setdefault(endpoint.name, (record, endpoint))
    return [seen[name] for name in sorted(seen)]


def _server(url: str | None) -> dict[str, Any]:
    if not url:
        return {}
    first = url.split(",")[0].strip()
    parts = urlsplit(first if "://" in first else f"nats://{first}")
    host = parts.hostname or "127.0.0.1"
    return {
        "nats": {
            "host": f"{host}:{parts.port or 4222}",
            "protocol": "nats",
            "description": "the NATS server the services were discovered on",
        }
    }


def build_asyncapi(
    records: list[ServiceRecord],
    *,
    title: str,
    version: str,
    namespace: str,
    nats_url: str | None = None,
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of every command and view in ``records``."""
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
    messages: dict[str, Any] = {
        "Error": {
            "name": "Error",
            "title": "An error reply",
            "summary": "the typed error the service raised; act() raises it again",
            "headers": _ERROR_HEADERS,
            "payload": {"$ref": "#/components/schemas/Error"},
        }
    }
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for record, endpoint in _endpoints(records):
        key = _key(endpoint.name)
        description = endpoint.metadata.get("micro.description", "")
        request = hoist(endpoint.request_schema or {}, key, schemas)
        reply = hoist(endpoint.reply_schema or {}, f"{key}.reply", schemas)
        messages[f"{key}.request"] = {
            "name": f"{key}.request",
            "title": f"{endpoint.name} request",
            "headers": _HEADERS,
            "payload": request,
        }
        messages[f"{key}.reply"] = {
            "name": f"{key}.reply",
            "title": f"{endpoint.name} reply",
            "payload": reply,
        }
        channels[key] = {
            "address": endpoint.subject,
            "title": endpoint.name,
            "description": description or f"{endpoint.kind} of service {record.service}",
            "messages": {"request": {"$ref": f"#/components/messages/{key}.request"}},
        }
        channels[f"{key}.reply"] = {
            "address": None,
            "description": f"the caller's inbox for replies to {endpoint.name}",
            "messages": {
                "reply": {"$ref": f"#/components/messages/{key}.reply"},
                "error": {"$ref": "#/components/messages/Error"},
            },
        }
        operation: dict[str, Any] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{key}"},
            "title": endpoint.name,
            "summary": description or endpoint.name,
            "tags": [{"name": record.service}, {"name": endpoint.kind}],
            "messages": [{"$ref": f"#/channels/{key}/messages/request"}],
            "reply": {
                "address": {
                    "location": "$message.header#/reply_to",
                    "description": "the request's NATS reply subject",
                },
                "channel": {"$ref": f"#/channels/{key}.reply"},
                "messages": [
                    {"$ref": f"#/channels/{key}.reply/messages/reply"},
                    {"$ref": f"#/channels/{key}.reply/messages/error"},
                ],
            },
        }
        if endpoint.queue_group:
            operation["bindings"] = {
                "nats": {"queue": endpoint.queue_group, "bindingVersion": "0.1.0"}
            }
        operations[key] = operation
    services = sorted({record.service for record in records})
    document: dict[str, Any] = {
        "asyncapi": "3.0.0",
        "info": {
            "title": title,
            "version": version,
            "description": f"The commands and views of namespace `{namespace}` "
            f"({', '.join(services) or 'no services running'}), as discovery saw them. "
            "Requests and replies are JSON; errors carry the Nats-Service-Error headers.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }
    servers = _server(nats_url)
    if servers:
        document["servers"] = servers
    return document
