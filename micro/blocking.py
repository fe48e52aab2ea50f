"""A blocking client for code that is not asyncio: Flask and Django views, scripts, cron jobs.

    from micro import connect

    with connect() as client:
        client.act("deposit", {"id": "a1", "amount": 5})
        for message in client.act_stream("export", {"from": 0}):
            print(message)

One ``BlockingClient`` owns one background thread running one event loop, started on first
use; every call from any thread is handed to that loop, so one client can be shared by all
the threads of a WSGI server. ``close()`` (or the end of the ``with`` block, or interpreter
exit) closes the connection, stops the loop and joins the thread.

Called from a thread that is running an event loop, a call would block that loop until the
reply came, and the reply may need that very loop: it raises ``RuntimeError`` telling the
caller to ``await`` the ``Micro`` instead.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import threading
import weakref
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import CancelledError as FutureCancelled
from types import TracebackType
from typing import Any, Self, TypeVar

from micro.app import Micro
from micro.bus.caller import Reply
from micro.discovery import ServiceRecord
from micro.loop import new_event_loop
from micro.settings import Settings

__all__ = ["BlockingClient", "connect"]

_T = TypeVar("_T")


def connect(settings: Settings | None = None, **overrides: Any) -> BlockingClient:
    """A blocking client taking the same settings as ``Micro``; it connects on first use.

    Usage::

        with connect(service="reports") as client:
            balance = client.act("account balance", {"id": "a1"})
    """
    return BlockingClient(settings, **overrides)


class BlockingClient:
    """``Micro``'s calls (``act``, ``request``, ``act_stream``, ``emit``, ``services``) as
    plain blocking methods, safe to share across threads. Errors are ``Micro``'s own typed
    errors. Build it with ``micro.connect()``."""

    def __init__(self, settings: Settings | None = None, **overrides: Any) -> None:
        # Built here, not on first use: bad settings fail where they were given.
        self.micro = Micro(settings, **overrides)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        # The atexit hook must not keep a forgotten client alive.
        reference = weakref.ref(self)
        self._at_exit = lambda: _close_if_alive(reference)
        atexit.register(self._at_exit)

    # -- the background loop -------------------------------------------------------------

    def _started(self) -> asyncio.AbstractEventLoop:
        _refuse_inside_a_loop()
        with self._lock:
            if self._closed:
                raise RuntimeError("this client is closed; micro.connect() makes a new one")
            if self._loop is not None:
                return self._loop
            loop = new_event_loop(self.micro.settings.event_loop)
            thread = threading.Thread(
                target=_run_forever, args=(loop,), name="micro-blocking-client", daemon=True
            )
            thread.start()
            try:
                asyncio.run_coroutine_threadsafe(self.micro.open(), loop).result()
            except BaseException:
                _stop(loop, thread)
                raise
            self._loop, self._thread = loop, thread
            return loop

    def _run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        try:
            loop = self._started()
        except BaseException:
            coroutine.close()
            raise
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            raise
        except FutureCancelled:
            raise RuntimeError("the call was cancelled: the client closed meanwhile") from None

    # -- calls -----------------------------------------------------------------------------

    def act(
        self,
        name: str,
        payload: Any = None,
        *,
        timeout: float | None = None,
        meta: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        min_position: int | None = None,
    ) -> Any:
        """Call ``name`` and return its reply, or raise the typed error it raised."""
        return self.request(
            name,
            payload,
            timeout=timeout,
            meta=meta,
            idempotency_key=idempotency_key,
            min_position=min_position,
        ).value

    def request(
        self,
        name: str,
        payload: Any = None,
        *,
        timeout: float | None = None,
        meta: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        min_position: int | None = None,
    ) -> Reply:
        """Like ``act``, but returns the ``Reply`` (value and event position)."""
        return self._run(
            self.micro.request(
                name,
                payload,
                timeout=timeout,
                meta=meta,
                idempotency_key=idempotency_key,
                min_position=min_position,
            )
        )

    def act_stream(
        self,
        name: str,
        payload: Any = None,
        *,
        timeout: float | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Iterator[Any]:
        """Yield the intermediate messages of ``name``, then its final reply.

        Leaving the loop early (``break``) ends the stream on the client's side.
        """
        loop = self._started()
        stream: AsyncIterator[Any] | None = None

        async def begin() -> AsyncIterator[Any]:
            return aiter(self.micro.act_stream(name, payload, timeout=timeout, meta=meta))

        async def following(iterator: AsyncIterator[Any]) -> tuple[bool, Any]:
            try:
                return False, await anext(iterator)
            except StopAsyncIteration:
                return True, None

        async def end(iterator: AsyncIterator[Any]) -> None:
            with contextlib.suppress(Exception):
                await iterator.aclose()  # type: ignore[attr-defined]

        try:
            stream = self._run(begin())
            while True:
                done, message = self._run(following(stream))
                if done:
                    return
                yield message
        finally:
            if stream is not None and not loop.is_closed():
                ending = asyncio.run_coroutine_threadsafe(end(stream), loop)
                # A generator dropped by the garbage collector may be finalised on the loop's
                # own thread, where waiting for the loop would never end.
                if threading.current_thread() is not self._thread:
                    with contextlib.suppress(Exception):
                        ending.result()

    def emit(self, name: str, payload: Any = None) -> None:
        """Publish event ``name`` to every service listening for it (at most once)."""
        self._run(self.micro.emit(name, payload))

    def services(self, name: str | None = None, *, stats: bool = False) -> list[ServiceRecord]:
        """Every running service instance of this namespace (or of service ``name``)."""
        return self._run(self.micro.services(name, stats=stats))

    # -- life cycle --------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once ``close()`` ran."""
        return self._closed

    def close(self) -> None:
        """Close the connection, stop the loop and join its thread; safe to call twice."""
        _refuse_inside_a_loop()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            atexit.unregister(self._at_exit)
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.micro.close(), loop).result()
        finally:
            _stop(loop, thread)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _refuse_inside_a_loop() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(
        "the blocking client was called from a thread running an event loop, where waiting "
        "would block that loop: use 'async with Micro() as micro: await micro.act(...)' there"
    )


def _run_forever(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    loop.run_forever()


def _stop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    async def finish() -> None:
        # Whatever a cancelled call left behind is cancelled, then awaited, before the loop
        # stops: a loop closed with pending tasks warns, and their sockets would leak.
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await loop.shutdown_asyncgens()

    with contextlib.suppress(Exception):
        asyncio.run_coroutine_threadsafe(finish(), loop).result(timeout=10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


def _close_if_alive(reference: weakref.ref[BlockingClient]) -> None:
    client = reference()
    if client is not None:
        with contextlib.suppress(Exception):
            client.close()
