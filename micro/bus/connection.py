"""Connecting to NATS: the configured URL, a local server, or the embedded one."""

from __future__ import annotations

import asyncio
import math

import structlog
from nats.aio.client import Client

from micro.bus.embedded import ensure_embedded_server, is_listening
from micro.bus.nats_client import ConnectOptions, open_client
from micro.errors import UnavailableError
from micro.log import redact_text
from micro.settings import Settings

__all__ = ["confirm", "connect", "resolve_url"]

_log = structlog.get_logger("micro.bus")


async def resolve_url(settings: Settings) -> str:
    """The NATS URL to use: ``nats_url``, else a server on 127.0.0.1:4222, else embedded."""
    if settings.nats_url:
        return settings.nats_url
    port = settings.embedded_port
    if settings.embedded:
        # Also when a server already listens there: this process then stands by to take
        # it over, so the bus outlives the process that started it.
        return await asyncio.to_thread(ensure_embedded_server, settings.data_dir, port)
    if await asyncio.to_thread(is_listening, "127.0.0.1", port):
        return f"nats://127.0.0.1:{port}"
    raise UnavailableError(
        f"nothing is running: no NATS_URL is set and nothing listens on 127.0.0.1:{port}. "
        "Start a service first (micro run samples/simplest, in another terminal), "
        "or set NATS_URL to your NATS server"
    )


async def connect(settings: Settings, *, name: str | None = None) -> Client:
    """A connected nats-py client with the security ``settings`` ask for.

    ``UnavailableError`` names the server (never a secret) when none can be reached or the
    server refuses us; ``ConfigError`` names the setting when a file it points at is wrong.
    """
    options = ConnectOptions.from_settings(settings)
    url = await resolve_url(settings)

    async def on_error(error: Exception) -> None:
        _log.warning("nats connection error", error=redact_text(str(error)))

    return await open_client(
        url,
        options,
        name=name or settings.service,
        connect_timeout=settings.connect_timeout,
        on_error=on_error,
        ping_interval=settings.ping_interval,
    )


async def confirm(client: Client, timeout: float) -> None:
    """Return once the server has processed every command this client sent before.

    ``Client.flush`` alone does not promise that: nats-py (2.16) writes its PING straight to
    the socket, ahead of commands still queued for its flusher task, such as the SUB just
    made. The server may then answer PONG before it knows the subscription, and a request
    from another connection gets "no responders". The first flush lets the flusher write
    what was queued; the second PING follows it on the wire, so its PONG proves it all.
    """
    await client.flush(timeout=math.ceil(timeout))
    await client.flush(timeout=math.ceil(timeout))
