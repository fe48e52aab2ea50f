"""Prometheus metrics of the gateway, served as text on ``/metrics``.

The same measures go to OpenTelemetry (``http.server.request.duration``) and each request
gets a server span, parent of the act it makes, whenever an OTel SDK is configured.

Each gateway keeps its own registry (two gateways in one process, as in tests, must not
share counters). Routes are labelled by their template (``/accounts/{id}``), never by the
raw path, so a caller cannot grow the number of series.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from micro.telemetry import metrics, tracing

__all__ = ["ROUTE_KEY", "GatewayMetrics", "MetricsMiddleware", "record_duration"]

ROUTE_KEY = "micro.route"
"""Scope key where a handler names its route template for the labels."""

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class GatewayMetrics:
    """Requests, latency and errors of one gateway."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "micro_gateway_requests",
            "HTTP requests served, by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "micro_gateway_request_duration_seconds",
            "Time to serve an HTTP request (to the end of the body)",
            ["method", "route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "micro_gateway_errors",
            "Error responses, by error code and status",
            ["code", "status"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "micro_gateway_in_flight",
            "Calls the gateway is forwarding right now",
            registry=self.registry,
        )
        self.routes = Gauge(
            "micro_gateway_routes",
            "Routes in the table built from discovery",
            registry=self.registry,
        )
        # Children by label values: ``labels()`` costs more than the count itself. Bounded
        # by route templates times statuses.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def served(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one request and its duration."""
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            if len(self._children) > 10_000:
                self._children.clear()
            children = self._children[key] = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
        children[0].inc()
        children[1].observe(seconds)

    # What OpenTelemetry observes (``micro.telemetry.metrics``): the same counts, read from
    # this registry when the SDK collects, so nothing is counted twice.

    def error_counts(self) -> list[tuple[float, dict[str, str]]]:
        return [
            (
                sample.value,
                {
                    "error.type": sample.labels["code"],
                    "http.response.status_code": sample.labels["status"],
                },
            )
            for family in self.errors.collect()
            for sample in family.samples
            if sample.name.endswith("_total")
        ]

    def in_flight_calls(self) -> float:
        return _value(self.in_flight)

    def route_count(self) -> float:
        return _value(self.routes)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


def _value(gauge: Gauge) -> float:
    return sum(sample.value for family in gauge.collect() for sample in family.samples)


class MetricsMiddleware:
    """Counts and times every HTTP request (pure ASGI, so streamed bodies are untouched)."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an app that dies before answering is a 500 to the caller

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        tracer = tracing.tracer()
        span = tracing.start_http_span(tracer, scope) if tracer is not None else None
        try:
            await self.app(scope, receive, sending)
        finally:
            route: Any = scope.get(ROUTE_KEY, "unmatched")
            method = str(scope.get("method", ""))
            seconds = time.perf_counter() - started
            self.metrics.served(method, str(route), status, seconds)
            if span is not None:
                tracing.end_http_span(span[0], span[1], method, str(route), status)
            record_duration(method, str(route), status, seconds)


def record_duration(method: str, route: str, status: int, seconds: float) -> None:
    """The request's duration to OpenTelemetry, while an SDK is configured."""
    if (measures := metrics.instruments()) is not None:
        measures.http_duration.record(
            seconds,
            {
                "http.request.method": method,
                "http.route": route,
                "http.response.status_code": status,
            },
        )
