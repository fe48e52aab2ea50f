"""The host: what the command layer and the modules need from the service they belong to.

``Micro`` is the host of a service. The commander, the event handlers and the modules take
a ``Host`` instead of ``Micro`` itself: they see its settings, its connection and its
endpoints, add endpoints and middleware, make a context for work that no request started,
and may ask it to stop; nothing else, and nothing private.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from nats.aio.client import Client

from micro.bus.endpoint import Endpoint, Middleware
from micro.context import Context
from micro.settings import Settings

__all__ = ["Host"]


class Host(Protocol):
    """The service a module or the command layer belongs to (a ``Micro``)."""

    settings: Settings
    client: Client | None
    """The service's NATS connection once it is open."""
    app_dir: Path
    """Where the app's rule, reducer and model sheets are looked up."""
    endpoints: dict[str, Endpoint]

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
    ) -> object:
        """Serve ``name`` with ``handler``."""
        ...

    def use(self, name: str, middleware: Middleware) -> object:
        """Wrap one endpoint in a middleware."""
        ...

    def hook(self, kind: str, fn: Callable[..., Any]) -> object:
        """Register a life-cycle hook (see ``micro.bus.hooks``)."""
        ...

    def new_context(
        self,
        command: str,
        *,
        trace_id: str | None = None,
        meta: dict[str, Any] | None = None,
        user: Any = None,
        idempotency_key: str | None = None,
    ) -> Context:
        """A context for work no request started (an event handler, a seed)."""
        ...

    async def close(self) -> None:
        """Drain requests in flight and close."""
        ...

    def stop(self) -> None:
        """Make a running ``serve()`` return."""
        ...
