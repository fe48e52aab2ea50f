"""Spans through the OpenTelemetry API: one trace across processes, services and events."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import nats
import pytest
import structlog
from opentelemetry import baggage
from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind, StatusCode
from telemetry_support import Sdk, hex_id

from micro import Context, Micro, NotFoundError, Settings
from micro.bus.subjects import command_subject
from micro.log import set_levels
from micro.testing import wait_until as until

ROOT = Path(__file__).resolve().parent.parent.parent
INSTRUMENT = Path(sys.executable).parent / "opentelemetry-instrument"

ECHO_SERVICE = """
from micro import Micro
micro = Micro(service="echo")
micro.add("echo", lambda request: request)
async def ready(_micro):
    print("ready", flush=True)
micro.hook("on_start", ready)
micro.start()
"""


def console_spans(output: str) -> list[dict[str, Any]]:
    """The spans the console exporter printed: JSON objects one after the other."""
    decoder = json.JSONDecoder()
    spans, index = [], output.find("{")
    while index != -1:
        span, end = decoder.raw_decode(output, index)
        spans.append(span)
        index = output.find("{", end)
    return spans


class Instrumented:
    """A service run under ``opentelemetry-instrument --traces_exporter console``."""

    def __init__(self, source: str, settings: Settings, name: str) -> None:
        environment = {
            **os.environ,
            "NATS_URL": settings.nats_url or "",
            "MICRO_NAMESPACE": settings.namespace,
            "MICRO_EMBEDDED": "false",
            "MICRO_LOG_FORMAT": "json",
            "PYTHONPATH": str(ROOT),
            "OTEL_SERVICE_NAME": name,
        }
        self.process = subprocess.Popen(
            [
                str(INSTRUMENT),
                "--traces_exporter",
                "console",
                "--metrics_exporter",
                "none",
                "--logs_exporter",
                "none",
                sys.executable,
                "-c",
                textwrap.dedent(source),
            ],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if "ready" not in line:
            self.process.kill()
            raise RuntimeError(f"{name} did not start: {self.process.communicate()[1][-2000:]}")

    def spans(self) -> list[dict[str, Any]]:
        """Stop the service (the SDK flushes its spans on exit) and read what it printed."""
        if self.process.poll() is None:
            self.process.terminate()
        output, errors = self.process.communicate(timeout=30)
        found = console_spans(output)
        assert found, errors[-2000:]
        return found

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate(timeout=30)


def only(spans: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (span,) = [span for span in spans if span["name"] == name]
    return span


FRONT_SERVICE = """
from micro import Micro
micro = Micro(service="front")
async def front(request, ctx):
    return await ctx.act("double", request) + 1
micro.add("front", front)
async def ready(_micro):
    print("ready", flush=True)
micro.hook("on_start", ready)
micro.start()
"""

BACK_SERVICE = """
from micro import Micro
micro = Micro(service="back")
micro.add("double", lambda request: request["n"] * 2)
async def ready(_micro):
    print("ready", flush=True)
micro.hook("on_start", ready)
micro.start()
"""


class TestAcrossProcesses:
    def test_a_service_run_under_opentelemetry_instrument_joins_the_callers_trace(
        self, sdk: Sdk, micro_settings: Settings
    ) -> None:
        service = Instrumented(ECHO_SERVICE, micro_settings, "echo")
        try:

            async def call() -> None:
                async with Micro(micro_settings) as client:
                    assert await client.act("echo", {"hello": 1}) == {"hello": 1}

            asyncio.run(call())
            span = only(service.spans(), "process echo")
        finally:
            service.stop()
        (act,) = sdk.named("act echo")
        assert span["context"]["trace_id"] == "0x" + hex_id(act.context.trace_id)
        assert span["parent_id"] == "0x" + hex_id(act.context.span_id, 16)
        assert span["kind"] == "SpanKind.SERVER"
        assert span["attributes"]["messaging.system"] == "nats"
        assert span["attributes"]["messaging.destination.name"] == command_subject(
            micro_settings.namespace, "echo"
        )
        assert act.kind is SpanKind.CLIENT
        assert act.attributes is not None
        assert act.attributes["messaging.operation.type"] == "send"

    def test_a_nested_act_across_two_instrumented_services_is_one_chain_of_spans(
        self, sdk: Sdk, micro_settings: Settings
    ) -> None:
        back = Instrumented(BACK_SERVICE, micro_settings, "back")
        front = Instrumented(FRONT_SERVICE, micro_settings, "front")
        try:

            async def call() -> None:
                async with Micro(micro_settings) as client:
                    assert await client.act("front", {"n": 4}) == 9

            asyncio.run(call())
            front_spans, back_spans = front.spans(), back.spans()
        finally:
            front.stop()
            back.stop()
        (act,) = sdk.named("act front")
        served = only(front_spans, "process front")
        nested = only(front_spans, "act double")
        deepest = only(back_spans, "process double")
        trace = "0x" + hex_id(act.context.trace_id)
        assert {span["context"]["trace_id"] for span in (served, nested, deepest)} == {trace}
        assert served["parent_id"] == "0x" + hex_id(act.context.span_id, 16)
        assert nested["parent_id"] == served["context"]["span_id"]
        assert deepest["parent_id"] == nested["context"]["span_id"]
        assert nested["kind"] == "SpanKind.CLIENT"


class TestInOneProcess:
    async def test_a_nested_act_across_two_services_is_one_trace_of_parent_and_child_spans(
        self, sdk: Sdk, micro_settings: Settings
    ) -> None:
        seen: dict[str, str] = {}

        async def front(request: dict[str, int], ctx: Context) -> int:
            seen["trace"], seen["span"] = ctx.trace_id, ctx.span_id
            return int(await ctx.act("double", request)) + 1

        back = Micro(micro_settings, service="back").add("double", lambda r: r["n"] * 2)
        first = Micro(micro_settings, service="front").add("front", front)
        async with back, first, Micro(micro_settings) as client:
            assert await client.act("front", {"n": 4}) == 9
        (outer,) = sdk.named("act front")
        (served,) = sdk.named("process front")
        (inner,) = sdk.named("act double")
        (deepest,) = sdk.named("process double")
        chain = [outer, served, inner, deepest]
        assert {span.context.trace_id for span in chain} == {outer.context.trace_id}
        for parent, child in itertools.pairwise(chain):
            assert child.parent is not None
            assert child.parent.span_id == parent.context.span_id
        # micro's own ids are the OTel ids while a span is active: logs and traces agree
        assert seen == {
            "trace": hex_id(outer.context.trace_id),
            "span": hex_id(served.context.span_id, 16),
        }

    async def test_a_failed_request_marks_both_spans_with_the_error_code(
        self, sdk: Sdk, micro_settings: Settings
    ) -> None:
        def missing(_request: object) -> None:
            raise NotFoundError("no such thing")

        async with Micro(micro_settings, service="lost").add("find", missing) as micro:
            with pytest.raises(NotFoundError):
                await micro.act("find")
        for name in ("act find", "process find"):
            (span,) = sdk.named(name)
            assert span.status.status_code is StatusCode.ERROR
            assert span.attributes is not None
            assert span.attributes["error.type"] == "not_found"

    async def test_a_malformed_traceparent_is_ignored_with_a_debug_line_and_a_fresh_trace(
        self, sdk: Sdk, micro_settings: Settings
    ) -> None:
        set_levels({"micro.telemetry": "debug"})
        try:
            async with Micro(micro_settings, service="echo").add("echo", lambda r: r):
                foreign = await nats.connect(micro_settings.nats_url)
                try:
                    with structlog.testing.capture_logs() as captured:
                        reply = await foreign.request(
                            command_subject(micro_settings.namespace, "echo"),
                            b'{"a": 1}',
                            timeout=5,
                            headers={"traceparent": "00-not-a-trace-at-all-01"},
                        )
                finally:
                    await foreign.close()
        finally:
            set_levels({})
        assert json.loads(reply.data) == {"a": 1}
        assert not (reply.headers or {}).get("Nats-Service-Error-Code")
        (span,) = sdk.named("process echo")
        assert span.parent is None
        assert span.context.trace_id != 0
        lines = [line for line in captured if "traceparent" in line["event"]]
        assert len(lines) == 1
        assert lines[0]["log_level"] == "debug"
        assert lines[0]["traceparent"] == "00-not-a-trace-at-all-01"


TALLY = ROOT / "tests" / "command" / "apps" / "tally"


def tally(settings: Settings) -> Micro:
    micro = Micro(settings, service="tally", app_dir=TALLY)
    micro.commander.add_command("add")
    return micro


class TestCommandsAndEvents:
    async def test_a_command_has_validate_append_and_apply_spans_under_its_handling(
        self, sdk: Sdk, micro_settings: Settings
    ) -> None:
        async with tally(micro_settings) as service:
            await service.act("add", {"id": "a", "amount": 2})
        (served,) = sdk.named("process add")
        for stage in ("validate", "append", "apply"):
            (span,) = sdk.named(stage)
            assert span.parent is not None
            assert span.parent.span_id == served.context.span_id

    async def test_an_on_event_handler_span_links_to_the_command_that_stored_the_event(
        self, sdk: Sdk, micro_settings: Settings
    ) -> None:
        seen: list[str] = []
        service = tally(micro_settings)
        service.add("note", lambda request: request)

        async def audit(event: Any) -> None:
            seen.append(event.type)
            await service.act("note", {"audited": event.position})

        service.on_event("Added", audit, group="audit")
        async with service:
            await service.act("add", {"id": "a", "amount": 2})
            await until(lambda: len(sdk.named("process note")) == 1, what="the audit's call")
        (served,) = sdk.named("process add")
        (handled,) = sdk.named("on_event Added")
        assert handled.kind is SpanKind.CONSUMER
        assert [link.context.span_id for link in handled.links] == [served.context.span_id]
        assert [link.context.trace_id for link in handled.links] == [served.context.trace_id]
        # what the handler calls belongs to the handler's span
        (call,) = sdk.named("act note")
        assert call.parent is not None
        assert call.parent.span_id == handled.context.span_id
        assert call.context.trace_id == handled.context.trace_id

    async def test_events_store_the_trace_context_but_never_the_callers_baggage(
        self, sdk: Sdk, micro_settings: Settings
    ) -> None:
        service = tally(micro_settings)
        async with service:
            token = otel_context.attach(baggage.set_baggage("card", "4111-1111"))
            try:
                await service.act("add", {"id": "b", "amount": 1})
            finally:
                otel_context.detach(token)
            (event,) = await service.commander.store.read("tally-b")
        (served,) = sdk.named("process add")
        assert event.metadata["traceparent"].startswith(
            f"00-{hex_id(served.context.trace_id)}-{hex_id(served.context.span_id, 16)}-"
        )
        assert "baggage" not in event.metadata
        assert "4111" not in str(event.metadata)
