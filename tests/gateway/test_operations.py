"""Health, readiness, metrics, OpenAPI, docs and CORS."""

from __future__ import annotations

import asyncio

import httpx

from micro import Micro, Settings
from micro.gateway import Gateway, GatewaySettings
from micro.gateway.routes import RouteTable
from tests.gateway.support import Stack


async def test_healthz_is_200(stack: Stack) -> None:
    assert (await stack.client.get("/healthz")).json() == {"status": "ok"}


async def test_readyz_is_ready_once_required_services_are_discovered(stack: Stack) -> None:
    response = await stack.client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["ready"] is True
    stack.gateway.settings.required_services = ["demo", "absent"]
    response = await stack.client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["missing"] == ["absent"]
    assert response.headers["retry-after"] == "1"


async def test_metrics_count_requests_latency_and_errors(stack: Stack) -> None:
    await stack.client.post("/api/demo/greet", json={"name": "a"})
    await stack.client.get("/things/abc")
    text = (await stack.client.get("/metrics")).text
    assert (
        'micro_gateway_requests_total{method="POST",route="/api/demo/greet",status="200"} 1.0'
        in text
    )
    assert 'micro_gateway_request_duration_seconds_bucket{le="0.5",method="POST"' in text
    assert 'micro_gateway_errors_total{code="validation",status="400"} 1.0' in text
    # the raw path never becomes a label
    assert "/things/abc" not in text
    assert 'route="/things/{id}"' in text


async def test_openapi_describes_every_route_with_its_schemas(stack: Stack) -> None:
    document = (await stack.client.get("/openapi.json")).json()
    assert document["openapi"] == "3.1.0"
    greet = document["paths"]["/api/demo/greet"]["post"]
    body = greet["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["name"]["maxLength"] == 50
    assert "X-Micro-Position" in greet["responses"]["200"]["headers"]
    lookup = document["paths"]["/things/{id}"]["get"]
    parameters = {p["name"]: p for p in lookup["parameters"]}
    assert parameters["id"]["in"] == "path"
    assert parameters["verbose"]["in"] == "query"
    assert parameters["min_position"]["schema"]["type"] == "integer"
    # nested models moved to components, references rewritten
    person = document["paths"]["/api/demo/register-person"]["post"]
    address = person["requestBody"]["content"]["application/json"]["schema"]["properties"]
    reference = address["address"]["$ref"]
    assert reference.removeprefix("#/components/schemas/") in document["components"]["schemas"]
    assert "$defs" not in str(document)


async def test_docs_page_is_self_hosted(stack: Stack) -> None:
    page = await stack.client.get("/docs")
    assert page.status_code == 200
    assert "<html" in page.text
    assert "https://" not in page.text
    script = await stack.client.get("/_gateway/docs.js")
    assert script.status_code == 200


async def test_cors_is_off_by_default_and_configurable(
    stack: Stack, micro_settings: Settings
) -> None:
    plain = await stack.client.get("/healthz", headers={"Origin": "http://example.test"})
    assert "access-control-allow-origin" not in plain.headers
    gateway = Gateway(
        Micro(micro_settings, service="gateway"),
        GatewaySettings(port=0, cors_origins=["http://example.test"]),
    )
    await gateway.start()
    try:
        async with httpx.AsyncClient(base_url=gateway.url) as client:
            preflight = await client.options(
                "/api/demo/greet",
                headers={
                    "Origin": "http://example.test",
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization,content-type",
                },
            )
            assert preflight.status_code == 200
            assert preflight.headers["access-control-allow-origin"] == "http://example.test"
            response = await client.post(
                "/api/demo/greet", json={"name": "x"}, headers={"Origin": "http://example.test"}
            )
            assert "X-Micro-Position" in response.headers["access-control-expose-headers"]
    finally:
        await gateway.stop()
        await gateway.micro.close()


class _WatchedGateway(Gateway):
    """A gateway that says when its first look at discovery is over."""

    looked: asyncio.Event

    async def refresh(self) -> RouteTable:
        table = await super().refresh()
        self.looked.set()
        return table


async def test_start_looks_again_until_a_required_service_is_found(
    micro_settings: Settings,
) -> None:
    gateway = _WatchedGateway(
        Micro(micro_settings, service="gateway"),
        GatewaySettings(port=0, required_services=["late"], required_wait=30),
    )
    gateway.looked = asyncio.Event()
    starting = asyncio.create_task(gateway.start())
    late = Micro(micro_settings, service="late").add("ping", lambda request: "pong")
    try:
        await asyncio.wait_for(gateway.looked.wait(), 10)
        assert gateway.readiness()["missing"] == ["late"]
        await late.open()
        await asyncio.wait_for(starting, 30)
        assert gateway.readiness()["ready"] is True
        async with httpx.AsyncClient(base_url=gateway.url) as client:
            response = await client.post("/api/late/ping", json={})
        assert response.json() == "pong"
    finally:
        await gateway.stop()
        await gateway.micro.close()
        await late.close()


async def test_start_listens_anyway_once_the_wait_for_required_services_is_over(
    micro_settings: Settings,
) -> None:
    gateway = Gateway(
        Micro(micro_settings, service="gateway"),
        GatewaySettings(port=0, required_services=["absent"], required_wait=0.2),
    )
    await gateway.start()
    try:
        async with httpx.AsyncClient(base_url=gateway.url) as client:
            response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["missing"] == ["absent"]
    finally:
        await gateway.stop()
        await gateway.micro.close()
