"""The ``error`` module: operational versus fatal errors, and handlers for stray ones.

An operational error is part of normal life (bad input, a timeout, a service away): the
request fails with a typed error and the service carries on. A fatal error means the process
can no longer be trusted (``FatalError``, ``MemoryError``, ``SystemError``...): the service
logs the reason, drains its requests, closes its connection and exits with a non-zero code.

Loading the module also:

- maps common exceptions raised by handlers into the ``MicroError`` tree
  (``to_micro_error``), so callers get a stable code instead of ``internal``: timeouts,
  connection and permission errors, missing files, pydantic validation errors and the
  nats-py errors. Anything else stays an ``InternalError``: a stray ``KeyError`` is a bug,
  not a "not found";
- installs an asyncio loop exception handler, so an exception in a task nobody awaited is
  logged with its context (task, coroutine, message) instead of being lost, and a thread's
  uncaught exception is logged the same way.

    micro.modules.want(["error"])
    micro.modules.get("error").fatal("the ledger is corrupt")   # drain, close, exit 70
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal

import pydantic
import structlog

from micro.context import Context
from micro.errors import (
    BadRequestError,
    FatalError,
    ForbiddenError,
    InternalError,
    MicroError,
    NotFoundError,
    ServiceNotFoundError,
    TimeoutError,
    UnavailableError,
    ValidationError,
)

if TYPE_CHECKING:
    from micro.host import Host

__all__ = ["EXIT_FATAL", "ErrorModule", "FatalError", "classify", "to_micro_error"]

_log = structlog.get_logger("micro.error")

EXIT_FATAL = 70
"""Exit code of a service stopped by a fatal error (``EX_SOFTWARE``)."""

Kind = Literal["operational", "fatal"]


FATAL_TYPES: tuple[type[BaseException], ...] = (FatalError, MemoryError, SystemError)


def classify(error: BaseException) -> Kind:
    """``fatal`` when ``error`` (or what caused it) means the process must stop."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, FATAL_TYPES):
            return "fatal"
        seen.add(id(current))
        current = current.__cause__
    return "operational"


def _nats_error(error: BaseException) -> MicroError | None:
    try:
        import nats.errors as nats_errors
    except ImportError:  # pragma: no cover - nats-py is a dependency
        return None
    if isinstance(error, nats_errors.NoRespondersError):
        return ServiceNotFoundError(f"nobody serves the subject: {error}")
    if isinstance(error, nats_errors.TimeoutError):
        return TimeoutError(f"NATS timed out: {error}")
    if isinstance(
        error,
        nats_errors.ConnectionClosedError
        | nats_errors.NoServersError
        | nats_errors.StaleConnectionError
        | nats_errors.OutboundBufferLimitError,
    ):
        return UnavailableError(f"NATS is unavailable: {type(error).__name__}")
    return None


def to_micro_error(error: BaseException) -> MicroError:
    """``error`` as a ``MicroError`` with a stable code (itself if it already is one)."""
    if isinstance(error, MicroError):
        return error
    mapped = _nats_error(error)
    if mapped is None:
        if isinstance(error, pydantic.ValidationError):
            mapped = ValidationError.from_pydantic(error, what="data")
        elif isinstance(error, builtins.TimeoutError):  # asyncio.TimeoutError is this one
            mapped = TimeoutError(str(error) or "timed out")
        elif isinstance(error, PermissionError):
            mapped = ForbiddenError(str(error) or "permission denied")
        elif isinstance(error, FileNotFoundError):
            mapped = NotFoundError(str(error) or "not found")
        elif isinstance(error, ConnectionError):
            mapped = UnavailableError(str(error) or "connection failed")
        elif isinstance(error, UnicodeDecodeError):
            mapped = BadRequestError(f"undecodable text: {error.reason}")
        elif isinstance(error, FATAL_TYPES):
            mapped = FatalError(f"{type(error).__name__}: {error}")
        else:
            mapped = InternalError(f"{type(error).__name__}: {error}")
    mapped.__cause__ = error
    return mapped


class ErrorModule:
    """Global error handling for one service (the ``error`` module)."""

    def __init__(self, micro: Host) -> None:
        self.micro = micro
        self.exit_process = True
        """Exit the process after a fatal error (tests embedding a service turn it off)."""
        self.exit_code = EXIT_FATAL
        self.reason: str | None = None
        """Why the service stopped, once a fatal error stopped it."""
        self.stopped = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous_handler: Any = None
        self._previous_thread_hook: Any = None
        self._shutdown: asyncio.Task[None] | None = None
        micro.hook("on_error", self._on_request_error)

    # -- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._previous_handler = self._loop.get_exception_handler()
        self._loop.set_exception_handler(self._on_loop_error)
        self._previous_thread_hook = threading.excepthook
        threading.excepthook = self._on_thread_error
        for name in list(self.micro.endpoints):
            self.micro.use(name, self._translate)

    async def stop(self) -> None:
        if self._loop is not None and self._loop.get_exception_handler() == self._on_loop_error:
            self._loop.set_exception_handler(self._previous_handler)
        if self._previous_thread_hook is not None and threading.excepthook == self._on_thread_error:
            threading.excepthook = self._previous_thread_hook

    # -- the handlers -------------------------------------------------------------------

    async def _translate(
        self, payload: Any, ctx: Context, call_next: Callable[[Any, Context], Awaitable[Any]]
    ) -> Any:
        try:
            return await call_next(payload, ctx)
        except MicroError:
            raise
        except Exception as error:
            raise to_micro_error(error) from error

    async def _on_request_error(self, error: Exception, ctx: Context) -> None:
        if classify(error) == "fatal":
            cause = error.__cause__ or error
            self.fatal(f"{ctx.command!r} failed fatally: {type(cause).__name__}: {cause}", cause)

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        task = context.get("task") or context.get("future")
        details: dict[str, Any] = {"message": context.get("message", "")}
        if isinstance(task, asyncio.Task):
            details["task"] = task.get_name()
            details["coroutine"] = repr(task.get_coro())[:200]
        elif task is not None:
            details["future"] = repr(task)[:200]
        if context.get("handle") is not None:
            details["handle"] = repr(context["handle"])[:200]
        if isinstance(error, BaseException):
            _log.error(
                "unhandled error in a background task",
                exc_info=(type(error), error, error.__traceback__),
                **details,
            )
            if classify(error) == "fatal":
                self.fatal(f"a background task failed fatally: {type(error).__name__}: {error}")
        else:
            _log.error("asyncio reported a problem", **details)

    def _on_thread_error(self, arguments: threading.ExceptHookArgs) -> None:
        error = arguments.exc_value
        _log.error(
            "unhandled error in a thread",
            thread=arguments.thread.name if arguments.thread else None,
            exc_info=(arguments.exc_type, error, arguments.exc_traceback),
        )

    # -- stopping -----------------------------------------------------------------------

    def fatal(self, reason: str, error: BaseException | None = None) -> None:
        """Stop the service: log ``reason``, drain and close, then exit non-zero.

        Safe to call from any coroutine or callback of the service's loop; later calls add
        nothing (the first reason is the one reported).
        """
        if self._shutdown is not None:
            return
        self.reason = reason
        _log.critical(
            "fatal error: the service stops",
            reason=reason,
            service=self.micro.settings.service,
            exit_code=self.exit_code if self.exit_process else None,
            exc_info=(type(error), error, error.__traceback__) if error is not None else None,
        )
        loop = self._loop or asyncio.get_running_loop()
        self._shutdown = loop.create_task(self._stop_service(), name="micro: fatal shutdown")

    async def _stop_service(self) -> None:
        try:
            await self.micro.close()  # drain requests in flight, flush, close
        except Exception:
            _log.exception("closing after a fatal error failed")
        finally:
            self.micro.stop()  # a serve() waiting for a signal returns
            self.stopped.set()
        if self.exit_process:
            # Raised in a task, SystemExit leaves the event loop and asyncio.run, so a
            # service started with micro.start() exits with this code once closed.
            raise SystemExit(self.exit_code)

    async def wait_stopped(self, timeout: float | None = None) -> None:
        """Wait until a fatal error has finished stopping the service."""
        with contextlib.suppress(builtins.TimeoutError):
            await asyncio.wait_for(self.stopped.wait(), timeout)
