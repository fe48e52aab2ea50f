"""Request decoding: credentials, the JSON body, a call's payload and ``min_position``.

Everything a client sends is checked here before anything goes to a service: a bad header,
body or parameter becomes a typed error that names the field and the reason.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.datastructures import QueryParams
from starlette.requests import HTTPConnection, Request

from micro._numbers import parse_non_negative_int
from micro.errors import (
    BadRequestError,
    PayloadTooLargeError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
    ValidationError,
)
from micro.gateway.payloads import coerce, validate
from micro.gateway.routes import Operation

__all__ = [
    "RESERVED_QUERY",
    "bearer_meta",
    "bearer_token",
    "check_length",
    "json_body",
    "parse_min_position",
    "position_field",
    "read_body",
    "request_payload",
]

RESERVED_QUERY = frozenset({"min_position", "access_token"})
"""Query parameters the gateway reads itself; they never reach a view's payload."""


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header (``None`` without the header)."""
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip() or " " in value.strip():
        raise UnauthorizedError("the Authorization header must be 'Bearer <token>'")
    return value.strip()


def bearer_meta(request: HTTPConnection, *, query_token: bool = False) -> dict[str, Any]:
    """The call's meta: ``{"token": ...}`` from ``Authorization: Bearer``, else empty."""
    header = request.headers.get("authorization")
    token = bearer_token(header)
    if header is None and query_token:
        # EventSource cannot send headers: the feed also takes ?access_token=.
        token = request.query_params.get("access_token") or None
    return {"token": token} if token else {}


def check_length(length: str | None, limit: int) -> None:
    """Refuse a declared ``Content-Length`` that is not a number or is over ``limit``."""
    if length is not None:
        declared = parse_non_negative_int(length)
        if declared is None:
            raise BadRequestError("Content-Length is not a number")
        if declared > limit:
            raise PayloadTooLargeError(
                f"the body is {declared} bytes; the limit is {limit}",
                details={"limit": limit, "size": declared},
            )


async def read_body(request: Request, limit: int) -> Any:
    """The JSON body (``{}`` when empty), refused over ``limit`` bytes or when not JSON."""
    check_length(request.headers.get("content-length"), limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(
                f"the body is over the limit of {limit} bytes", details={"limit": limit}
            )
        chunks.append(chunk)
    return json_body(b"".join(chunks), request.headers.get("content-type", ""))


def json_body(data: bytes, content_type: str) -> Any:
    """A request body read as JSON (``{}`` when empty); refused unless typed as JSON."""
    if not data.strip():
        return {}
    kind = content_type.split(";")[0].strip().lower()
    if kind != "application/json" and not (
        kind.startswith("application/") and kind.endswith("+json")
    ):
        raise UnsupportedMediaTypeError(
            f"the body must be application/json, not {kind or 'untyped'}",
            details={"content_type": kind},
        )
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise BadRequestError(
            f"the body is not valid JSON: {error}",
            details={"fields": [{"field": "body", "reason": str(error)}]},
        ) from None


def request_payload(
    query: QueryParams, operation: Operation, parameters: dict[str, str], body: Any
) -> Any:
    """The payload sent to the service: query or body, plus path parameters, validated."""
    schema = operation.request_schema
    if operation.method == "GET" or operation.method == "DELETE":
        values: dict[str, list[str]] = {}
        for key, value in query.multi_items():
            if key not in RESERVED_QUERY:
                values.setdefault(key, []).append(value)
        payload: Any = coerce(values, schema)
    else:
        payload = body
    if parameters:
        if not isinstance(payload, dict):
            raise ValidationError(
                "the body must be a JSON object on a route with path parameters",
                details={"fields": [{"field": "payload", "reason": "not an object"}]},
            )
        payload = {**payload, **coerce({k: [v] for k, v in parameters.items()}, schema)}
    validate(operation.command, schema, payload)
    return payload


def position_field(field: str, text: str | None, *, what: str | None = None) -> int | None:
    """An event position sent as text (``None`` when absent), else ``ValidationError``."""
    if text is None:
        return None
    position = parse_non_negative_int(text)
    if position is None:
        raise ValidationError(
            f"{what or field} must be a non-negative integer",
            details={"fields": [{"field": field, "reason": "not a non-negative integer"}]},
        )
    return position


def parse_min_position(query: QueryParams) -> int | None:
    """``?min_position=`` as a number, ``None`` when absent."""
    return position_field("min_position", query.get("min_position"))
