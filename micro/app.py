"""``Micro``: the one object a service author touches.

It composes the parts (connection, responder, caller, hooks) and owns their life cycle:
open, serve until a signal, drain, close. (A little over 600 lines: this is the one class a
service author reads, and its methods' docstrings are its manual.)
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncGenerator, Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import pydantic
import structlog
from nats.aio.client import Client
from nats.errors import Error as NatsError

from micro import telemetry
from micro._app_dir import app_dir
from micro._signals import stop_on_signals
from micro.bus.caller import Caller, Reply, RetryPolicy
from micro.bus.connection import confirm, connect
from micro.bus.endpoint import Endpoint, Middleware
from micro.bus.events import Events, Listener
from micro.bus.hooks import Hooks, check_middleware
from micro.bus.responder import FALLBACK_KIND, Responder
from micro.bus.services import ServiceResponder, new_instance_id
from micro.bus.subjects import fallback_subject
from micro.context import Context, new_id
from micro.directory import discover
from micro.discovery import ServiceList, ServiceRecord, list_services
from micro.errors import ConfigError, ValidationError
from micro.log import configure_logging
from micro.loop import run as run_on_loop
from micro.modules.builtin import register_builtin_modules
from micro.modules.loader import ModuleLoader
from micro.session import Session
from micro.settings import Settings

if TYPE_CHECKING:
    from micro.command.commander import Commander

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
        invalid = ValidationError.from_pydantic(error, what="settings")
        raise ConfigError(invalid.message, details=invalid.details) from None


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
        self._listeners: list[Listener] = []
        self._events: Events | None = None
        self._services: ServiceResponder | None = None
        self.app_dir = self.settings.app_dir or app_dir()
        """Where the app's rule, reducer and model sheets are looked up."""
        self.modules = ModuleLoader(self)
        register_builtin_modules(self.modules)
        self._procedures: list[tuple[list[str], Callable[..., Any]]] = []
        self._fallback: Endpoint | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        self._owns_client = True
        self.instance_id = new_instance_id()
        """This instance's id in the NATS Services API (``$SRV.PING.<service>.<id>``)."""

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
        kind: str = "command",
        request_schema: dict[str, Any] | None = None,
        reply_schema: dict[str, Any] | None = None,
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
            kind=kind,
            declared_request_schema=request_schema,
            declared_reply_schema=reply_schema,
        )
        self.endpoints[name] = endpoint
        if self._responder is not None:
            self._spawn(self._responder.add(endpoint))
        if self._services is not None:
            self._spawn(self._services.start())  # a client that starts serving joins $SRV
        return self

    def fallback(self, handler: Callable[..., Any], *, description: str = "") -> Self:
        """Answer every command of this namespace that no service serves.

        Instead of ``ServiceNotFoundError``, a caller of a command nobody serves gets what
        ``handler`` returns or raises. The handler takes what ``add``'s handlers take;
        ``ctx.command`` is the command that was asked for. One service of a namespace may
        hold the fallback (any number of its instances): a second one fails to start with
        ``ConfigError``.

        Usage::

            def removed(payload, ctx):
                raise NotFoundError(f"{ctx.command!r} was removed in 2.0: use 'pay'")

            micro.fallback(removed)
        """
        if self._fallback is not None:
            raise ValueError("this Micro already has a fallback handler")
        if self._opened:
            raise RuntimeError("add the fallback before the Micro starts")
        self._fallback = Endpoint.build(
            "*", handler, kind=FALLBACK_KIND, description=description or "the fallback"
        )
        return self

    async def _serve_fallback(self, responder: Responder) -> None:
        assert self._fallback is not None
        # Checked through discovery, so a rival in another process is found too; two
        # services starting at the same instant can both pass (documented).
        for record in await self.services():
            holds = any(endpoint.kind == FALLBACK_KIND for endpoint in record.endpoints)
            if holds and record.service != self.settings.service:
                raise ConfigError(
                    f"service {record.service!r} already holds the fallback of namespace "
                    f"{self.settings.namespace!r}; only one service of a namespace may",
                    details={"holder": record.service, "namespace": self.settings.namespace},
                )
        await responder.add(
            self._fallback, flush=False, subject=fallback_subject(self.settings.namespace)
        )

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
        check_middleware(name, middleware)
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
        )

    def session(self, *, meta: dict[str, Any] | None = None) -> Session:
        """Calls that read their own writes on any instance, and share ``meta`` (a token).

        Usage::

            session = micro.session()
            await session.act("deposit", {"id": "a1", "amount": 5})
            await session.act("account balance", {"id": "a1"})  # sees the deposit
        """
        return Session(self, meta=meta)

    def act_stream(
        self,
        name: str,
        payload: Any = None,
        *,
        timeout: float | None = None,
        meta: dict[str, Any] | None = None,
    ) -> AsyncGenerator[Any, None]:
        """Yield the intermediate messages of ``name``, then its final reply.

        ``timeout`` is a deadline for the whole stream (request to final reply), not a gap
        between messages: a stream still going when it passes raises ``TimeoutError``. A
        consumer may ``break`` early; the service is never held up by it.

        Usage::

            async for message in micro.act_stream("export", {"from": 0}, timeout=30):
                print(message)  # intermediate messages, then the final reply
        """
        return self._require_caller().stream(name, payload, timeout=timeout, meta=meta)

    # -- events ------------------------------------------------------------------------

    def on(self, name: str, handler: Callable[..., Any], *, broadcast: bool = False) -> Self:
        """Run ``handler(payload[, ctx])`` for each event ``name``; returns the Micro.

        Each subscribing service gets an event once, on one of its instances; with
        ``broadcast=True`` every instance of this service gets it. Listener errors are logged.

        Usage::

            micro.on("account opened", lambda event: print(event["id"]))
        """
        listener = Listener.build(name, handler, broadcast=broadcast)
        self._listeners.append(listener)
        if self._events is not None:
            events = self._events

            async def listen() -> None:
                await events.listen(listener)
                await confirm(events.client, self.settings.connect_timeout)

            self._spawn(listen())
        if self._services is not None:
            self._spawn(self._services.start())  # a client that starts listening joins $SRV
        return self

    async def emit(self, name: str, payload: Any = None) -> None:
        """Publish event ``name`` to every service listening for it; no reply, no waiting.

        Delivery is at most once, to the listeners subscribed at that moment.

        Usage::

            await micro.emit("account opened", {"id": "a1"})
        """
        if self._events is None:
            raise RuntimeError(
                "this Micro is not connected: use 'async with Micro() as micro' or "
                "'await micro.open()' before emit()"
            )
        await self._events.emit(name, payload)

    # -- discovery -----------------------------------------------------------------------

    def _announced(self) -> bool:
        return bool(self.endpoints or self._listeners or self._fallback)

    def _learn(self, records: list[ServiceRecord]) -> None:
        # Idempotent commands seen in discovery are retried on retryable errors from now on.
        if self._caller is not None:
            for record in records:
                self._caller.idempotent.update(e.name for e in record.endpoints if e.idempotent)

    async def services(
        self,
        name: str | None = None,
        *,
        stats: bool = False,
        all_namespaces: bool = False,
        schemas: bool = True,
        gap: float | None = None,
        deadline: float | None = None,
    ) -> ServiceList:
        """Every running service instance of this namespace (or of service ``name``).

        Replies are gathered until none came for ``gap`` seconds, for ``deadline`` seconds
        at most (``discovery_gap`` and ``discovery_deadline`` by default); the list's
        ``partial`` is true when the deadline cut it short. ``stats=True`` adds each
        endpoint's request and error counts and timings; ``schemas=False`` leaves the JSON
        Schemas out (smaller answers).

        Usage::

            for record in await micro.services(stats=True):
                print(record.service, record.version, record.id, len(record.endpoints))
        """
        client = self._require_caller().client
        records = await list_services(
            client,
            namespace=None if all_namespaces else self.settings.namespace,
            service=name,
            stats=stats,
            schemas=schemas,
            gap=self.settings.discovery_gap if gap is None else gap,
            deadline=self.settings.discovery_deadline if deadline is None else deadline,
        )
        self._learn(records)
        return records

    async def discover(
        self,
        wait_for: str | Iterable[str] = (),
        *,
        timeout: float = 10.0,
        delay: float = 0.05,
        factor: float = 2.0,
        max_delay: float = 1.0,
    ) -> list[ServiceRecord]:
        """Wait until each service in ``wait_for`` runs, retrying with bounded backoff.

        Raises ``DiscoveryTimeoutError`` naming the services still missing after ``timeout``.

        Usage::

            await micro.discover(wait_for=["bank", "auth"], timeout=10)
        """
        client = self._require_caller().client
        records = await discover(
            client,
            wait_for,
            namespace=self.settings.namespace,
            timeout=timeout,
            delay=delay,
            factor=factor,
            max_delay=max_delay,
            gap=self.settings.discovery_gap,
            deadline=self.settings.discovery_deadline,
        )
        self._learn(records)
        return records

    # -- the event-sourced side (modules) -----------------------------------------------

    @property
    def commander(self) -> Commander:
        """The command cycle of this service (loads the ``commander`` module)."""
        self.modules.want(["commander"])
        commander: Commander = self.modules.get("commander")
        return commander

    def add_view(self, name: str, view: Callable[..., Any]) -> Self:
        """Serve a read-only view ``view(query, models)`` over this service's models.

        Usage::

            micro.add_view("account balance", lambda q, models: models.account.get(q["id"]))
        """
        self.commander.add_view(name, view)
        return self

    def on_event(
        self,
        event_type: Any,
        handler: Callable[..., Any] | None = None,
        *,
        group: str | None = None,
    ) -> Any:
        """Run ``handler(event)`` for every stored event of ``event_type`` (at least once).

        Usage, as a decorator or a call::

            @micro.on_event("TransferRequested")
            async def carry_out(event): ...
        """
        self.modules.want(["app_stream"])
        handlers = self.modules.get("app_stream")

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            handlers.on(event_type, fn, group=group)
            return fn

        if handler is None:
            return register
        register(handler)
        return self

    def add_procedure(self, *, load: list[str], start: Callable[..., Any]) -> Self:
        """Run ``start(**modules)`` once the named modules are loaded and started."""
        if not callable(start):
            raise TypeError("add_procedure(start=...) must be callable")
        self.modules.want(load)
        self._procedures.append((list(load), start))
        return self

    async def _run_procedure(self, names: list[str], procedure: Callable[..., Any]) -> None:
        modules = {name: self.modules.get(name) for name in names}
        result = procedure(**modules)
        if inspect.isawaitable(result):
            await result

    def health(self) -> dict[str, Any]:
        """Liveness of the connection and, when loaded, of the models."""
        status: dict[str, Any] = {
            "service": self.settings.service,
            "connected": bool(self.client is not None and self.client.is_connected),
        }
        if "commander" in self.modules.instances:
            status["models"] = self.modules.instances["commander"].health()
        if "app_stream" in self.modules.instances:
            status["event_handlers"] = self.modules.instances["app_stream"].health()
        if self._responder is not None and self._responder.load is not None:
            status["load"] = self._responder.load.status()
        return status

    async def _lag(self) -> int | None:
        commander = self.modules.instances.get("commander")
        projector = getattr(commander, "projector", None)
        return None if projector is None else await telemetry.refresh_lag(projector)

    # -- life cycle --------------------------------------------------------------------

    async def open(self, *, client: Client | None = None) -> Self:
        """Connect and serve every endpoint; returns once the server confirmed them.

        ``client`` shares a connection that is already open (several services in one
        process): this Micro then leaves it open when it closes.
        """
        if self._opened:
            return self
        self._loop = asyncio.get_running_loop()
        telemetry.refresh()  # an SDK set up before open() is used from here on
        self._owns_client = client is None
        self.client = client or await connect(self.settings)
        self._caller = Caller(
            self.client, self.settings, self.hooks, retries=self._retries, local=self.endpoints
        )
        await self._caller.start()
        self._responder = Responder(self.client, self.settings, self._caller, self.hooks)
        telemetry.metrics.watch_responder(self._responder)
        self._events = Events(self.client, self.settings, self._caller)
        for listener in self._listeners:
            await self._events.listen(listener)
        # A Micro that serves nothing is a client and stays off $SRV: with no subscriber at
        # all a look at discovery gets "no responders" at once instead of waiting.
        self._services = ServiceResponder(
            self.client,
            self.settings,
            self._responder,
            instance_id=self.instance_id,
            serving=self._announced,
            lag=self._lag,
        )
        if self._announced():
            await self._services.start()
        try:
            # Modules first (the commander catches its models up): nothing is served before.
            await self.modules.start()
            if self._fallback is not None:
                await self._serve_fallback(self._responder)
            await self._responder.serve(list(self.endpoints.values()))  # flushes all above
            for names, procedure in self._procedures:
                await self._run_procedure(names, procedure)
            await self._services.announce("started")
        except BaseException:
            await self.modules.stop()
            if self._owns_client:
                await self.client.close()
            raise
        self._opened = True
        self._served = True
        if self.endpoints:
            _log.info(
                "serving",
                service=self.settings.service,
                commands=len(self.endpoints),
                namespace=self.settings.namespace,
            )
        try:
            await self.hooks.run_simple("on_start", self)
        except BaseException:
            await self.close()  # a service whose start failed must not linger half-open
            raise
        return self

    async def close(self) -> None:
        """Stop taking requests, finish those in flight, flush and close the connection."""
        if not self._opened:
            return
        self._opened = False
        await self.hooks.run_observers("on_stop", self)
        if self._services is not None:
            await self._services.stop()  # leave discovery first: no new callers find us
            with contextlib.suppress(NatsError, OSError):
                await self._services.announce("stopped")
        if self._events is not None:
            await self._events.drain(self.settings.drain_timeout)
        if self._responder is not None:
            await self._responder.drain(self.settings.drain_timeout)
        await self.modules.stop()
        if self.client is not None and not self.client.is_closed:
            with contextlib.suppress(Exception):
                await confirm(self.client, 2)  # what was published reached the server
            # A server that is gone cannot be told goodbye; the stop must finish all the same.
            if self._owns_client:
                with contextlib.suppress(NatsError, OSError):
                    await self.client.close()
        self._responder = None
        self._caller = None
        self._events = None
        self._services = None

    async def serve(self) -> None:
        """Serve until ``stop()`` or SIGINT/SIGTERM, then drain and close."""
        self._stop = asyncio.Event()
        # The handlers stay installed while draining: a second SIGTERM then is a no-op,
        # not a kill that drops the requests in flight.
        with stop_on_signals(self._stop):
            try:
                await self.open()
                await self._stop.wait()
                _log.info("stopping: draining requests in flight", service=self.settings.service)
            finally:
                await self.close()

    def start(self) -> None:
        """Serve in the foreground until SIGINT/SIGTERM (the blocking form of ``serve``), on
        the loop ``event_loop`` names (uvloop by default where installed)."""
        run_on_loop(self.serve(), loop=self.settings.event_loop)

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
        # Kept until done (the loop holds tasks only weakly), and a failure is logged.
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._spawned_done)

    def _spawned_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.error("background task failed", error=repr(task.exception()))

    def new_context(
        self,
        command: str,
        *,
        trace_id: str | None = None,
        meta: dict[str, Any] | None = None,
        user: Any = None,
        idempotency_key: str | None = None,
    ) -> Context:
        """A context for work no request started: calls made under it carry its trace."""
        return Context(
            service=self.settings.service,
            command=command,
            trace_id=trace_id or new_id(),
            span_id=new_id(),
            meta=dict(meta or {}),
            user=user,
            idempotency_key=idempotency_key,
            _caller=self._caller,
        )

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
