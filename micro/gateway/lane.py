"""The direct lane: a plain call to a routed command or view, served in one ASGI step.

Starlette's router, middleware, request and response objects cost more CPU per call than
the call itself costs the gateway. A request the route table answers, with nothing the
Starlette application does on top (no CORS, no OTel SDK, no event stream, no fan-out, no
fixed route of the gateway on its path, not HEAD), is read and answered here: the same
checks in the same order (``Gateway.prepare`` and ``Gateway.forward``), the same status,
headers, body, metrics and ``Prefer: refusal=answer``. Every other request goes to the
Starlette application unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import structlog
from starlette.datastructures import QueryParams
from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from micro.errors import MicroError, PayloadTooLargeError
from micro.gateway.decoding import bearer_token, check_length, json_body
from micro.gateway.metrics import record_duration
from micro.gateway.refusals import PREFERENCE
from micro.gateway.routes import MethodNotAllowed
from micro.telemetry import tracing

if TYPE_CHECKING:
    from micro.gateway.gateway import Gateway

__all__ = ["DirectLane"]

_log = structlog.get_logger("micro.gateway")

_EMPTY_QUERY = QueryParams("")
_JSON = (b"content-type", b"application/json")
_REFUSED = 422
_READ = frozenset(
    {b"accept", b"authorization", b"content-length", b"content-type", b"idempotency-key"}
)


class DirectLane:
    """ASGI: plain calls straight to ``gateway``, everything else to ``app``."""

    def __init__(self, gateway: Gateway, app: ASGIApp, fixed: Iterable[BaseRoute]) -> None:
        self.gateway = gateway
        self.app = app
        # Paths the Starlette application serves before its catch-all: they win over any
        # route of the table, so they never take the lane.
        paths: set[str] = set()
        prefixes: list[str] = []
        for route in fixed:
            if isinstance(route, Mount):
                paths.add(route.path or "/")
                prefixes.append(route.path + "/")
            elif isinstance(route, Route | WebSocketRoute):
                paths.add(route.path)
        self.fixed_paths = frozenset(paths)
        self.fixed_prefixes = tuple(prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = self.gateway
        if (
            scope["type"] != "http"
            or scope["method"] == "HEAD"
            or gateway.settings.cors_origins
            or tracing.tracer() is not None
        ):
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        path: str = scope["path"]
        if path in self.fixed_paths or path.startswith(self.fixed_prefixes):
            await self.app(scope, receive, send)
            return
        found = gateway.table.match(method, path)
        if (
            found is None
            or isinstance(found, MethodNotAllowed)
            or any(fan_out.match(method, path) is not None for fan_out in gateway.fan_outs)
        ):
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, str] = {}
        prefers = False
        for name, value in scope["headers"]:
            if name in _READ:
                if name not in headers:  # the first one counts, as in Starlette's Headers
                    headers[name] = value.decode("latin-1")
            elif name == b"prefer":
                prefers = prefers or any(
                    item.strip().lower() == PREFERENCE
                    for item in value.decode("latin-1").split(",")
                )
        if "text/event-stream" in headers.get(b"accept", ""):
            await self.app(scope, receive, send)
            return
        operation, parameters = found
        started = time.perf_counter()
        status = 500
        try:
            try:
                token = bearer_token(headers.get(b"authorization"))
                body: Any = None
                if method != "GET" and method != "DELETE":
                    body = await _read(receive, headers, gateway.settings.max_body)
                raw_query: bytes = scope["query_string"]
                query = QueryParams(raw_query) if raw_query else _EMPTY_QUERY
                payload, min_position = await gateway.prepare(operation, parameters, query, body)
                extra, answer = await gateway.forward(
                    operation,
                    payload,
                    {"token": token} if token else {},
                    headers.get(b"idempotency-key"),
                    min_position,
                )
                status = 200
                raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
                raw.append((b"content-length", b"%d" % len(answer)))
                raw.append(_JSON)
            except MicroError as error:
                response = gateway.failed(error)
                status, raw, answer = (
                    response.status_code,
                    response.raw_headers,
                    bytes(response.body),
                )
            except Exception as error:
                _log.error("gateway failure", path=path, error=repr(error))
                response = gateway.error_response(MicroError("gateway failure"))
                await _send(send, 500, response.raw_headers, bytes(response.body), prefers)
                raise
            await _send(send, status, raw, answer, prefers)
        finally:
            seconds = time.perf_counter() - started
            gateway.metrics.served(method, operation.path, status, seconds)
            record_duration(method, operation.path, status, seconds)


async def _read(receive: Receive, headers: dict[bytes, str], limit: int) -> Any:
    check_length(headers.get(b"content-length"), limit)
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnect()
    data: bytes = message.get("body", b"")
    if message.get("more_body", False):
        chunks = [data]
        size = len(data)
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLargeError(
                    f"the body is over the limit of {limit} bytes", details={"limit": limit}
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        data = b"".join(chunks)
    elif len(data) > limit:
        raise PayloadTooLargeError(
            f"the body is over the limit of {limit} bytes", details={"limit": limit}
        )
    return json_body(data, headers.get(b"content-type", ""))


async def _send(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes, prefers: bool
) -> None:
    if status == _REFUSED and prefers:
        # As ``RefusalsAsAnswers`` answers it; the metrics still count the 422.
        status = 200
        headers = [*headers, (b"preference-applied", PREFERENCE.encode()), (b"vary", b"Prefer")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
