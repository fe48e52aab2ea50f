"""The HTTP gateway: every command and view found in discovery, served over HTTP.

    async with Micro(service="gateway") as micro:
        gateway = Gateway(micro, GatewaySettings(port=8080), routes=[
            Route("POST", "/accounts/{id}/deposit", "deposit"),
        ])
        await gateway.serve()          # until SIGINT/SIGTERM

What it serves:

- ``POST <prefix>/<service>/<command>`` for every command, ``GET`` with query parameters for
  every view, plus the explicit routes; each request is validated against the schema its
  service published before it is sent. The table follows services as they come and go (a
  look at discovery every ``refresh_interval`` seconds, at once on an unknown path, and on
  an instance's start or stop announcement; a ``micro.directory.Directory`` drops an instance
  that stopped at once, and one that vanished after ``discovery_missed_rounds`` missed looks,
  and until then a call to a route nobody serves any more is a 503 ``service_not_found``).
- ``Authorization: Bearer <token>`` travels to the service as ``meta["token"]``;
  ``Idempotency-Key`` as the idempotency key. A command's reply carries the position of its
  last event in ``X-Micro-Position``; a view or command called with ``?min_position=`` waits for it.
- ``Accept: text/event-stream`` on a command streams its intermediate messages (SSE).
- ``GET <prefix>/events``: the live event feed over SSE (see ``micro.gateway.feed``).
- ``/ws``: calls, streams and the event feed over one WebSocket (``micro.gateway.websocket``).
- ``GET <prefix>/stats``: live rate, latency, errors and model lag (``micro.gateway.live``).
- ``/openapi.json``, ``/asyncapi.json`` (AsyncAPI 3.0), ``/docs``, ``/healthz``,
  ``/readyz``, ``/metrics``, and optionally a web console from a folder of static files
  at ``/``.

Errors are JSON bodies ``{"error": {"code", "message", ...}}`` with the HTTP status of the
error (``MicroError.status``); a 5xx other than 503/504 says only "internal error" and its
trace id, never what went wrong inside.

This module is the server: the ASGI application, the route table kept in step with
discovery, the calls, and the life cycle. Beside it: ``lane`` (a plain call served without
Starlette's layers), ``protocol`` (uvicorn's, one write per response), ``errors`` (errors
as HTTP responses), ``decoding`` (headers, body, payload), ``sse`` (event streams),
``routes``, ``payloads``, ``openapi``, ``feed`` and ``metrics``. (Over 600 lines because
the route table's upkeep from discovery is still here; it belongs with a route directory
of its own.)
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount
from starlette.routing import Route as StarletteRoute
from starlette.staticfiles import StaticFiles

from micro._signals import stop_on_signals
from micro._tasks import stop_task
from micro.app import Micro
from micro.directory import Directory
from micro.discovery import ServiceRecord
from micro.errors import (
    BadRequestError,
    MethodNotAllowedError,
    MicroError,
    NotFoundError,
    OverloadedError,
    TooManyRequestsError,
    UnauthorizedError,
    UnavailableError,
    ValidationError,
)
from micro.eventstore.base import EventStore
from micro.gateway.asyncapi import asyncapi_route
from micro.gateway.decoding import (
    bearer_meta,
    parse_min_position,
    position_field,
    read_body,
    request_payload,
)
from micro.gateway.errors import error_json, http_status, json_response, public_error
from micro.gateway.fanout import FanOut, call_all
from micro.gateway.feed import EventFeed
from micro.gateway.lane import DirectLane
from micro.gateway.listener import bind_listener
from micro.gateway.live import stats_route
from micro.gateway.metrics import ROUTE_KEY, GatewayMetrics, MetricsMiddleware
from micro.gateway.openapi import build_openapi
from micro.gateway.protocol import CoalescingHttpToolsProtocol
from micro.gateway.refusals import RefusalsAsAnswers
from micro.gateway.routes import MethodNotAllowed, Operation, Route, RouteTable
from micro.gateway.settings import GatewaySettings
from micro.gateway.sse import SSE_HEADERS, call_events, feed_events
from micro.gateway.websocket import websocket_route
from micro.telemetry import metrics as telemetry_metrics

__all__ = ["Gateway", "http_status"]

_log = structlog.get_logger("micro.gateway")

STATIC = Path(__file__).parent / "static"
POSITION_HEADER = "X-Micro-Position"
TOKEN_HEADER = "X-Micro-Token"
_MISS_REFRESH_GAP = 0.5


class _Server(uvicorn.Server):
    """uvicorn, minus its signal handling: whoever runs the gateway owns the signals."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


class Gateway:
    """An HTTP front door for the services of one namespace.

    ``micro`` is the connected Micro the gateway calls through (``await micro.open()`` first,
    or use ``serve``, which opens it). ``routes`` adds explicit routes, ``schemas`` supplies
    request schemas for commands whose services publish none, ``fan_outs`` adds routes
    that call several commands at once (``FanOut``), ``event_store`` feeds
    ``<prefix>/events`` (without one the feed answers 503), and ``console`` is a folder of
    static files served at ``/`` (its ``index.html``) and ``/static/``.
    """

    def __init__(
        self,
        micro: Micro,
        settings: GatewaySettings | None = None,
        *,
        routes: Sequence[Route] = (),
        fan_outs: Sequence[FanOut] = (),
        schemas: Mapping[str, dict[str, Any]] | None = None,
        event_store: EventStore | None = None,
        console: Path | None = None,
        title: str = "micro gateway",
    ) -> None:
        self.micro = micro
        self.settings = settings or GatewaySettings()
        self.routes = list(routes)
        self.fan_outs = list(fan_outs)
        self.schemas = dict(schemas or {})
        self.title = title
        self.console = console
        self.metrics = GatewayMetrics()
        # Read when scraped, so a call costs no gauge updates.
        self.metrics.in_flight.set_function(lambda: self._forwarding)
        self.table = RouteTable()
        self.records: list[ServiceRecord] = []
        self.feed = (
            EventFeed(event_store, hidden_prefixes=self.settings.hidden_stream_prefixes)
            if event_store is not None
            else None
        )
        self._refreshed_at = 0.0
        self.directory: Directory | None = None
        self._refresh_lock = asyncio.Lock()
        self._in_flight = 0
        self._forwarding = 0  # plain calls only (no streams, no fan-outs): the metric
        self._closing = asyncio.Event()
        self._refresher: asyncio.Task[None] | None = None
        self._server: _Server | None = None
        self._serving: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None
        self._openapi: tuple[int, bytes] | None = None
        self._background: set[asyncio.Future[None]] = set()
        self.app = self._build_app()

    # -- the ASGI application ------------------------------------------------------------

    def _build_app(self) -> DirectLane:
        prefix = self.settings.prefix
        routes: list[BaseRoute] = [
            StarletteRoute("/healthz", self._healthz, methods=["GET"]),
            StarletteRoute("/readyz", self._readyz, methods=["GET"]),
            StarletteRoute("/metrics", self._metrics, methods=["GET"]),
            StarletteRoute("/openapi.json", self._openapi_json, methods=["GET"]),
            asyncapi_route(self),
            websocket_route(self),
            StarletteRoute("/docs", self._docs, methods=["GET"]),
            StarletteRoute(f"{prefix}/services", self._services, methods=["GET"]),
            stats_route(f"{prefix}/stats", self.micro),
            StarletteRoute(f"{prefix}/events", self._events, methods=["GET"]),
            Mount("/_gateway", app=StaticFiles(directory=STATIC), name="gateway-static"),
        ]
        if self.console is not None:
            routes.append(StarletteRoute("/", self._console, methods=["GET"]))
            routes.append(Mount("/static", app=StaticFiles(directory=self.console), name="console"))
        fixed = list(routes)
        routes.append(
            StarletteRoute(
                "/{path:path}",
                self._dispatch,
                methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"],
            )
        )
        middleware = []
        if self.settings.cors_origins:
            middleware.append(
                Middleware(
                    CORSMiddleware,
                    allow_origins=self.settings.cors_origins,
                    allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                    allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
                    expose_headers=[POSITION_HEADER, TOKEN_HEADER, "Retry-After"],
                )
            )
        app = Starlette(
            routes=routes,
            middleware=middleware,
            exception_handlers={
                HTTPException: self._http_exception,
                Exception: self._unexpected,
            },
        )
        app.add_middleware(MetricsMiddleware, metrics=self.metrics)
        # Outermost: the metrics still count a refusal a caller asked to get as a 200.
        app.add_middleware(RefusalsAsAnswers)
        return DirectLane(self, app, fixed)

    def error_response(self, error: MicroError) -> Response:
        """The JSON error response for ``error``; never a 200."""
        status, body = self.error_envelope(error)
        return error_json(status, body, retry_after=self.settings.retry_after)

    def error_envelope(self, error: MicroError) -> tuple[int, dict[str, Any]]:
        """The status and the ``error`` body callers see for ``error`` (HTTP and WebSocket)."""
        status, body = public_error(error)
        self.metrics.errors.labels(body["code"], str(status)).inc()
        return status, body

    async def _http_exception(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return self.error_response(NotFoundError(f"no route {request.url.path}"))
        if exc.status_code == 405:
            error = MethodNotAllowedError(f"{request.method} is not allowed here")
            return self.error_response(error)
        return self.error_response(BadRequestError(str(exc.detail)))

    async def _unexpected(self, request: Request, exc: Exception) -> Response:
        _log.error("gateway failure", path=request.url.path, error=repr(exc))
        return self.error_response(MicroError("gateway failure"))

    # -- discovery -----------------------------------------------------------------------

    async def refresh(self) -> RouteTable:
        """Look at discovery now and swap in the route table it gives."""
        async with self._refresh_lock:
            await self._follow().look()
            self._refreshed_at = time.monotonic()
            return self._rebuild()

    def _follow(self) -> Directory:
        if self.directory is None:
            settings, client = self.micro.settings, self.micro.client
            if client is None:
                raise UnavailableError("the gateway's Micro is not connected")
            self.directory = Directory(
                client,
                namespace=settings.namespace,
                gap=settings.discovery_gap,
                deadline=settings.discovery_deadline,
                missed_rounds=settings.discovery_missed_rounds,
                on_change=self._rebuild,
            )
        return self.directory

    def _rebuild(self) -> RouteTable:
        directory = self._follow()
        records = directory.records
        running = {record.service for record in records}
        # A service whose last instance just stopped keeps its routes for one refresh: a call
        # during a restart is a retryable 503, not a 404.
        leaving = [
            record
            for record in directory.stopped_within(self.settings.refresh_interval)
            if record.service not in running
        ]
        table = RouteTable.build(
            records + leaving,
            prefix=self.settings.prefix,
            routes=self.routes,
            schemas=self.schemas,
            exclude=self.settings.exclude,
        )
        changed = {(o.method, o.path) for o in table.operations} != {
            (o.method, o.path) for o in self.table.operations
        }
        self.records = records
        self.table = table
        self.metrics.routes.set(len(table.operations))
        if changed:
            self._openapi = None
            _log.info(
                "routes",
                services=sorted({r.service for r in records}),
                routes=len(table.operations),
            )
        return table

    async def _first_look(self) -> None:
        # A required service may still be starting: without looking again, the first
        # requests to it would get 404 until the next refresh.
        deadline = time.monotonic() + self.settings.required_wait
        pause = 0.05
        while True:
            try:
                await self.refresh()
            except MicroError as error:
                _log.warning("look at discovery failed", error=str(error))
            missing = self.readiness()["missing"]
            left = deadline - time.monotonic()
            if not missing or left <= 0:
                break
            await asyncio.sleep(min(pause, left))
            pause = min(1.0, pause * 2)
        if missing:
            _log.warning(
                "required services not found, listening anyway",
                missing=missing,
                waited=self.settings.required_wait,
            )

    async def refresh_on_miss(self) -> None:
        """Look at discovery again, unless a look was taken within the last half second."""
        await self._refresh_on_miss()

    async def _refresh_on_miss(self) -> None:
        # A miss looks again at once, but a stream of bad paths must not become a stream
        # of discovery requests.
        if time.monotonic() - self._refreshed_at >= _MISS_REFRESH_GAP:
            with contextlib.suppress(MicroError):
                await self.refresh()

    async def _refresh_forever(self) -> None:
        while not self._closing.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.settings.refresh_interval)
            if self._closing.is_set():
                return
            try:
                await self.refresh()
            except Exception as error:
                _log.warning("discovery refresh failed", error=str(error))

    # -- fixed routes --------------------------------------------------------------------

    async def _healthz(self, request: Request) -> Response:
        request.scope[ROUTE_KEY] = "/healthz"
        return json_response({"status": "ok"})

    def readiness(self) -> dict[str, Any]:
        """What ``/readyz`` answers: connected, and every required service discovered."""
        client = self.micro.client
        connected = bool(client is not None and client.is_connected)
        seen = {record.service for record in self.records}
        missing = sorted(set(self.settings.required_services) - seen)
        return {
            "ready": connected and not missing,
            "nats": "connected" if connected else "disconnected",
            "services": sorted(seen),
            "missing": missing,
            "routes": len(self.table.operations),
        }

    async def _readyz(self, request: Request) -> Response:
        request.scope[ROUTE_KEY] = "/readyz"
        state = self.readiness()
        if state["missing"] and state["nats"] == "connected":
            await self._refresh_on_miss()
            state = self.readiness()
        if state["ready"]:
            return json_response(state)
        return json_response(state, 503, {"Retry-After": str(self.settings.retry_after)})

    async def _metrics(self, request: Request) -> Response:
        request.scope[ROUTE_KEY] = "/metrics"
        return Response(
            self.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI 3.1 document of the current route table."""
        return build_openapi(
            self.table.operations,
            fan_outs=self.fan_outs,
            title=self.title,
            version=self.micro.settings.version,
            description="Commands are POST, views GET; errors are "
            '`{"error": {"code", "message", "details"}}`. Live events: GET '
            f"{self.settings.prefix}/events (Server-Sent Events).",
        )

    async def _openapi_json(self, request: Request) -> Response:
        request.scope[ROUTE_KEY] = "/openapi.json"
        if not self.table.operations:
            await self._refresh_on_miss()
        if self._openapi is None or self._openapi[0] != id(self.table):
            self._openapi = (id(self.table), orjson.dumps(self.openapi()))
        return Response(self._openapi[1], media_type="application/json")

    async def _docs(self, request: Request) -> Response:
        request.scope[ROUTE_KEY] = "/docs"
        return FileResponse(STATIC / "docs.html", media_type="text/html")

    async def _console(self, request: Request) -> Response:
        request.scope[ROUTE_KEY] = "/"
        assert self.console is not None
        return FileResponse(self.console / "index.html", media_type="text/html")

    async def _services(self, request: Request) -> Response:
        """The services in discovery with their endpoints and routes (for the console)."""
        request.scope[ROUTE_KEY] = f"{self.settings.prefix}/services"
        if request.query_params.get("refresh") or not self.records:
            await self._refresh_on_miss()
        services: dict[str, dict[str, Any]] = {}
        for record in self.records:
            entry = services.setdefault(
                record.service,
                {
                    "service": record.service,
                    "version": record.version,
                    "description": record.description,
                    "instances": 0,
                    "endpoints": [],
                },
            )
            entry["instances"] += 1
            if entry["endpoints"]:
                continue
            for endpoint in record.endpoints:
                if not self.table.by_command(endpoint.name):
                    continue  # excluded from HTTP
                entry["endpoints"].append(
                    {
                        "name": endpoint.name,
                        "kind": endpoint.kind,
                        "description": endpoint.metadata.get("micro.description", ""),
                        "request_schema": self.schemas.get(endpoint.name)
                        or endpoint.request_schema,
                        "reply_schema": endpoint.reply_schema,
                        "routes": [
                            {"method": o.method, "path": o.path}
                            for o in self.table.by_command(endpoint.name)
                        ],
                    }
                )
        return json_response({"services": [services[name] for name in sorted(services)]})

    # -- the caller ----------------------------------------------------------------------

    async def _min_position(self, query: QueryParams) -> int | None:
        position = parse_min_position(query)
        feed = self.feed
        if position is not None and feed is not None and position > feed.position:
            # A position the store has not reached cannot come from a reply: waiting for it
            # would only end in a timeout.
            newest = await feed.store.last_position()
            if position > newest:
                raise ValidationError(
                    f"min_position {position} is ahead of the newest event ({newest})",
                    details={"fields": [{"field": "min_position", "reason": "not reached"}]},
                )
        return position

    async def _dispatch(self, request: Request) -> Response:
        try:
            return await self._call(request)
        except MicroError as error:
            return self.failed(error)

    def failed(self, error: MicroError) -> Response:
        """The response for a call that failed with ``error``; a service that may have gone
        away sends the gateway back to discovery (in the background)."""
        if isinstance(error, UnavailableError | OverloadedError) or error.code == (
            "service_not_found"
        ):
            task = asyncio.ensure_future(self._refresh_on_miss())
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return self.error_response(error)

    async def _call(self, request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        path = request.url.path
        for fan_out in self.fan_outs:
            parameters = fan_out.match(method, path)
            if parameters is not None:
                return await self._fan_out(request, fan_out, parameters)
        found = self.table.match(method, path)
        if found is None:
            await self._refresh_on_miss()
            found = self.table.match(method, path)
        if found is None:
            raise NotFoundError(f"no route {method} {path}", details={"path": path})
        if isinstance(found, MethodNotAllowed):
            error = MethodNotAllowedError(
                f"{method} is not allowed on {path}; allowed: {', '.join(found.allowed)}",
                details={"allowed": found.allowed},
            )
            response = self.error_response(error)
            response.headers["Allow"] = ", ".join(found.allowed)
            return response
        operation, parameters = found
        request.scope[ROUTE_KEY] = operation.path
        meta = bearer_meta(request)
        body = (
            await read_body(request, self.settings.max_body)
            if method not in ("GET", "DELETE")
            else None
        )
        query = request.query_params
        payload, min_position = await self.prepare(operation, parameters, query, body)
        if "text/event-stream" in request.headers.get("accept", ""):
            return await self._stream(operation, payload, meta)
        headers, body = await self.forward(
            operation, payload, meta, request.headers.get("idempotency-key"), min_position
        )
        return Response(body, 200, media_type="application/json", headers=headers)

    async def prepare(
        self, operation: Operation, parameters: dict[str, str], query: QueryParams, body: Any
    ) -> tuple[Any, int | None]:
        """A call's validated payload and ``min_position``; 429 while too many are in flight."""
        payload = request_payload(query, operation, parameters, body)
        min_position = await self._min_position(query)
        if self._in_flight >= self.settings.max_in_flight:
            raise TooManyRequestsError(
                f"the gateway is forwarding {self._in_flight} calls already; retry shortly"
            )
        return payload, min_position

    async def forward(
        self,
        operation: Operation,
        payload: Any,
        meta: dict[str, Any],
        idempotency_key: str | None,
        min_position: int | None,
    ) -> tuple[dict[str, str], bytes]:
        """Send a prepared call: the reply's headers (position, token) and its JSON body."""
        self._in_flight += 1
        self._forwarding += 1
        try:
            reply = await self.micro.request(
                operation.command,
                payload,
                timeout=self.settings.request_timeout,
                meta=meta or None,
                idempotency_key=idempotency_key or None,
                min_position=min_position,
            )
        finally:
            self._in_flight -= 1
            self._forwarding -= 1
        headers = {POSITION_HEADER: str(reply.position)} if reply.position is not None else {}
        if reply.token is not None:
            headers[TOKEN_HEADER] = reply.token  # the session slid: the client keeps this one
        return headers, orjson.dumps(reply.value, option=orjson.OPT_NON_STR_KEYS)

    async def _fan_out(
        self, request: Request, fan_out: FanOut, parameters: dict[str, str]
    ) -> Response:
        request.scope[ROUTE_KEY] = fan_out.path
        body = (
            await read_body(request, self.settings.max_body)
            if fan_out.method not in ("GET", "DELETE")
            else None
        )
        payload = request_payload(request.query_params, fan_out.operation(), parameters, body)
        min_position = await self._min_position(request.query_params)
        if self._in_flight >= self.settings.max_in_flight:
            raise TooManyRequestsError(
                f"the gateway is forwarding {self._in_flight} calls already; retry shortly"
            )
        self._in_flight += 1
        try:
            status, composite, position = await call_all(
                self.micro,
                fan_out,
                payload,
                meta=bearer_meta(request) or None,
                min_position=min_position,
                timeout=self.settings.request_timeout,
            )
        finally:
            self._in_flight -= 1
        headers = {POSITION_HEADER: str(position)} if position is not None else {}
        return json_response(composite, status, headers)

    # -- streams -------------------------------------------------------------------------

    async def _stream(self, operation: Operation, payload: Any, meta: dict[str, Any]) -> Response:
        """A call's intermediate messages then its reply, as SSE events ``message``,
        ``result`` (or ``error``). An error before the first message is a plain error
        response with its own status, so a failing call is never a 200."""
        messages = self.micro.act_stream(
            operation.command, payload, timeout=self.settings.request_timeout, meta=meta or None
        )
        iterator = messages  # an async generator is its own iterator
        try:
            first = await anext(iterator)
        except StopAsyncIteration:
            return self.error_response(MicroError("the stream ended without a reply"))
        # The final reply comes last: which one that is shows only when the next is asked.
        self._in_flight += 1

        def done() -> None:
            self._in_flight -= 1

        return StreamingResponse(
            call_events(first, iterator, done), media_type="text/event-stream", headers=SSE_HEADERS
        )

    async def _viewer(self, request: Request) -> dict[str, Any]:
        """Who is asking for the feed; ``UnauthorizedError`` unless a valid token came."""
        return await self.viewer(bearer_meta(request, query_token=True))

    async def viewer(self, meta: dict[str, Any]) -> dict[str, Any]:
        """Who ``meta``'s token belongs to; ``UnauthorizedError`` unless it is valid."""
        if "token" not in meta:
            raise UnauthorizedError("the event feed needs a bearer token")
        command = self.settings.verify_command
        if command is None:
            return {"token": "accepted"}
        try:
            who = await self.micro.act(
                command, {}, meta=meta, timeout=self.settings.request_timeout
            )
        except (UnauthorizedError, ValidationError, BadRequestError):
            raise UnauthorizedError("the token is not valid") from None
        return who if isinstance(who, dict) else {"user": who}

    async def _events(self, request: Request) -> Response:
        request.scope[ROUTE_KEY] = f"{self.settings.prefix}/events"
        try:
            await self._viewer(request)
            feed = self.feed
            if feed is None or feed.failure is not None:
                raise UnavailableError("the event feed is not available on this gateway")
            start = request.headers.get("last-event-id") or request.query_params.get(
                "from_position"
            )
            from_position = position_field(
                "from_position", start, what="from_position (or Last-Event-ID)"
            )
            if from_position is not None and "last-event-id" in request.headers:
                from_position += 1  # Last-Event-ID names the last event seen: resume after it
        except MicroError as error:
            return self.error_response(error)
        return StreamingResponse(
            feed_events(feed, from_position, self._closing),
            media_type="text/event-stream",
            headers=SSE_HEADERS,
        )

    # -- life cycle ----------------------------------------------------------------------

    @property
    def closing(self) -> asyncio.Event:
        """Set once ``stop()`` began: long-lived streams and sockets end on it."""
        return self._closing

    @property
    def url(self) -> str:
        """Where the gateway listens (the real port once started with port 0)."""
        port = self.settings.port
        if self._socket is not None:
            port = self._socket.getsockname()[1]
        host = self.settings.host
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}"

    async def start(self, listener: socket.socket | None = None) -> None:
        """Listen, open the micro if needed, build the route table and start the feed.

        ``listener`` is a socket bound earlier with ``bind_listener`` (a process that starts
        services beside the gateway binds first, so a taken port stops it before they join
        their queue groups); without one the gateway binds its settings' address first thing.
        """
        # The address is checked before anything connects: a taken port is one ConfigError.
        sock = listener or bind_listener(self.settings.host, self.settings.port)
        self._socket = sock
        # Reported to OpenTelemetry while it serves: a stopped gateway's counts are not live.
        telemetry_metrics.watch_gateway(self.metrics)
        try:
            if not self.micro.serving:
                await self.micro.open()
            self._closing.clear()
            await self._follow().start()
            await self._first_look()
            if self.feed is not None:
                await self.feed.start()
        except BaseException:
            await self.stop()
            raise
        self._refresher = asyncio.create_task(self._refresh_forever(), name="gateway-refresh")
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=3,
            server_header=False,
            http=CoalescingHttpToolsProtocol,
            # The sans-I/O protocol of websockets; larger frames than this close the socket
            # (1009), smaller ones over ws_max_frame get a typed error frame.
            ws="websockets-sansio",
            ws_max_size=4 * self.settings.ws_max_frame,
        )
        self._server = _Server(config)
        self._serving = asyncio.create_task(self._server.serve(sockets=[sock]), name="gateway")
        ready = asyncio.ensure_future(self._server.ready.wait())
        await asyncio.wait({ready, self._serving}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            await self.stop()
            raise UnavailableError(f"the gateway could not start on {self.url}")
        _log.info("gateway listening", url=self.url)

    async def stop(self) -> None:
        """Stop listening: end the event streams, finish requests in flight, close."""
        self._closing.set()
        telemetry_metrics.forget_gateway(self.metrics)
        if self.feed is not None:
            await self.feed.stop()
        if self._server is not None:
            self._server.should_exit = True
        if self._serving is not None:
            with contextlib.suppress(Exception):
                await self._serving
            self._serving = None
        refresher, self._refresher = self._refresher, None
        await stop_task(refresher)
        directory, self.directory = self.directory, None
        if directory is not None:
            await directory.stop()
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    async def serve(self) -> None:
        """Serve until SIGINT/SIGTERM, then stop the gateway and close the micro."""
        stop = asyncio.Event()
        # Handlers stay installed while draining, so a second signal cannot cut it short.
        with stop_on_signals(stop):
            try:
                await self.start()
                await stop.wait()
            finally:
                await self.stop()
                await self.micro.close()
