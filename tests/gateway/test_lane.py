"""The direct lane answers a plain call exactly as the Starlette application does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from micro import Micro
from micro.gateway import Gateway, GatewaySettings, Route
from micro.gateway.lane import DirectLane
from tests.gateway.support import Stack

# Each request as (method, path, keyword arguments of httpx), covering answers and refusals.
REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/api/demo/greet", {"json": {"name": "ada", "times": 2}}),
    ("POST", "/greetings/bob", {"json": {"times": 1}}),
    ("POST", "/api/demo/greet?min_position=0", {"json": {"name": "ada"}}),
    ("GET", "/api/demo/lookup?id=7&verbose=true", {}),
    ("GET", "/things/9", {}),
    ("GET", "/api/demo/lookup?id=404", {}),
    ("POST", "/api/demo/greet", {"json": {"name": ""}}),
    (
        "POST",
        "/api/demo/greet",
        {"content": b"{nope", "headers": {"content-type": "application/json"}},
    ),
    (
        "POST",
        "/api/demo/greet",
        {"content": b"name=ada", "headers": {"content-type": "text/plain"}},
    ),
    ("POST", "/api/demo/greet", {"content": b"x" * 20_000}),
    ("POST", "/api/demo/greet", {"json": {"name": "ada"}, "headers": {"authorization": "Basic x"}}),
    ("POST", "/api/demo/secret", {"json": {}, "headers": {"authorization": "Bearer good"}}),
    ("POST", "/api/demo/secret", {"json": {}, "headers": {"authorization": "Bearer bad"}}),
    ("POST", "/api/demo/explode", {"json": {}}),
    ("POST", "/api/demo/refuse", {"json": {}}),
    ("POST", "/api/demo/refuse", {"json": {}, "headers": {"prefer": "refusal=answer"}}),
    ("POST", "/api/demo/greet?min_position=x", {"json": {"name": "ada"}}),
    ("POST", "/api/demo/greet?min_position=99999", {"json": {"name": "ada"}}),
]


@asynccontextmanager
async def gateway_with(stack: Stack, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    gateway = Gateway(
        Micro(stack.service.settings, service="gateway-lane"),
        GatewaySettings(port=0, max_body=10_000, required_services=["demo"], **settings),
        routes=[*stack.gateway.routes, Route("GET", "/healthz", "lookup")],
        event_store=stack.store,
    )
    await gateway.start()
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
            yield client
    finally:
        await gateway.stop()
        await gateway.micro.close()


def _seen(response: httpx.Response) -> tuple[int, list[tuple[str, str]], Any]:
    body = response.json()
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body["error"].pop("trace_id")  # one per call
    headers = []
    for name, value in response.headers.items():
        if name == "vary":  # CORS adds Origin to it
            value = ", ".join(v.strip() for v in value.split(",") if v.strip() != "Origin")
        if name != "date" and value:
            headers.append((name, value))
    return response.status_code, sorted(headers), body


async def test_every_answer_is_the_one_the_starlette_application_gives(stack: Stack) -> None:
    assert isinstance(stack.gateway.app, DirectLane)
    # With CORS configured every request goes through Starlette; without an Origin header
    # CORS adds nothing, so the two gateways must answer alike.
    async with gateway_with(stack) as direct, gateway_with(stack, cors_origins=["*"]) as full:
        for method, path, options in REQUESTS:
            lane = _seen(await direct.request(method, path, **options))
            starlette = _seen(await full.request(method, path, **options))
            assert lane == starlette, (method, path)
        statuses = {_seen(await direct.request(m, p, **o))[0] for m, p, o in REQUESTS}
    assert {200, 400, 401, 404, 413, 415, 422, 500} <= statuses


async def test_the_gateways_own_paths_win_over_a_route_of_the_table(stack: Stack) -> None:
    async with gateway_with(stack) as client:
        answer = await client.get("/healthz", params={"id": 1})
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok"}


async def test_calls_served_by_the_lane_are_counted(stack: Stack) -> None:
    for _ in range(3):
        assert (await stack.client.post("/api/demo/greet", json={"name": "x"})).status_code == 200
    assert (await stack.client.post("/api/demo/greet", json={"name": ""})).status_code == 400
    text = stack.gateway.metrics.render().decode()
    assert (
        'micro_gateway_requests_total{method="POST",route="/api/demo/greet",status="200"} 3.0'
        in text
    )
    assert 'route="/api/demo/greet",status="400"} 1.0' in text
    assert (
        'micro_gateway_request_duration_seconds_count{method="POST",route="/api/demo/greet"} 4.0'
        in text
    )


async def test_a_body_sent_in_chunks_is_read_whole_and_held_to_the_limit(stack: Stack) -> None:
    async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    headers = {"content-type": "application/json"}
    answer = await stack.client.post(
        "/api/demo/greet", content=chunks(b'{"name":', b' "ada", ', b'"times": 2}'), headers=headers
    )
    assert answer.status_code == 200
    assert answer.json()["greeting"] == "hello ada hello ada"
    too_big = await stack.client.post(
        "/api/demo/greet", content=chunks(b"[" + b"1," * 4000, b"1," * 4000, b"1]"), headers=headers
    )
    assert too_big.status_code == 413
    assert too_big.json()["error"]["code"] == "payload_too_large"
