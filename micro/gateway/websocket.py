"""``/ws`` on the gateway: calls, streams and the live event feed over one WebSocket.

Every frame is a JSON object in a text frame.

From the client::

    {"token": "..."}                                     first frame only (or the
                                                         Authorization header)
    {"id": 1, "act": "deposit", "payload": {...},        a call; min_position and
     "min_position": 7, "idempotency_key": "k1"}         idempotency_key are optional
    {"id": 2, "act": "export", "payload": {}, "stream": true}
    {"subscribe": "events", "from_position": 0}          the live event feed
    {"unsubscribe": "events"}
    {"ping": 1}

From the gateway::

    {"id": 1, "result": {...}, "position": 42}           a call's reply (position: commands;
                                                         "token": the session slid)
    {"id": 1, "error": {"code", "message", ...}, "status": 422}   the same envelope as HTTP
    {"id": 2, "message": ...} ... {"id": 2, "done": true} a stream
    {"subscribed": "events", "position": 41}, then {"event": {...}} per event
    {"pong": 1}

The same rules as HTTP apply: the request is validated against the published schema before
it is sent, the token travels as ``meta["token"]``, the feed needs a token the gateway's
``verify_command`` accepts, and a 5xx says only "internal error". A malformed frame gets an
error frame (``"id"`` when it could be read) and the socket stays open. A frame larger than
``ws_max_frame`` is refused with ``payload_too_large``; a call beyond ``ws_max_in_flight``
calls in flight on the socket with ``too_many_requests``. A socket that sends nothing for
``ws_idle_timeout`` seconds, with no call in flight and no subscription, is closed (1001).
A browser page may open the socket only from the gateway's own origin or one of
``cors_origins``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson
import structlog
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from micro.errors import (
    BadRequestError,
    MicroError,
    NotFoundError,
    PayloadTooLargeError,
    TooManyRequestsError,
    UnauthorizedError,
    UnavailableError,
    ValidationError,
)
from micro.gateway.decoding import bearer_meta
from micro.gateway.feed import FeedOverflow, public_event
from micro.gateway.payloads import validate

if TYPE_CHECKING:
    from micro.gateway.gateway import Gateway

__all__ = ["websocket_route"]

_log = structlog.get_logger("micro.gateway.ws")

_CLOSE_GOING_AWAY = 1001
_CLOSE_POLICY = 1008
_MAX_ID = 200


def _field_error(field: str, reason: str, message: str) -> ValidationError:
    return ValidationError(message, details={"fields": [{"field": field, "reason": reason}]})


def websocket_route(gateway: Gateway) -> WebSocketRoute:
    """The ``/ws`` route of ``gateway``."""

    async def endpoint(websocket: WebSocket) -> None:
        await Socket(gateway, websocket).run()

    return WebSocketRoute("/ws", endpoint)


class Socket:
    """One client's WebSocket: reads frames in order, runs calls concurrently."""

    def __init__(self, gateway: Gateway, websocket: WebSocket) -> None:
        self.gateway = gateway
        self.websocket = websocket
        self.settings = gateway.settings
        self.meta: dict[str, Any] = {}
        self.frames = 0
        self.calls: dict[Any, asyncio.Task[None]] = {}
        self.feed: asyncio.Task[None] | None = None
        self._send_lock = asyncio.Lock()
        self._activity = asyncio.Event()

    # -- sending ---------------------------------------------------------------------------

    async def send(self, frame: dict[str, Any]) -> None:
        data = orjson.dumps(frame, option=orjson.OPT_NON_STR_KEYS).decode()
        # One frame at a time: concurrent calls finish in any order, frames never interleave.
        async with self._send_lock:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await self.websocket.send_text(data)

    async def send_error(self, error: MicroError, frame_id: Any = None) -> None:
        status, body = self.gateway.error_envelope(error)
        frame: dict[str, Any] = {"error": body, "status": status}
        if frame_id is not None:
            frame = {"id": frame_id, **frame}
        await self.send(frame)

    # -- the socket's life -----------------------------------------------------------------

    def _origin_allowed(self) -> bool:
        # A browser page of another site could otherwise use a visitor's browser to talk to a
        # gateway it cannot reach itself (one on the visitor's machine or intranet): browsers
        # send Origin, and WebSockets have no CORS to stop them.
        origin = self.websocket.headers.get("origin")
        if origin is None:
            return True
        allowed = self.settings.cors_origins
        if "*" in allowed or origin in allowed:
            return True
        return urlsplit(origin).netloc == self.websocket.headers.get("host")

    async def run(self) -> None:
        if not self._origin_allowed():
            # Closed before the handshake completes: the client sees 403.
            await self.websocket.close(_CLOSE_POLICY)
            return
        try:
            self.meta = bearer_meta(self.websocket)
        except UnauthorizedError as error:
            await self.websocket.accept()
            await self.send_error(error)
            await self.websocket.close(_CLOSE_POLICY, "bad Authorization header")
            return
        await self.websocket.accept()
        reader = asyncio.ensure_future(self._read())
        closing = asyncio.ensure_future(self.gateway.closing.wait())
        idle = asyncio.ensure_future(self._idle())
        try:
            await asyncio.wait({reader, closing, idle}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, closing, idle, self.feed, *self.calls.values()):
                if task is not None:
                    task.cancel()
            for task in (reader, idle, self.feed, *self.calls.values()):
                if task is not None:
                    with contextlib.suppress(BaseException):
                        await task
            if not reader.done() or closing.done() or idle.done():
                with contextlib.suppress(Exception):
                    await self.websocket.close(_CLOSE_GOING_AWAY)

    async def _idle(self) -> None:
        while True:
            self._activity.clear()
            try:
                await asyncio.wait_for(self._activity.wait(), self.settings.ws_idle_timeout)
            except TimeoutError:
                if not self.calls and self.feed is None:
                    await self.send(
                        {"closing": f"idle for {self.settings.ws_idle_timeout:g} seconds"}
                    )
                    return

    async def _read(self) -> None:
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            self._activity.set()
            self.frames += 1
            text = message.get("text")
            raw = text.encode() if text is not None else message.get("bytes") or b""
            frame: Any = None
            try:
                if len(raw) > self.settings.ws_max_frame:
                    raise PayloadTooLargeError(
                        f"the frame is {len(raw)} bytes; the limit is {self.settings.ws_max_frame}",
                        details={"limit": self.settings.ws_max_frame, "size": len(raw)},
                    )
                if text is None:
                    raise BadRequestError("frames must be JSON text, not binary")
                try:
                    frame = orjson.loads(raw)
                except orjson.JSONDecodeError as error:
                    raise BadRequestError(
                        f"the frame is not valid JSON: {error}",
                        details={"fields": [{"field": "frame", "reason": str(error)}]},
                    ) from None
                if not isinstance(frame, dict):
                    raise _field_error("frame", "not an object", "a frame must be a JSON object")
                await self._handle(frame)
            except MicroError as error:
                frame_id = frame.get("id") if isinstance(frame, dict) else None
                await self.send_error(error, frame_id if _valid_id(frame_id) else None)

    async def _handle(self, frame: dict[str, Any]) -> None:
        if "token" in frame:
            await self._token(frame)
        elif "act" in frame:
            self._call(frame)
        elif "subscribe" in frame:
            await self._subscribe(frame)
        elif "unsubscribe" in frame:
            await self._unsubscribe(frame)
        elif "ping" in frame:
            await self.send({"pong": frame["ping"]})
        else:
            raise _field_error(
                "frame",
                "unknown kind",
                "a frame is a call ('act'), 'subscribe', 'unsubscribe', 'token' or 'ping'",
            )

    async def _token(self, frame: dict[str, Any]) -> None:
        token = frame["token"]
        if self.frames != 1:
            raise _field_error("token", "not first", "the token goes in the socket's first frame")
        if not isinstance(token, str) or not token.strip() or " " in token.strip():
            raise UnauthorizedError("the token must be a non-empty string without spaces")
        if "token" in self.meta:
            raise _field_error(
                "token", "given twice", "the Authorization header already gave a token"
            )
        self.meta = {"token": token.strip()}
        if "id" in frame and _valid_id(frame["id"]):
            await self.send({"id": frame["id"], "result": "ok"})

    # -- calls -------------------------------------------------------------------------------

    def _call(self, frame: dict[str, Any]) -> None:
        frame_id = frame.get("id")
        if not _valid_id(frame_id):
            raise _field_error(
                "id", "missing or invalid", "a call needs an 'id': an integer or a short string"
            )
        if frame_id in self.calls:
            raise _field_error("id", "in use", f"call {frame_id!r} is still in flight")
        if len(self.calls) >= self.settings.ws_max_in_flight:
            raise TooManyRequestsError(
                f"this socket has {len(self.calls)} calls in flight; the limit is "
                f"{self.settings.ws_max_in_flight}",
                details={"limit": self.settings.ws_max_in_flight},
            )
        name = frame["act"]
        if not isinstance(name, str) or not name:
            raise _field_error("act", "not a name", "'act' must name a command or view")
        min_position = frame.get("min_position")
        if min_position is not None and (
            not isinstance(min_position, int) or isinstance(min_position, bool) or min_position < 0
        ):
            raise _field_error(
                "min_position", "not an integer", "min_position must be a non-negative integer"
            )
        key = frame.get("idempotency_key")
        if key is not None and (not isinstance(key, str) or not key or len(key) > 200):
            raise _field_error(
                "idempotency_key", "not a key", "idempotency_key must be a short string"
            )
        payload = frame.get("payload", {})
        gateway = self.gateway
        if gateway._in_flight >= self.settings.max_in_flight:
            raise TooManyRequestsError(
                f"the gateway is forwarding {gateway._in_flight} calls already; retry shortly"
            )
        task = asyncio.ensure_future(
            self._run_call(frame_id, name, payload, min_position, key, bool(frame.get("stream")))
        )
        self.calls[frame_id] = task
        task.add_done_callback(lambda _: self._finished(frame_id, task))

    def _finished(self, frame_id: Any, task: asyncio.Task[None]) -> None:
        if self.calls.get(frame_id) is task:
            del self.calls[frame_id]
        self._activity.set()

    async def _operation_schema(self, name: str) -> dict[str, Any] | None:
        operations = self.gateway.table.by_command(name)
        if not operations:
            await self.gateway.refresh_on_miss()
            operations = self.gateway.table.by_command(name)
        if not operations:
            raise NotFoundError(f"no command or view {name!r}", details={"act": name})
        return operations[0].request_schema

    async def _run_call(
        self,
        frame_id: Any,
        name: str,
        payload: Any,
        min_position: int | None,
        key: str | None,
        stream: bool,
    ) -> None:
        micro = self.gateway.micro
        timeout = self.settings.request_timeout
        # Counted with the HTTP calls: max_in_flight bounds the gateway as a whole.
        self.gateway._in_flight += 1
        self.gateway.metrics.in_flight.inc()
        try:
            validate(name, await self._operation_schema(name), payload)
            if stream:
                async for message in micro.act_stream(
                    name, payload, timeout=timeout, meta=self.meta or None
                ):
                    await self.send({"id": frame_id, "message": message})
                await self.send({"id": frame_id, "done": True})
                return
            reply = await micro.request(
                name,
                payload,
                timeout=timeout,
                meta=self.meta or None,
                idempotency_key=key,
                min_position=min_position,
            )
        except MicroError as error:
            await self.send_error(error, frame_id)
            return
        finally:
            self.gateway._in_flight -= 1
            self.gateway.metrics.in_flight.dec()
        answer: dict[str, Any] = {"id": frame_id, "result": reply.value}
        if reply.position is not None:
            answer["position"] = reply.position
        if reply.token is not None and "token" in self.meta:
            # The session slid: the socket's later calls carry the fresh token, and the
            # client keeps it for its next socket (as X-Micro-Token over HTTP).
            self.meta = {**self.meta, "token": reply.token}
            answer["token"] = reply.token
        await self.send(answer)

    # -- the event feed ----------------------------------------------------------------------

    async def _subscribe(self, frame: dict[str, Any]) -> None:
        if frame["subscribe"] != "events":
            raise _field_error("subscribe", "unknown", "the only subscription is 'events'")
        start = frame.get("from_position")
        if start is not None and (
            not isinstance(start, int) or isinstance(start, bool) or start < 0
        ):
            raise _field_error(
                "from_position", "not an integer", "from_position must be a non-negative integer"
            )
        if self.feed is not None:
            raise _field_error("subscribe", "already", "this socket is subscribed already")
        if "token" not in self.meta:
            raise UnauthorizedError("the event feed needs a token")
        await self.gateway.viewer(self.meta)
        feed = self.gateway.feed
        if feed is None or feed.failure is not None:
            raise UnavailableError("the event feed is not available on this gateway")
        position = feed.position
        await self.send({"subscribed": "events", "position": position})
        # From the position just announced, not from whenever the task starts: an event
        # stored in between is read from the store instead of being missed.
        self.feed = asyncio.ensure_future(self._follow(position + 1 if start is None else start))

    async def _follow(self, start: int) -> None:
        feed = self.gateway.feed
        assert feed is not None
        try:
            async for event in feed.events(start):
                await self.send({"event": public_event(event)})
        except FeedOverflow as error:
            await self.send_error(UnavailableError(f"the event feed stopped: {error}"))
        finally:
            self.feed = None

    async def _unsubscribe(self, frame: dict[str, Any]) -> None:
        feed, self.feed = self.feed, None
        if feed is not None:
            feed.cancel()
            with contextlib.suppress(BaseException):
                await feed
        await self.send({"unsubscribed": "events"})


def _valid_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and 0 < len(value) <= _MAX_ID
