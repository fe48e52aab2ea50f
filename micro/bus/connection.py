"""Connecting to NATS: the configured URL, a local server, or the embedded one."""

from __future__ import annotations

import asyncio
import contextlib
import math
from urllib.parse import urlsplit

import nats
import structlog
from nats.aio.client import Client
from nats.errors import Error as NatsError

from micro.bus.embedded import ensure_embedded_server, is_listening
from micro.errors import UnavailableError
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


def _shown(url: str) -> str:
    """The URL without credentials, for error messages and logs."""
    parts = []
    for one in url.split(","):
        split = urlsplit(one.strip())
        host = split.hostname or one
        parts.append(f"{split.scheme}://{host}:{split.port}" if split.port else one.strip())
    return ",".join(parts)


async def _probe(servers: list[str], timeout: float) -> str | None:
    """None when some server accepts TCP connections, else the last reason none did.

    nats-py keeps retrying an initial connection that fails; probing first turns a wrong
    URL into one clear error at once instead of a wait until the timeout.
    """
    reason = "no server given"
    for server in servers:
        split = urlsplit(server if "://" in server else f"nats://{server}")
        host, port = split.hostname or "127.0.0.1", split.port or 4222
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except (TimeoutError, OSError) as error:
            reason = str(error) or f"no answer within {timeout}s"
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return None
    return reason


async def connect(settings: Settings, *, name: str | None = None) -> Client:
    """A connected nats-py client, or ``UnavailableError`` naming the URL."""
    url = await resolve_url(settings)
    servers = [part.strip() for part in url.split(",") if part.strip()]
    refused = await _probe(servers, settings.connect_timeout)
    if refused is not None:
        raise UnavailableError(
            f"cannot connect to NATS at {_shown(url)}: {refused}", details={"url": _shown(url)}
        )

    async def on_error(error: Exception) -> None:
        _log.warning("nats connection error", error=str(error))

    try:
        return await asyncio.wait_for(
            nats.connect(
                servers=servers,
                name=name or settings.service,
                connect_timeout=max(1, round(settings.connect_timeout)),
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                ping_interval=settings.ping_interval,
                max_outstanding_pings=2,
                error_cb=on_error,
                pending_size=64 * 1024 * 1024,
            ),
            timeout=settings.connect_timeout + 1,
        )
    except (TimeoutError, OSError, NatsError) as error:
        reason = str(error) or type(error).__name__
        raise UnavailableError(
            f"cannot connect to NATS at {_shown(url)}: {reason}",
            details={"url": _shown(url)},
        ) from error


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
