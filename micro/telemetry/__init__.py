"""Observability: OpenTelemetry traces and metrics, and the latency kept for ``$SRV.STATS``.

micro depends on the OpenTelemetry API only and configures nothing: run a service under
``opentelemetry-instrument`` (or set up the SDK in code) to export its spans and measures.
"""

from __future__ import annotations

from micro.telemetry import metrics, tracing
from micro.telemetry.latency import LatencyHistogram
from micro.telemetry.metrics import refresh_lag

__all__ = ["LatencyHistogram", "metrics", "refresh", "refresh_lag", "tracing"]


def refresh() -> None:
    """Pick up the tracer and meter providers configured now (a ``Micro`` opening calls it)."""
    tracing.refresh()
    metrics.refresh()
