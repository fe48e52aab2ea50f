"""Helpers of the telemetry tests: the process's OpenTelemetry SDK and what it recorded."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


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


_SDK: Sdk | None = None


def configured_sdk() -> Sdk:
    """The process's SDK with an in-memory span exporter and metric reader, spans cleared.

    OTel lets a process set its providers once: every test shares them and reads only its
    own spans (the exporter is cleared) or differences of the metrics.
    """
    global _SDK
    if _SDK is None:
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        _SDK = Sdk(exporter, reader)
    _SDK.spans.clear()
    return _SDK


def hex_id(value: int, width: int = 32) -> str:
    return format(value, f"0{width}x")
