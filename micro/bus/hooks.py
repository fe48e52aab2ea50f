"""Life-cycle hooks around requests, calls and the service itself.

Server side, in order: ``on_request(payload, ctx)`` observes, ``pre_handler(payload, ctx)``
may reject by raising (a guard such as authentication), the handler (wrapped by its own
middleware) runs, ``on_response(reply, ctx)`` may return a new reply, ``on_error(error,
ctx)`` observes failures. Client side: ``on_act(name, payload, ctx)`` before a call and
``on_act_finished(name, outcome, seconds)`` after it (``outcome`` is the reply or the error).
Service: ``on_start(micro)`` once serving, ``on_stop(micro)`` when stopping.

A hook that raises turns into a typed error reply; the service keeps serving.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from micro.bus.context import Context

if TYPE_CHECKING:
    from micro.bus.endpoint import Endpoint

__all__ = ["HOOK_ARITY", "Hooks", "check_hook"]

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


def check_hook(kind: str, hook: Hook) -> None:
    """Raise ``TypeError``/``ValueError`` at registration for a hook that cannot be called."""
    if kind not in HOOK_ARITY:
        raise ValueError(f"unknown hook {kind!r}; hooks are {', '.join(sorted(HOOK_ARITY))}")
    if not callable(hook):
        raise TypeError(f"the {kind} hook is not callable: {hook!r}")
    try:
        inspect.signature(hook).bind(*([None] * HOOK_ARITY[kind]))
    except TypeError as error:
        raise TypeError(
            f"the {kind} hook must accept {HOOK_ARITY[kind]} positional arguments: {error}"
        ) from None
    except ValueError:  # no signature to inspect (some builtins): trust it
        pass


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
        for hook in getattr(self, kind):
            await _maybe_await(hook(*args))
