"""Observability: OpenTelemetry traces and metrics, and the latency kept for ``$SRV.STATS``.

micro depends on the OpenTelemetry API only and configures nothing: run a service under
``opentelemetry-instrument`` (or set up the SDK in code) to export its spans and measures.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from micro.telemetry import metrics, tracing
from micro.telemetry.latency import LatencyHistogram

if TYPE_CHECKING:
    from micro.readmodel.projector import Projector

__all__ = ["LatencyHistogram", "metrics", "refresh", "refresh_lag", "tracing"]


def refresh() -> None:
    """Pick up the tracer and meter providers configured now (a ``Micro`` opening calls it)."""
    tracing.refresh()
    metrics.refresh()


async def refresh_lag(projector: Projector, timeout: float = 0.25) -> int:
    """Ask the store for its head and return how many events the models are behind it.

    A store that does not answer within ``timeout`` leaves the last head known: ``$SRV.STATS``
    waits on this, and a slow store must not make a service vanish from discovery.
    """
    try:
        head = await asyncio.wait_for(projector.store.last_position(), timeout)
    except Exception:
        head = projector.head
    projector.head = max(projector.head, head)
    return max(0, projector.head - projector.position)
