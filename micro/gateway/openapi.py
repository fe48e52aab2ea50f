"""The OpenAPI 3.1 document of a route table, built from the schemas in discovery.

Pydantic's schemas keep nested types under ``$defs`` with ``#/$defs/...`` references; those
only resolve against the schema's own root, so each is moved to ``components/schemas``
under a name prefixed by its operation and every reference is rewritten to match.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from micro.gateway.payloads import properties
from micro.gateway.routes import Operation

if TYPE_CHECKING:
    from micro.gateway.fanout import FanOut

__all__ = ["ERROR_SCHEMA", "ERROR_STATUSES", "build_openapi"]

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {"type": "object"},
                "retryable": {"type": "boolean"},
                "trace_id": {"type": ["string", "null"]},
            },
        }
    },
}

ERROR_STATUSES: dict[str, str] = {
    "400": "the request or its payload is invalid (details.fields lists each bad field)",
    "401": "no valid credentials",
    "403": "the credentials lack a role",
    "404": "not found",
    "409": "conflicts with the current state",
    "413": "the body is too large",
    "415": "the body is not JSON",
    "422": "a rule refused the command",
    "429": "too many requests in flight at the gateway (see Retry-After)",
    "500": "an internal error (no internals are shown)",
    "503": "the service is not running or is overloaded (see Retry-After)",
    "504": "no reply before the deadline",
}

_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def _hoist(schema: dict[str, Any], prefix: str, components: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``$defs`` moved into ``components`` and references rewritten."""
    schema = copy.deepcopy(schema)
    definitions = schema.pop("$defs", None) or {}
    schema.pop("$schema", None)
    renamed = {name: f"{prefix}.{_NAME.sub('_', name)}" for name in definitions}

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                target = renamed.get(ref.removeprefix("#/$defs/"))
                if target is not None:
                    node = {**node, "$ref": f"#/components/schemas/{target}"}
            return {key: rewrite(value) for key, value in node.items()}
        if isinstance(node, list):
            return [rewrite(item) for item in node]
        return node

    for name, definition in definitions.items():
        components[renamed[name]] = rewrite(definition)
    rewritten: dict[str, Any] = rewrite(schema)
    return rewritten


def _without(schema: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """An object schema with the fields that travel as path parameters taken out."""
    if not names or not isinstance(schema.get("properties"), dict):
        return schema
    schema = dict(schema)
    schema["properties"] = {k: v for k, v in schema["properties"].items() if k not in names}
    if isinstance(schema.get("required"), list):
        schema["required"] = [k for k in schema["required"] if k not in names]
        if not schema["required"]:
            del schema["required"]
    return schema


def _operation(operation: Operation, components: dict[str, Any]) -> dict[str, Any]:
    prefix = _NAME.sub("_", operation.operation_id)
    request = _hoist(operation.request_schema or {}, prefix, components)
    fields, required = properties(request)
    parameters: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": fields.get(name) or {"type": "string"},
        }
        for name in operation.parameters
    ]
    spec: dict[str, Any] = {
        "operationId": operation.operation_id,
        "summary": operation.description or operation.command,
        "description": f"{operation.kind} `{operation.command}` of service `{operation.service}`",
        "tags": [operation.service],
        "x-micro-command": operation.command,
        "x-micro-kind": operation.kind,
    }
    if operation.method == "GET":
        for name, schema in fields.items():
            if name in operation.parameters:
                continue
            parameter: dict[str, Any] = {"name": name, "in": "query", "required": name in required}
            if _is_structured(schema, request):
                parameter["content"] = {"application/json": {"schema": schema}}
            else:
                parameter["schema"] = schema
            parameters.append(parameter)
    else:
        spec["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": _without(request, operation.parameters)}},
        }
    parameters.append(
        {
            "name": "min_position",
            "in": "query",
            "required": False,
            "description": "answer once the serving instance has applied this event position "
            "(the X-Micro-Position of an earlier reply): read your own writes, or decide a "
            "command after the one it depends on",
            "schema": {"type": "integer", "minimum": 0},
        }
    )
    if parameters:
        spec["parameters"] = parameters
    reply = _hoist(operation.reply_schema or {}, prefix + ".reply", components)
    success: dict[str, Any] = {
        "description": "the reply",
        "content": {"application/json": {"schema": reply}},
    }
    if operation.kind == "command":
        success["headers"] = {
            "X-Micro-Position": {
                "description": "position of the last event the command appended; pass it "
                "as min_position to a view to read your own write",
                "required": False,
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
            }
        }
    spec["responses"] = {"200": success} | {
        status: {"$ref": f"#/components/responses/Error{status}"}
        for status in ERROR_STATUSES
        if status != "415" or operation.method != "GET"
    }
    return spec


def _is_structured(schema: Any, root: dict[str, Any]) -> bool:
    if not isinstance(schema, dict):
        return False
    kind = schema.get("type")
    return kind in ("object",) or "$ref" in schema or "allOf" in schema


def _fan_out(fan_out: FanOut) -> dict[str, Any]:
    outcome = {
        "oneOf": [
            {
                "type": "object",
                "properties": {"status": {"const": 200}, "result": {}},
                "required": ["status", "result"],
            },
            {
                "type": "object",
                "properties": {
                    "status": {"type": "integer"},
                    "error": ERROR_SCHEMA["properties"]["error"],
                },
                "required": ["status", "error"],
            },
        ]
    }
    composite = {
        "type": "object",
        "properties": dict.fromkeys(fan_out.calls, outcome),
        "required": list(fan_out.calls),
    }
    calls = ", ".join(f"`{key}`: `{command}`" for key, command in fan_out.calls.items())
    return {
        "operationId": fan_out.operation().operation_id,
        "summary": fan_out.summary or f"Calls {len(fan_out.calls)} commands at once",
        "description": f"Fan-out to {calls}, concurrently, each with its own deadline.",
        "x-micro-kind": "fan-out",
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in fan_out.parameters
        ],
        "responses": {
            "200": {
                "description": "Every call succeeded",
                "content": {"application/json": {"schema": composite}},
            },
            "207": {
                "description": "Some calls failed: each key holds its own status",
                "content": {"application/json": {"schema": composite}},
            },
            "400": {"$ref": "#/components/responses/Error400"},
        },
    }


def build_openapi(
    operations: list[Operation],
    *,
    title: str,
    version: str,
    description: str = "",
    fan_outs: Sequence[FanOut] = (),
) -> dict[str, Any]:
    """The OpenAPI 3.1 document describing ``operations`` (and ``fan_outs``)."""
    components: dict[str, Any] = {"Error": ERROR_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for operation in operations:
        paths.setdefault(operation.path, {})[operation.method.lower()] = _operation(
            operation, components
        )
    for fan_out in fan_outs:
        paths.setdefault(fan_out.path, {})[fan_out.method.lower()] = _fan_out(fan_out)
    responses = {
        f"Error{status}": {
            "description": text,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for status, text in ERROR_STATUSES.items()
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": components,
            "responses": responses,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{}, {"bearer": []}],
    }
