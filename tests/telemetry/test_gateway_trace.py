"""The gateway's HTTP request span parents the act it makes, across the HTTP hop too."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
from opentelemetry.trace import SpanKind
from telemetry_support import Sdk, hex_id

from micro import Micro, Settings
from micro.eventstore.memory import MemoryEventStore
from micro.gateway import Gateway, GatewaySettings, Route

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


@contextlib.asynccontextmanager
async def greeter_behind_a_gateway(micro_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A greeter service, a gateway routing POST /greetings/{name} to it, and a client."""
    service = Micro(micro_settings, service="greeter").add("greet", lambda r: f"hi {r['name']}")
    gateway = Gateway(
        Micro(micro_settings, service="gateway"),
        GatewaySettings(port=0, required_services=["greeter"]),
        routes=[Route("POST", "/greetings/{name}", "greet")],
        event_store=MemoryEventStore(),
    )
    async with service:
        await gateway.start()
        try:
            async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
                yield client
        finally:
            await gateway.stop()
            await gateway.micro.close()


async def test_an_http_request_through_the_gateway_is_one_trace_down_to_the_service_and_timed(
    sdk: Sdk, micro_settings: Settings
) -> None:
    async with greeter_behind_a_gateway(micro_settings) as client:
        response = await client.post(
            "/greetings/ann",
            json={},
            headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"},
        )
    assert response.status_code == 200, response.text
    (http,) = sdk.named("POST /greetings/{name}")
    (act,) = sdk.named("act greet")
    (served,) = sdk.named("process greet")
    assert http.kind is SpanKind.SERVER
    assert http.attributes is not None
    assert http.attributes["http.response.status_code"] == 200
    assert hex_id(http.context.trace_id) == CLIENT_TRACE
    assert http.parent is not None
    assert hex_id(http.parent.span_id, 16) == CLIENT_SPAN
    assert act.parent is not None
    assert act.parent.span_id == http.context.span_id
    assert served.parent is not None
    assert served.parent.span_id == act.context.span_id
    assert served.context.trace_id == http.context.trace_id
    durations = [
        point.count
        for found, point in sdk.points("http.server.request.duration")
        if found.get("http.route") == "/greetings/{name}"
    ]
    assert durations == [1]


async def test_the_gateways_prometheus_measures_are_otel_metrics_too(
    sdk: Sdk, micro_settings: Settings
) -> None:
    async with greeter_behind_a_gateway(micro_settings) as client:
        for _ in range(2):
            response = await client.get("/api/nobody/nothing")
            assert response.status_code == 404
        errors = [(found, point.value) for found, point in sdk.points("micro.gateway.errors")]
        routes = [point.value for _, point in sdk.points("micro.gateway.routes")]
        in_flight = [point.value for _, point in sdk.points("micro.gateway.in_flight")]
    assert errors == [({"error.type": "not_found", "http.response.status_code": "404"}, 2)]
    assert len(routes) == 1
    assert routes[0] >= 1
    assert in_flight == [0]
