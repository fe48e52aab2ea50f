"""Server-Sent Events: a call's intermediate messages, and the live event feed.

A call streams ``message`` events then one ``result`` (or ``error``); the feed streams
``event`` events whose id is the event's position, so a browser's ``Last-Event-ID`` resumes
right after the last one it saw. An idle feed sends a comment every 15 s, which keeps
proxies from closing it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import orjson

from micro.errors import MicroError
from micro.gateway.errors import http_status
from micro.gateway.feed import EventFeed, FeedOverflow, public_event

__all__ = ["SSE_HEADERS", "call_events", "feed_events", "sse"]

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_KEEPALIVE = 15.0


def sse(event: str, data: Any, *, event_id: str | None = None) -> bytes:
    """One SSE event with a JSON ``data`` line."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: ".encode() + orjson.dumps(data) + b"\n\n"


async def call_events(
    first: Any, iterator: AsyncGenerator[Any, None], done: Callable[[], None]
) -> AsyncIterator[bytes]:
    """A call's messages from ``first`` on: ``message`` each, the last one as ``result``.

    ``done`` runs once the stream ends, however it ends.
    """
    pending = first
    try:
        while True:
            try:
                following = await anext(iterator)
            except StopAsyncIteration:
                yield sse("result", pending)
                return
            except MicroError as error:
                yield sse("message", pending)
                yield sse("error", {"status": http_status(error), **error.to_wire()})
                return
            yield sse("message", pending)
            pending = following
    finally:
        done()
        with contextlib.suppress(Exception):
            await iterator.aclose()


async def feed_events(
    feed: EventFeed, from_position: int | None, closing: asyncio.Event
) -> AsyncIterator[bytes]:
    """The live feed from ``from_position`` until the client leaves or ``closing`` is set."""
    yield f": feed at position {feed.position}\nretry: 2000\n\n".encode()
    events = feed.events(from_position)
    waiting: asyncio.Task[Any] | None = None
    stop = asyncio.ensure_future(closing.wait())
    try:
        while True:
            if waiting is None:
                waiting = asyncio.ensure_future(anext(events))
            done, _ = await asyncio.wait(
                {waiting, stop}, timeout=_KEEPALIVE, return_when=asyncio.FIRST_COMPLETED
            )
            if stop in done:
                return
            if waiting not in done:
                yield b": keepalive\n\n"
                continue
            try:
                event = waiting.result()
            except (StopAsyncIteration, FeedOverflow):
                return
            waiting = None
            yield sse("event", public_event(event), event_id=str(event.position))
    finally:
        stop.cancel()
        if waiting is not None:
            waiting.cancel()
            with contextlib.suppress(BaseException):
                await waiting
        with contextlib.suppress(Exception):
            await events.aclose()
