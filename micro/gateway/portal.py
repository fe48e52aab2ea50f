"""A portal: a gateway declared rather than coded, served beside the apps it hosts.

An app file that defines a ``Portal`` named ``portal`` is run by ``micro run`` as a whole:
the gateway and every hosted app in one process, on one event loop, sharing one NATS
connection and one event store (so a command's position is one the gateway's feed and
views understand). ``micro run`` owns the signals and the order of opening and closing.

    portal = Portal(
        title="REST portal",
        routes=[Route("GET", "/accounts/{id}", "account balance")],
        console=Path(__file__).parent / "static",
        apps=[Path(__file__).parent.parent / "bank"],
    )
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from micro.app import Micro
from micro.eventstore import EventStore, open_event_store
from micro.gateway.fanout import FanOut
from micro.gateway.gateway import Gateway
from micro.gateway.routes import Route
from micro.gateway.settings import GatewaySettings

__all__ = ["Portal", "serve_portal"]

_log = structlog.get_logger("micro.gateway")


@dataclass(frozen=True)
class Portal:
    """What a portal is made of: its routes, console, title and the apps beside it."""

    title: str = "micro gateway"
    """Shown in the OpenAPI document, and in the line that announces the URL."""
    routes: Sequence[Route] = ()
    """Explicit routes, besides those generated from discovery."""
    fan_outs: Sequence[FanOut] = ()
    """Routes that call several commands at once and answer with each outcome."""
    console: Path | None = None
    """A folder of static files served at ``/`` (its ``index.html``) and ``/static/``."""
    apps: Sequence[Path] = ()
    """App files or folders run beside the gateway (``micro run`` also takes them)."""
    exclude: Sequence[str] = ()
    """Commands (glob patterns) never routed over HTTP."""
    service: str = "gateway"
    settings: GatewaySettings | None = field(default=None, compare=False)
    """Overrides ``MICRO_GATEWAY_*``; required services and the token check are derived."""


async def serve_portal(
    portal: Portal | None,
    apps: Sequence[Micro],
    stop: asyncio.Event,
    *,
    announce: Callable[[str], None] = print,
) -> None:
    """Serve ``apps`` (and the portal's gateway, if any) until ``stop`` is set.

    A Micro that serves nothing opens the shared connection first (starting the embedded
    broker when one is needed); the event store opens on it, then the apps, then the
    gateway. They close in the reverse order.
    """
    front = Micro(service=portal.service if portal is not None else "micro-run")
    opened: list[Micro] = []
    store: EventStore | None = None
    gateway: Gateway | None = None
    try:
        await front.open()
        commanders = [app for app in apps if "commander" in app.modules.instances]
        if commanders or portal is not None:
            store = await _shared_store(front)
            for app in commanders:
                app.commander.store = store
        for app in apps:
            await app.open(client=front.client)
            opened.append(app)
        if portal is not None:
            gateway = _gateway(portal, front, apps, store)
            await gateway.start()
            announce(f"{portal.title}: {gateway.url}  (API docs: {gateway.url}/docs)")
        await stop.wait()
    finally:
        if gateway is not None:
            await gateway.stop()
        for app in reversed(opened):
            await app.close()
        if store is not None:
            await store.close()
        await front.close()


async def _shared_store(owner: Micro) -> EventStore:
    settings = owner.settings
    if settings.event_store == "memory":
        _log.warning("memory event store: events last as long as the process")
    store = open_event_store(settings, owner.client)
    await store.start()
    return store


def _gateway(
    portal: Portal, front: Micro, apps: Sequence[Micro], store: EventStore | None
) -> Gateway:
    served = {name for app in apps for name in app.endpoints}
    base = portal.settings or GatewaySettings()
    settings = base.model_copy(
        update={
            "required_services": base.required_services
            or sorted({app.settings.service for app in apps if app.endpoints}),
            "verify_command": base.verify_command
            or ("auth whoami" if "auth whoami" in served else None),
            "exclude": [*base.exclude, *portal.exclude],
        }
    )
    return Gateway(
        front,
        settings,
        routes=portal.routes,
        fan_outs=portal.fan_outs,
        event_store=store,
        console=portal.console,
        title=portal.title,
    )
