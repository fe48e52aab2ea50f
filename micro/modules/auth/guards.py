"""Guards for plain handlers: a wrapper and a middleware that demand an authenticated caller.

Rules declare ``auth`` and ``roles`` in their sheet and the commander's guard checks them;
handlers added with ``micro.add`` use these instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from micro.bus.endpoint import Endpoint, Middleware
from micro.bus.responder import call_handler
from micro.context import Context
from micro.modules.auth.identity import AuthUser

__all__ = ["Authenticate", "Middleware", "middleware", "required"]

Authenticate = Callable[..., Awaitable[AuthUser | None]]
"""``Auth.authenticate``: ``(ctx, *, mode, roles)``."""


def required(
    authenticate: Authenticate,
    handler: Callable[..., Any] | None = None,
    *,
    roles: list[str] | tuple[str, ...] = (),
) -> Any:
    """``handler`` (or a decorator, without one) that runs only for an authenticated caller."""

    def wrap(function: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        Endpoint.build("auth required", function)  # a handler of the wrong shape fails now
        endpoints: dict[str, Endpoint] = {}  # by command name, so errors name the command

        async def guarded(payload: Any, ctx: Context) -> Any:
            await authenticate(ctx, mode="required", roles=roles)
            endpoint = endpoints.get(ctx.command)
            if endpoint is None:
                endpoint = endpoints[ctx.command] = Endpoint.build(ctx.command, function)
            return await call_handler(endpoint, payload, ctx)

        guarded.__name__ = getattr(function, "__name__", "guarded")
        guarded.__doc__ = function.__doc__
        return guarded

    return wrap if handler is None else wrap(handler)


def middleware(
    authenticate: Authenticate, *, roles: list[str] | tuple[str, ...] = ()
) -> Middleware:
    """Middleware refusing unauthenticated callers."""

    async def check(
        payload: Any, ctx: Context, call_next: Callable[[Any, Context], Awaitable[Any]]
    ) -> Any:
        await authenticate(ctx, mode="required", roles=roles)
        return await call_next(payload, ctx)

    return check
