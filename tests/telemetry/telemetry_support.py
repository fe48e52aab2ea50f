"""Helpers of the telemetry tests: the process's OpenTelemetry SDK and what it recorded."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.test.globals_test import reset_metrics_globals, reset_trace_globals

from micro import telemetry


@dataclass
class Sdk:
    spans: InMemorySpanExporter
    reader: InMemoryMetricReader

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.finished() if span.name == name]

    def points(self, metric: str) -> list[tuple[dict[str, object], object]]:
        """Every data point of ``metric`` now, with its attributes."""
        data = self.reader.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for item in scope.metrics:
                    if item.name == metric:
                        found.extend(
                            (dict(point.attributes or {}), point) for point in item.data.data_points
                        )
        return found


@contextlib.contextmanager
def configured_sdk() -> Iterator[Sdk]:
    """The OpenTelemetry SDK with an in-memory span exporter and metric reader, as an
    application would set it up; afterwards the process has no SDK again.

    OTel lets a process set its providers once; OTel's own test helpers reset them, so the
    tests after these run without tracing, as they were written to.
    """
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    try:
        yield Sdk(exporter, reader)
    finally:
        tracer_provider.shutdown()
        meter_provider.shutdown()
        reset_trace_globals()
        reset_metrics_globals()
        telemetry.refresh()


def hex_id(value: int, width: int = 32) -> str:
    return format(value, f"0{width}x")
