"""Spans through the OpenTelemetry API; micro configures no SDK and no exporter.

Following OTel's convention for libraries, the application chooses (``opentelemetry-
instrument``, or the SDK in code). micro looks for a configured tracer provider each time a
``Micro`` opens: with none, ``tracer()`` is ``None`` and the hot paths skip tracing with one
comparison, so the API being installed costs nothing measurable.

Context travels in the W3C ``traceparent``/``tracestate`` NATS headers (through the global
propagator, so ``OTEL_PROPAGATORS`` is honoured), which Go and JS services that propagate the
same headers join. Attributes follow the messaging semantic conventions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

import structlog
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, Span, SpanKind, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = [
    "TRACEPARENT",
    "end_http_span",
    "end_span",
    "fail",
    "inject",
    "linked_span",
    "refresh",
    "span",
    "start_client_span",
    "start_http_span",
    "start_server_span",
    "trace_ids",
    "tracer",
]

_log = structlog.get_logger("micro.telemetry")

TRACEPARENT = "traceparent"

_SYSTEM = "nats"
_tracer: Tracer | None = None
_EMPTY = otel_context.Context()
_TRACE_CONTEXT = TraceContextTextMapPropagator()


def _configured(provider: object) -> bool:
    # The API's own providers (the proxy before any SDK is set, the no-op one) live in the
    # API package; any real provider, the SDK's or another vendor's, lives elsewhere.
    return not type(provider).__module__.startswith("opentelemetry.trace")


def refresh() -> Tracer | None:
    """Look for a configured tracer provider; called when a ``Micro`` opens."""
    global _tracer
    provider = trace.get_tracer_provider()
    _tracer = provider.get_tracer("micro") if _configured(provider) else None
    return _tracer


def tracer() -> Tracer | None:
    """The tracer micro records with, or ``None`` while no SDK is configured."""
    return _tracer


def trace_ids(current: Span) -> tuple[str, str]:
    """The span's trace id and span id in hex, as micro's headers and logs carry them."""
    span_context = current.get_span_context()
    return trace.format_trace_id(span_context.trace_id), trace.format_span_id(span_context.span_id)


def start_client_span(
    active: Tracer, name: str, subject: str, headers: MutableMapping[str, str]
) -> Span:
    """Start the span of an ``act``; its context goes into ``headers``."""
    started = active.start_span(
        f"act {name}",
        kind=SpanKind.CLIENT,
        attributes={
            "messaging.system": _SYSTEM,
            "messaging.destination.name": subject,
            "messaging.operation.type": "send",
            "messaging.operation.name": "act",
            "micro.command": name,
        },
    )
    propagate.inject(headers, context=trace.set_span_in_context(started))
    return started


def start_server_span(
    active: Tracer, name: str, subject: str, headers: Mapping[str, str] | None
) -> tuple[Span, object]:
    """Start and make current the span of handling one request.

    Its parent is the caller's span when ``traceparent`` is valid; a malformed one (a
    foreign client's bug) is ignored with a debug log and the request starts a fresh trace.
    Returns the span and the token that ``end_span`` detaches.
    """
    parent = _EMPTY
    if headers and TRACEPARENT in headers:
        extracted = propagate.extract(headers)
        if trace.get_current_span(extracted).get_span_context().is_valid:
            parent = extracted
        else:
            _log.debug(
                "malformed traceparent ignored: starting a fresh trace",
                command=name,
                traceparent=headers[TRACEPARENT][:80],
            )
    started = active.start_span(
        f"process {name}",
        context=parent,
        kind=SpanKind.SERVER,
        attributes={
            "messaging.system": _SYSTEM,
            "messaging.destination.name": subject,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "micro.command": name,
        },
    )
    token = otel_context.attach(trace.set_span_in_context(started))
    return started, token


def end_span(started: Span, error: BaseException | None = None, token: object = None) -> None:
    """Record the outcome (``error.type`` is micro's error code) and end the span."""
    if error is not None:
        fail(started, error)
    started.end()
    if token is not None:
        otel_context.detach(token)  # type: ignore[arg-type]


def fail(started: Span, error: BaseException) -> None:
    """Mark ``started`` failed with ``error`` (micro's code, else the exception's type)."""
    code = getattr(error, "code", None) or type(error).__qualname__
    started.set_attribute("error.type", str(code))
    started.set_status(StatusCode.ERROR, str(getattr(error, "message", error))[:200])


def inject(carrier: MutableMapping[str, Any]) -> None:
    """Store the current trace context in ``carrier`` (event metadata), when tracing.

    Only ``traceparent``/``tracestate``: events are kept for ever, and baggage (which the
    global propagator would add) may hold what a caller never meant to store.
    """
    if _tracer is not None:
        _TRACE_CONTEXT.inject(carrier)


_NO_SPAN: contextlib.nullcontext[None] = contextlib.nullcontext()


def span(name: str, **attributes: Any) -> contextlib.AbstractContextManager[Span | None]:
    """A span around a stage of work (validate, append, snapshot...), when tracing.

    Without a tracer it is one shared no-op context: the command cycle opens three a command.
    """
    active = _tracer
    if active is None:
        return _NO_SPAN
    return active.start_as_current_span(name, attributes=attributes)


@contextlib.contextmanager
def linked_span(name: str, carrier: Mapping[str, Any], **attributes: Any) -> Iterator[Span | None]:
    """A span of work caused by an earlier one whose context ``carrier`` stored.

    Used for ``on_event``: the handler runs later, in its own trace, linked to the span of
    the command that appended the event (a link, not a parent: the command is long done).
    """
    active = _tracer
    if active is None:
        yield None
        return
    links = []
    if TRACEPARENT in carrier:
        cause = trace.get_current_span(
            _TRACE_CONTEXT.extract({k: v for k, v in carrier.items() if isinstance(v, str)})
        ).get_span_context()
        if cause.is_valid:
            links.append(Link(cause))
    with active.start_as_current_span(
        name, context=_EMPTY, kind=SpanKind.CONSUMER, links=links, attributes=attributes
    ) as started:
        yield started


def start_http_span(active: Tracer, scope: Mapping[str, Any]) -> tuple[Span, object]:
    """Start and make current the span of one HTTP request the gateway serves.

    A W3C ``traceparent`` the HTTP client sent makes it the parent; the act the gateway
    makes for the request is this span's child.
    """
    carrier = {
        key.decode("latin-1"): value.decode("latin-1")
        for key, value in scope.get("headers", ())
        if key in (b"traceparent", b"tracestate")
    }
    parent = propagate.extract(carrier) if carrier else _EMPTY
    method = str(scope.get("method", ""))
    started = active.start_span(
        method,
        context=parent,
        kind=SpanKind.SERVER,
        attributes={"http.request.method": method, "url.path": str(scope.get("path", ""))},
    )
    return started, otel_context.attach(trace.set_span_in_context(started))


def end_http_span(started: Span, token: object, method: str, route: str, status: int) -> None:
    """Name the span by its route template, record the status and end it."""
    started.update_name(f"{method} {route}")
    started.set_attribute("http.route", route)
    started.set_attribute("http.response.status_code", status)
    if status >= 500:
        started.set_attribute("error.type", str(status))
        started.set_status(StatusCode.ERROR)
    started.end()
    otel_context.detach(token)  # type: ignore[arg-type]
