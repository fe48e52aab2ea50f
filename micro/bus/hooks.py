"""Life-cycle hooks around requests, calls and the service itself.

Server side, in order: ``on_request(payload, ctx)`` observes, ``pre_handler(payload, ctx)``
may reject by raising (a guard such as authentication), the handler (wrapped by its own
middleware) runs, ``on_response(reply, ctx)`` may return a new reply (``None`` keeps it),
``on_error(error, ctx)`` observes failures, rejections included. Client side:
``on_act(name, payload, ctx)`` before a call (``ctx`` is the request being served, or
``None``; raising stops the call) and ``on_act_finished(name, outcome, seconds)`` after it
(``outcome`` is the reply or the error). Service: ``on_start(micro)`` once serving (raising
fails ``open()`` and closes the Micro), ``on_stop(micro)`` when stopping.

A server-side hook that raises turns into a typed error reply (a ``MicroError`` as itself,
anything else as ``InternalError``); the service keeps serving. Observers (``on_error``,
``on_act_finished``, ``on_stop``) that raise are logged and change nothing. Hooks may be
sync or async; their signatures are checked when they are registered.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from micro.context import Context

if TYPE_CHECKING:
    from micro.bus.endpoint import Endpoint

__all__ = ["HOOK_ARITY", "Hooks", "check_hook", "check_middleware"]

_log = structlog.get_logger("micro.hooks")

HOOK_ARITY = {
    "on_request": 2,
    "pre_handler": 2,
    "on_response": 2,
    "on_error": 2,
    "on_act": 3,
    "on_act_finished": 3,
    "on_start": 1,
    "on_stop": 1,
}

Hook = Callable[..., Any]


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


_HOOK_ARGUMENTS = {
    "on_request": "(payload, ctx)",
    "pre_handler": "(payload, ctx)",
    "on_response": "(reply, ctx)",
    "on_error": "(error, ctx)",
    "on_act": "(name, payload, ctx)",
    "on_act_finished": "(name, outcome, seconds)",
    "on_start": "(micro)",
    "on_stop": "(micro)",
}


def _check_arity(what: str, fn: Callable[..., Any], arity: int, shape: str) -> None:
    if not callable(fn):
        raise TypeError(f"{what} is not callable: {fn!r}")
    try:
        inspect.signature(fn).bind(*([None] * arity))
    except TypeError as error:
        raise TypeError(f"{what} must accept {shape}; {_name(fn)} cannot: {error}") from None
    except ValueError:  # no signature to inspect (some builtins): trust it
        pass


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def check_hook(kind: str, hook: Hook) -> None:
    """Raise ``TypeError``/``ValueError`` at registration for a hook that cannot be called."""
    if not isinstance(kind, str) or kind not in HOOK_ARITY:
        raise ValueError(f"unknown hook {kind!r}; hooks are {', '.join(sorted(HOOK_ARITY))}")
    _check_arity(f"the {kind} hook", hook, HOOK_ARITY[kind], _HOOK_ARGUMENTS[kind])


def check_middleware(name: str, middleware: Callable[..., Any]) -> None:
    """Raise ``TypeError`` at registration for middleware that cannot be called."""
    _check_arity(f"middleware of {name!r}", middleware, 3, "(payload, ctx, call_next)")


@dataclass(slots=True)
class Hooks:
    on_request: list[Hook] = field(default_factory=list)
    pre_handler: list[Hook] = field(default_factory=list)
    on_response: list[Hook] = field(default_factory=list)
    on_error: list[Hook] = field(default_factory=list)
    on_act: list[Hook] = field(default_factory=list)
    on_act_finished: list[Hook] = field(default_factory=list)
    on_start: list[Hook] = field(default_factory=list)
    on_stop: list[Hook] = field(default_factory=list)

    def add(self, kind: str, hook: Hook) -> None:
        check_hook(kind, hook)
        getattr(self, kind).append(hook)

    @property
    def server_side(self) -> bool:
        return bool(self.on_request or self.pre_handler or self.on_response)

    async def run_server(
        self,
        endpoint: Endpoint,
        payload: Any,
        ctx: Context,
        invoke: Callable[[Endpoint, Any, Context], Awaitable[Any]],
    ) -> Any:
        for hook in self.on_request:
            await _maybe_await(hook(payload, ctx))
        for hook in self.pre_handler:
            await _maybe_await(hook(payload, ctx))
        reply = await invoke(endpoint, payload, ctx)
        for hook in self.on_response:
            changed = await _maybe_await(hook(reply, ctx))
            if changed is not None:
                reply = changed
        return reply

    async def run_on_error(self, endpoint: Endpoint, error: Exception, ctx: Context) -> None:
        for hook in self.on_error:
            try:
                await _maybe_await(hook(error, ctx))
            except Exception:
                _log.exception("on_error hook failed", command=endpoint.name)

    async def run_simple(self, kind: str, *args: Any) -> None:
        """Run every hook of ``kind``; the first that raises stops the others and raises."""
        for hook in getattr(self, kind):
            await _maybe_await(hook(*args))

    async def run_observers(self, kind: str, *args: Any) -> None:
        """Run every hook of ``kind``, logging failures: observers never change the outcome."""
        for hook in getattr(self, kind):
            try:
                await _maybe_await(hook(*args))
            except Exception:
                _log.exception("hook failed", hook=kind, function=_name(hook))
