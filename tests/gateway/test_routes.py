"""Routes generated from discovery and from the explicit table; read-your-writes headers."""

from __future__ import annotations

from micro import Micro, Settings
from micro.testing import wait_until
from tests.gateway.support import Stack


async def test_every_command_is_a_post_and_every_view_a_get(stack: Stack) -> None:
    paths = {(o.method, o.path) for o in stack.gateway.table.operations}
    assert ("POST", "/api/demo/greet") in paths
    assert ("GET", "/api/demo/lookup") in paths
    assert ("POST", "/api/demo/secret") in paths  # the service's own name is dropped
    assert ("POST", "/api/demo/register-person") in paths


async def test_a_command_is_called_with_its_json_body(stack: Stack) -> None:
    response = await stack.client.post("/api/demo/greet", json={"name": "ada", "times": 2})
    assert response.status_code == 200
    assert response.json()["greeting"] == "hello ada hello ada"


async def test_a_view_takes_query_parameters_typed_by_its_schema(stack: Stack) -> None:
    response = await stack.client.get("/api/demo/lookup", params={"id": "7", "verbose": "true"})
    assert response.status_code == 200
    assert response.json() == {"id": 7, "verbose": True}


async def test_explicit_routes_put_path_parameters_into_the_payload(stack: Stack) -> None:
    assert (await stack.client.get("/things/12")).json() == {"id": 12, "verbose": False}
    response = await stack.client.post("/greetings/bob", json={"times": 1})
    assert response.json()["greeting"] == "hello bob"


async def test_bearer_token_travels_as_meta_token(stack: Stack) -> None:
    response = await stack.client.post(
        "/api/demo/greet", json={"name": "ada"}, headers={"Authorization": "Bearer abc.def"}
    )
    assert response.json()["meta"] == {"token": "abc.def"}
    good = await stack.client.post(
        "/api/demo/secret", json={}, headers={"Authorization": "Bearer good"}
    )
    assert good.status_code == 200
    assert good.json() == "the secret"


async def test_routes_follow_services_appearing_and_disappearing(
    stack: Stack, micro_settings: Settings
) -> None:
    assert (await stack.client.post("/api/late/hello", json={})).status_code == 404
    late = Micro(micro_settings, service="late").add("hello", lambda: "hi")
    async with late:
        # A miss looks at discovery again, so the new service is found without waiting.
        async def found() -> bool:
            response = await stack.client.post("/api/late/hello", json={})
            return response.status_code == 200

        await wait_until(found, what="route of the new service")
    # One missed look is not enough: a busy instance can answer after the window.
    await stack.gateway.refresh()
    kept = await stack.client.post("/api/late/hello", json={})
    assert kept.json()["error"]["code"] == "service_not_found"
    await stack.gateway.refresh()
    response = await stack.client.post("/api/late/hello", json={})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_services_listing_shows_endpoints_schemas_and_routes(stack: Stack) -> None:
    body = (await stack.client.get("/api/services")).json()
    demo = next(s for s in body["services"] if s["service"] == "demo")
    greet = next(e for e in demo["endpoints"] if e["name"] == "greet")
    assert greet["kind"] == "command"
    assert greet["request_schema"]["properties"]["name"]["type"] == "string"
    assert {"method": "POST", "path": "/greetings/{name}"} in greet["routes"]


async def test_excluded_commands_are_not_served_over_http(stack: Stack) -> None:
    stack.gateway.settings.exclude = ["expl*", "slow"]
    await stack.gateway.refresh()
    assert (await stack.client.post("/api/demo/explode", json={})).status_code == 404
    assert (await stack.client.post("/api/demo/slow", json={})).status_code == 404
    listing = (await stack.client.get("/api/services")).json()["services"][0]["endpoints"]
    assert "explode" not in {endpoint["name"] for endpoint in listing}
