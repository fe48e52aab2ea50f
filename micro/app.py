"""``Micro``: the one object a service author touches.

It composes the parts (connection, responder, caller, hooks) and owns their life cycle:
open, serve until a signal, drain, close.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, Self

import pydantic
import structlog
from nats.aio.client import Client

from micro.bus.caller import Caller, Reply, RetryPolicy
from micro.bus.connection import connect
from micro.bus.endpoint import Endpoint, Middleware
from micro.bus.hooks import Hooks
from micro.bus.responder import Responder
from micro.errors import ConfigError
from micro.log import configure_logging
from micro.settings import Settings

__all__ = ["Micro"]

_log = structlog.get_logger("micro")


def _settings(settings: Settings | None, overrides: dict[str, Any]) -> Settings:
    try:
        if settings is None:
            return Settings(**overrides)
        if not overrides:
            return settings
        return Settings(**{**settings.model_dump(), **overrides})
    except pydantic.ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc']) or 'settings'}: {item['msg']}"
            for item in error.errors(include_url=False)
        )
        raise ConfigError(f"invalid settings: {problems}") from None


class Micro:
    """A microservice, a client of other services, or both.

    Usage::

        micro = Micro()
        micro.add("multiply two numbers", lambda req: req["first"] * req["second"]).start()

        async with Micro() as client:
            assert await client.act("multiply two numbers", {"first": 5, "second": 3}) == 15

    Settings come from the environment (``MICRO_*``, ``NATS_URL``), from ``settings``, and
    from keyword overrides such as ``Micro(service="bank")``.
    """

    def __init__(self, settings: Settings | None = None, **overrides: Any) -> None:
        self.settings = _settings(settings, overrides)
        configure_logging(self.settings.log_level, self.settings.log_format)
        self.hooks = Hooks()
        self.endpoints: dict[str, Endpoint] = {}
        self.client: Client | None = None
        self._caller: Caller | None = None
        self._responder: Responder | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opened = False
        self._served = False
        self._retries: dict[str, RetryPolicy] = {}

    # -- declaring what the service serves -------------------------------------------------

    def add(
        self,
        name: str,
        handler: Callable[..., Any],
        *,
        description: str = "",
        metadata: dict[str, str] | None = None,
        idempotent: bool = False,
        middleware: list[Middleware] | None = None,
    ) -> Self:
        """Serve ``name`` with ``handler``; returns the Micro so calls chain.

        The handler may be sync or async and take ``(payload)``, ``(payload, ctx)`` or
        nothing. A payload parameter annotated with a pydantic model (or any type) is
        validated before the handler runs; its schema is published in discovery.

        Usage::

            micro.add("math.add", lambda req: req["a"] + req["b"])
        """
        if name in self.endpoints:
            raise ValueError(f"{name!r} is already served by this Micro")
        if metadata is not None and (
            not isinstance(metadata, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
        ):
            raise TypeError(f"metadata of {name!r} must map strings to strings")
        endpoint = Endpoint.build(
            name,
            handler,
            description=description,
            metadata=dict(metadata or {}),
            idempotent=idempotent,
            middleware=list(middleware or []),
        )
        self.endpoints[name] = endpoint
        if self._responder is not None:
            self._spawn(self._responder.add(endpoint))
        return self

    def command(
        self, name: str, **options: Any
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator form of ``add``."""

        def register(handler: Callable[..., Any]) -> Callable[..., Any]:
            self.add(name, handler, **options)
            return handler

        return register

    def use(self, name: str, middleware: Middleware) -> Self:
        """Wrap one command in ``async def middleware(payload, ctx, call_next)``."""
        if name not in self.endpoints:
            raise KeyError(f"{name!r} is not served by this Micro; add it first")
        if not callable(middleware):
            raise TypeError(f"middleware for {name!r} is not callable")
        self.endpoints[name].middleware.append(middleware)
        return self

    def hook(self, kind: str, fn: Callable[..., Any]) -> Self:
        """Register a life-cycle hook (see ``micro.bus.hooks``)."""
        self.hooks.add(kind, fn)
        return self

    def retry(self, name: str, policy: RetryPolicy | None = None) -> Self:
        """Retry calls to ``name`` on retryable errors (declare only idempotent commands)."""
        self._retries[name] = policy or RetryPolicy()
        return self

    # -- calling -----------------------------------------------------------------------

    def _require_caller(self) -> Caller:
        if self._caller is None:
            raise RuntimeError(
                "this Micro is not connected: use 'async with Micro() as micro' or "
                "'await micro.open()' before act()"
            )
        return self._caller

    async def act(
        self,
        name: str,
        payload: Any = None,
        *,
        timeout: float | None = None,
        meta: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        min_position: int | None = None,
    ) -> Any:
        """Call ``name`` and return its reply, or raise the typed error it raised.

        Usage::

            total = await micro.act("math.add", {"a": 1, "b": 2}, timeout=2)
        """
        return (
            await self.request(
                name,
                payload,
                timeout=timeout,
                meta=meta,
                idempotency_key=idempotency_key,
                min_position=min_position,
            )
        ).value

    async def request(
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
        return await self._require_caller().request(
            name,
            payload,
            timeout=timeout,
            meta=meta,
            idempotency_key=idempotency_key,
            min_position=min_position,
            retry=self._retries.get(name),
        )

    def act_stream(
        self,
        name: str,
        payload: Any = None,
        *,
        timeout: float | None = None,
        meta: dict[str, Any] | None = None,
    ) -> AsyncIterator[Any]:
        """Yield the intermediate messages of ``name``, then its final reply.

        ``timeout`` bounds the whole stream.
        """
        return self._require_caller().stream(name, payload, timeout=timeout, meta=meta)

    # -- life cycle --------------------------------------------------------------------

    async def open(self) -> Self:
        """Connect and serve every endpoint; returns once the server confirmed them."""
        if self._opened:
            return self
        self._loop = asyncio.get_running_loop()
        self.client = await connect(self.settings)
        self._caller = Caller(self.client, self.settings, self.hooks)
        self._responder = Responder(self.client, self.settings, self._caller, self.hooks)
        await self._responder.serve(list(self.endpoints.values()))
        self._opened = True
        self._served = True
        if self.endpoints:
            _log.info(
                "serving",
                service=self.settings.service,
                commands=len(self.endpoints),
                namespace=self.settings.namespace,
            )
        await self.hooks.run_simple("on_start", self)
        return self

    async def close(self) -> None:
        """Stop taking requests, finish those in flight, flush and close the connection."""
        if not self._opened:
            return
        self._opened = False
        with contextlib.suppress(Exception):
            await self.hooks.run_simple("on_stop", self)
        if self._responder is not None:
            await self._responder.drain(self.settings.drain_timeout)
        if self.client is not None and not self.client.is_closed:
            with contextlib.suppress(Exception):
                await self.client.flush(timeout=2)
            await self.client.close()
        self._responder = None
        self._caller = None

    async def serve(self) -> None:
        """Serve until ``stop()`` or SIGINT/SIGTERM, then drain and close."""
        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, self._stop.set)
                    installed.append(sig)
        try:
            await self.open()
            await self._stop.wait()
            _log.info("stopping: draining requests in flight", service=self.settings.service)
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            await self.close()

    def start(self) -> None:
        """Serve in the foreground until SIGINT/SIGTERM (the blocking form of ``serve``)."""
        asyncio.run(self.serve())

    def stop(self) -> None:
        """Ask a serving Micro to stop; safe from any thread or a signal handler."""
        if self._stop is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._stop.set)

    @property
    def serving(self) -> bool:
        """True while connected and serving."""
        return self._opened

    @property
    def has_served(self) -> bool:
        """True once this Micro has been opened, even if it has stopped since."""
        return self._served

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        task.add_done_callback(lambda done: done.exception() if not done.cancelled() else None)

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
