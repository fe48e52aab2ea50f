"""``GET {prefix}/stats``: the services' live figures for the console's panel.

The same view as ``micro top --once --json`` (``micro.telemetry.view.snapshot``): per command
its rate, latency percentiles and errors, per service its model lag. The gateway keeps the
previous sample, so every console polling it sees rates over the time since the last poll
of any of them, and ``$SRV.STATS`` is asked at most once per ``_MIN_GAP`` seconds.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from micro.app import Micro
from micro.discovery import ServiceRecord
from micro.gateway.metrics import ROUTE_KEY
from micro.telemetry.view import snapshot

__all__ = ["stats_route"]

_MIN_GAP = 0.5
"""Polls closer together than this share one sample."""


class _Sampler:
    def __init__(self, micro: Micro) -> None:
        self.micro = micro
        self.previous: tuple[float, list[ServiceRecord]] | None = None
        self.latest: tuple[float, dict[str, Any]] | None = None
        self._lock = asyncio.Lock()

    async def view(self) -> dict[str, Any]:
        async with self._lock:
            now = time.monotonic()
            if self.latest is not None and now - self.latest[0] < _MIN_GAP:
                return self.latest[1]
            records = await self.micro.services(stats=True)
            taken = time.monotonic()
            if self.previous is None:
                view = snapshot(records)
            else:
                view = snapshot(records, self.previous[1], taken - self.previous[0])
            self.previous = (taken, records)
            self.latest = (taken, view)
            return view


def stats_route(path: str, micro: Micro) -> Route:
    """The route serving the live view at ``path``, sampled through ``micro``."""
    sampler = _Sampler(micro)

    async def stats(request: Request) -> Response:
        request.scope[ROUTE_KEY] = path
        return Response(
            orjson.dumps(await sampler.view()),
            media_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    return Route(path, stats, methods=["GET"])
