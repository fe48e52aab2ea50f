"""Measures through the OpenTelemetry metrics API; the application picks the exporter.

Counts that micro keeps anyway (requests and errors per command, the ``$SRV.STATS``
counters) and states (model lag, last catch-up, snapshot age) are observed by callbacks
when the SDK collects, so they cost nothing per request. Only the histograms are recorded as
things happen, and only while a meter provider is configured (looked up when a ``Micro``
opens, like the tracer); then each projector also asks the store for its head every
``HEAD_INTERVAL`` seconds, for the lag. Callbacks run in the SDK's reader thread: they only
read counters the event loop writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Histogram, Observation

if TYPE_CHECKING:
    from micro.bus.responder import Responder

__all__ = [
    "HEAD_INTERVAL",
    "Instruments",
    "WatchedGateway",
    "follow_head",
    "forget_projector",
    "instruments",
    "refresh",
    "refresh_lag",
    "watch_gateway",
    "watch_projector",
    "watch_responder",
]


class Store(Protocol):
    """The one thing the lag needs from an event store."""

    async def last_position(self) -> int: ...


class Watched(Protocol):
    """What a projector shows the metrics: its name, position, the head and when it caught up."""

    name: str
    position: int
    head: int
    caught_up_at: float | None
    snapshot_at: float | None

    @property
    def store(self) -> Store: ...


class WatchedGateway(Protocol):
    """What a gateway shows the metrics besides its HTTP request durations."""

    def error_counts(self) -> Iterable[tuple[float, dict[str, str]]]: ...

    def in_flight_calls(self) -> float: ...

    def route_count(self) -> float: ...


class Instruments:
    """The synchronous instruments; observable ones read the watched objects."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.command_duration: Histogram = meter.create_histogram(
            "micro.command.duration",
            unit="s",
            description="Time to handle one request, by service and command",
        )
        self.append_duration: Histogram = meter.create_histogram(
            "micro.eventstore.append.duration",
            unit="s",
            description="Time the event store took to append one command's events",
        )
        self.append_batch: Histogram = meter.create_histogram(
            "micro.eventstore.append.batch_size",
            unit="{event}",
            description="Events appended together by one command",
        )
        self.http_duration: Histogram = meter.create_histogram(
            "http.server.request.duration",
            unit="s",
            description="Time the gateway took to serve an HTTP request",
        )
        meter.create_observable_counter(
            "micro.command.requests",
            [_requests],
            unit="{request}",
            description="Requests handled, by service and command",
        )
        meter.create_observable_counter(
            "micro.command.errors",
            [_errors],
            unit="{error}",
            description="Error replies, by service, command and error code (error.type)",
        )
        meter.create_observable_gauge(
            "micro.projector.lag",
            [_lag],
            unit="{event}",
            description="Events stored but not yet applied to a service's models",
        )
        meter.create_observable_gauge(
            "micro.projector.last_catch_up",
            [_caught_up],
            unit="s",
            description="When the models last caught up with the stream head (epoch seconds)",
        )
        meter.create_observable_counter(
            "micro.gateway.errors",
            [_gateway_errors],
            unit="{error}",
            description="Error responses of the gateway, by error code and HTTP status",
        )
        meter.create_observable_gauge(
            "micro.gateway.in_flight",
            [_gateway_in_flight],
            unit="{call}",
            description="Calls the gateway is forwarding right now",
        )
        meter.create_observable_gauge(
            "micro.gateway.routes",
            [_gateway_routes],
            unit="{route}",
            description="Routes in the gateway's table built from discovery",
        )
        meter.create_observable_gauge(
            "micro.snapshot.age",
            [_snapshot_age],
            unit="s",
            description="Seconds since the models' snapshot was last saved or restored",
        )


HEAD_INTERVAL = 5.0
"""Seconds between two looks at the store's head for the lag gauge."""

_responders: weakref.WeakSet[Responder] = weakref.WeakSet()
_projectors: weakref.WeakSet[Any] = weakref.WeakSet()
_gateways: weakref.WeakSet[Any] = weakref.WeakSet()
_instruments: Instruments | None = None
_provider: object = None


def refresh() -> Instruments | None:
    """Look for a configured meter provider; called when a ``Micro`` opens."""
    global _instruments, _provider
    provider = metrics.get_meter_provider()
    if type(provider).__module__.startswith("opentelemetry.metrics"):
        _instruments = _provider = None  # the API's proxy or no-op provider: nothing set
    elif provider is not _provider:
        _provider = provider
        _instruments = Instruments(provider.get_meter("micro"))
    return _instruments


def instruments() -> Instruments | None:
    """The histograms to record into, or ``None`` while no SDK is configured."""
    return _instruments


def watch_responder(responder: Responder) -> None:
    """Report the request and error counts of ``responder`` while it lives."""
    _responders.add(responder)


def watch_projector(projector: Watched) -> None:
    """Report the lag, catch-up time and snapshot age of ``projector`` while it lives."""
    _projectors.add(projector)


def watch_gateway(gateway: WatchedGateway) -> None:
    """Report the error counts, calls in flight and routes of a gateway while it lives."""
    _gateways.add(gateway)


async def refresh_lag(projector: Watched, timeout: float = 0.25) -> int:
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


def follow_head(projector: Watched) -> asyncio.Task[None] | None:
    """While a meter provider is configured, learn the store's head every ``HEAD_INTERVAL`` s.

    The projector learns the head from the events it applies; one that falls behind (a slow
    reducer, a subscription that stalls) would not know by how much, and its lag gauge would
    read zero when it matters most. ``None`` without an SDK: nothing runs then.
    """
    if _instruments is None:
        return None

    async def follow() -> None:
        while True:
            with contextlib.suppress(Exception):
                await refresh_lag(projector, timeout=HEAD_INTERVAL)
            await asyncio.sleep(HEAD_INTERVAL)

    return asyncio.create_task(follow(), name=f"lag:{projector.name}")


def forget_gateway(gateway: WatchedGateway) -> None:
    """Stop reporting ``gateway`` (it stopped: what it counted is no longer served)."""
    _gateways.discard(gateway)


def forget_projector(projector: Watched) -> None:
    """Stop reporting ``projector`` (it stopped: its lag would no longer mean anything)."""
    _projectors.discard(projector)


def _requests(_options: CallbackOptions) -> Iterable[Observation]:
    # Summed per service and command: instances of one service in one process are one series.
    totals: dict[tuple[str, str], int] = {}
    for responder in list(_responders):
        service = responder.settings.service
        for name, served in list(responder.served.items()):
            totals[service, name] = totals.get((service, name), 0) + served.stats.requests
    for (service, name), count in totals.items():
        yield Observation(count, {"micro.service": service, "micro.command": name})


def _errors(_options: CallbackOptions) -> Iterable[Observation]:
    totals: dict[tuple[str, str, str], int] = {}
    for responder in list(_responders):
        service = responder.settings.service
        for name, served in list(responder.served.items()):
            for code, count in list(served.stats.errors_by_code.items()):
                totals[service, name, code] = totals.get((service, name, code), 0) + count
    for (service, name, code), count in totals.items():
        yield Observation(
            count, {"micro.service": service, "micro.command": name, "error.type": code}
        )


def _lag(_options: CallbackOptions) -> Iterable[Observation]:
    worst: dict[str, int] = {}
    for projector in list(_projectors):
        lag = max(0, projector.head - projector.position)
        worst[projector.name] = max(lag, worst.get(projector.name, 0))
    for name, lag in worst.items():
        yield Observation(lag, {"micro.models": name})


def _caught_up(_options: CallbackOptions) -> Iterable[Observation]:
    for projector in list(_projectors):
        if projector.caught_up_at is not None:
            yield Observation(projector.caught_up_at, {"micro.models": projector.name})


def _snapshot_age(_options: CallbackOptions) -> Iterable[Observation]:
    now = time.time()
    for projector in list(_projectors):
        if projector.snapshot_at is not None:
            yield Observation(now - projector.snapshot_at, {"micro.models": projector.name})


def _gateway_errors(_options: CallbackOptions) -> Iterable[Observation]:
    totals: dict[tuple[tuple[str, str], ...], float] = {}
    for gateway in list(_gateways):
        for count, labels in gateway.error_counts():
            key = tuple(sorted(labels.items()))
            totals[key] = totals.get(key, 0.0) + count
    for key, count in totals.items():
        yield Observation(count, dict(key))


def _gateway_in_flight(_options: CallbackOptions) -> Iterable[Observation]:
    if _gateways:
        yield Observation(sum(gateway.in_flight_calls() for gateway in list(_gateways)))


def _gateway_routes(_options: CallbackOptions) -> Iterable[Observation]:
    for gateway in list(_gateways):
        yield Observation(gateway.route_count())
        break  # every gateway of a namespace builds the same table
