"""Bad input gets the right 4xx with a JSON error body, and the gateway keeps serving."""

from __future__ import annotations

import asyncio

import pytest

from micro.testing import wait_until
from tests.gateway.support import Stack


async def _still_serving(stack: Stack) -> None:
    response = await stack.client.post("/api/demo/greet", json={"name": "ok"})
    assert response.status_code == 200


def _error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()["error"]
    assert body["code"] == code
    return body


async def test_a_payload_failing_its_schema_is_400_with_field_errors(stack: Stack) -> None:
    response = await stack.client.post("/api/demo/greet", json={"name": "", "times": 9})
    body = _error(response, 400, "validation")
    fields = {item["field"] for item in body["details"]["fields"]}
    assert fields == {"name", "times"}
    await _still_serving(stack)


async def test_nested_field_errors_name_the_whole_path(stack: Stack) -> None:
    response = await stack.client.post(
        "/api/demo/register-person", json={"name": "x", "address": {"city": 5}}
    )
    body = _error(response, 400, "validation")
    assert body["details"]["fields"][0]["field"] == "address.city"


@pytest.mark.parametrize(
    "content", [b"{", b"{'a': 1}", b"[1, 2", b"\xff\xfe", b'{"name": "x"} trailing']
)
async def test_malformed_json_is_400(stack: Stack, content: bytes) -> None:
    response = await stack.client.post(
        "/api/demo/greet", content=content, headers={"Content-Type": "application/json"}
    )
    _error(response, 400, "bad_request")
    await _still_serving(stack)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
async def test_a_body_that_is_not_json_is_415(stack: Stack, content_type: str) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = await stack.client.post("/api/demo/greet", content=b"name=ada", headers=headers)
    _error(response, 415, "unsupported_media_type")


async def test_an_oversized_body_is_413(stack: Stack) -> None:
    huge = {"name": "x" * 20_000}
    _error(await stack.client.post("/api/demo/greet", json=huge), 413, "payload_too_large")

    async def chunks():  # no Content-Length: the limit holds while reading
        for _ in range(30):
            yield b" " * 1000

    response = await stack.client.post(
        "/api/demo/greet", content=chunks(), headers={"Content-Type": "application/json"}
    )
    _error(response, 413, "payload_too_large")
    await _still_serving(stack)


async def test_unknown_routes_are_404_and_wrong_methods_405(stack: Stack) -> None:
    _error(await stack.client.get("/api/nobody/nothing"), 404, "not_found")
    _error(await stack.client.get("/no/such/page"), 404, "not_found")
    response = await stack.client.get("/api/demo/greet")
    _error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer a b", "token"])
async def test_a_malformed_authorization_header_is_401(stack: Stack, header: str) -> None:
    response = await stack.client.post(
        "/api/demo/greet", json={"name": "x"}, headers={"Authorization": header}
    )
    _error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_a_garbage_or_missing_token_is_refused_by_the_service_as_401(stack: Stack) -> None:
    _error(await stack.client.post("/api/demo/secret", json={}), 401, "unauthorized")
    response = await stack.client.post(
        "/api/demo/secret", json={}, headers={"Authorization": "Bearer %%garbage%%"}
    )
    _error(response, 401, "unauthorized")


async def test_a_path_parameter_of_the_wrong_type_is_400_naming_it(stack: Stack) -> None:
    body = _error(await stack.client.get("/things/abc"), 400, "validation")
    assert body["details"]["fields"][0]["field"] == "id"
    _error(await stack.client.get("/things/-3"), 400, "validation")
    _error(await stack.client.get("/api/demo/lookup?id=1.5"), 400, "validation")


async def test_service_errors_keep_their_status(stack: Stack) -> None:
    _error(await stack.client.get("/things/404"), 404, "not_found")
    _error(await stack.client.post("/api/demo/refuse", json={}), 422, "rule_violation")


async def test_an_internal_error_is_500_without_internals(stack: Stack) -> None:
    response = await stack.client.post("/api/demo/explode", json={})
    body = _error(response, 500, "internal")
    assert "hunter2" not in response.text
    assert "RuntimeError" not in response.text
    assert body["message"] == "internal error"
    assert body["trace_id"]


async def test_a_stopped_service_is_503_with_retry_after(stack: Stack) -> None:
    await stack.service.close()  # the route is still in the table, nobody serves it
    response = await stack.client.post("/api/demo/greet", json={"name": "x"})
    _error(response, 503, "service_not_found")
    assert int(response.headers["retry-after"]) >= 1


async def test_a_slow_command_is_504(stack: Stack) -> None:
    stack.gateway.settings.request_timeout = 0.2
    response = await stack.client.post("/api/demo/hold", json={})
    _error(response, 504, "timeout")


async def test_too_many_calls_in_flight_are_429_with_retry_after(stack: Stack) -> None:
    stack.gateway.settings.max_in_flight = 1
    held = asyncio.ensure_future(stack.client.post("/api/demo/hold", json={}))

    def busy() -> bool:
        return b"micro_gateway_in_flight 1.0" in stack.gateway.metrics.render()

    await wait_until(busy, what="one call in flight")
    response = await stack.client.post("/api/demo/greet", json={"name": "x"})
    _error(response, 429, "too_many_requests")
    assert response.headers["retry-after"] == "1"
    stack.release.set()
    assert (await held).status_code == 200
    await _still_serving(stack)


async def test_no_error_is_ever_a_200(stack: Stack) -> None:
    for response in [
        await stack.client.post("/api/demo/greet", json={}),
        await stack.client.post("/api/demo/explode", json={}),
        await stack.client.get("/things/abc"),
        await stack.client.post("/api/demo/refuse", json={}),
    ]:
        assert response.status_code >= 400
        assert "error" in response.json()


# "²".isdigit() is true and int("²") raises: a 500 found by fuzzing the portal.
@pytest.mark.parametrize("value", ["²", "٣", "1_000", " 1", "-1", "+1", "1.0", "9" * 19, ""])
async def test_a_min_position_that_is_not_ascii_digits_is_400_naming_the_field(
    stack: Stack, value: str
) -> None:
    response = await stack.client.get("/api/demo/lookup", params={"id": "1", "min_position": value})
    body = _error(response, 400, "validation")
    assert body["details"]["fields"][0]["field"] == "min_position"
