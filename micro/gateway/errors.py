"""Errors as HTTP responses: the status, the JSON body a client may see, the headers.

A body is ``{"error": {"code", "message", "details", "retryable", "trace_id"}}``. A 5xx
other than 503/504 says only "internal error" and its trace id: internals stay inside, the
trace id is enough to find them in the logs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import structlog
from starlette.responses import Response

from micro.errors import MicroError, RemoteError

__all__ = ["error_json", "http_status", "json_response", "public_error"]

_log = structlog.get_logger("micro.gateway")


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """``data`` as a JSON response."""
    return Response(
        orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS),
        status_code=status,
        headers=dict(headers or {}),
        media_type="application/json",
    )


def http_status(error: MicroError) -> int:
    """The HTTP status of an error: its own, or for an unknown code the status it came with."""
    if isinstance(error, RemoteError):
        status = error.remote_status
        return status if isinstance(status, int) and 400 <= status <= 599 else 500
    return error.status if 400 <= error.status <= 599 else 500


def public_error(error: MicroError) -> tuple[int, dict[str, Any]]:
    """The status and the error body a client may see (internals logged, not shown)."""
    status = http_status(error)
    body: dict[str, Any] = {
        "code": error.code,
        "message": error.message,
        "details": error.details,
        "retryable": error.retryable,
        "trace_id": error.trace_id,
    }
    if isinstance(error, RemoteError):
        body["code"] = error.remote_code
    if status >= 500 and status not in (503, 504):
        _log.error(
            "internal error behind the gateway",
            code=body["code"],
            message=error.message,
            trace_id=error.trace_id,
        )
        body = {
            "code": "internal",
            "message": "internal error",
            "details": {},
            "retryable": False,
            "trace_id": error.trace_id,
        }
        status = 500
    elif status >= 500:
        body["details"] = {}
    return status, body


def error_json(status: int, body: dict[str, Any], *, retry_after: int) -> Response:
    """The response for a ``public_error``, with ``Retry-After`` or ``WWW-Authenticate``."""
    headers: dict[str, str] = {}
    if status in (429, 503):
        headers["Retry-After"] = str(retry_after)
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="micro"'
    return json_response({"error": body}, status, headers)
