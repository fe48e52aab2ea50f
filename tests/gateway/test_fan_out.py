"""Fan-out routes: one HTTP route calls several commands across services at once and answers
with each outcome: 200 when all succeeded, 207 when some failed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from micro import Context, Micro, RuleViolation, Settings
from micro.gateway import FanOut, Gateway, GatewaySettings


def services(settings: Settings, release: asyncio.Event) -> list[Micro]:
    def stock(query: dict) -> dict:
        return {"item": query.get("item"), "left": 3}

    def price(query: dict, ctx: Context) -> dict:
        return {"item": query.get("item"), "price": 9, "token": ctx.meta.get("token")}

    def refuse(query: dict) -> None:
        raise RuleViolation("reviews are closed")

    async def hold(query: dict) -> str:
        await release.wait()
        return "late"

    return [
        Micro(settings, service="stock").add("stock level", stock, kind="view"),
        Micro(settings, service="pricing").add("price of", price, kind="view"),
        Micro(settings, service="reviews").add("reviews of", refuse).add("slow reviews", hold),
    ]


FAN_OUTS = [
    FanOut("GET", "/items/{item}", {"stock": "stock level", "pricing": "price of"}),
    FanOut("POST", "/items/{item}/page", {"stock": "stock level", "reviews": "reviews of"}),
    FanOut(
        "GET",
        "/items/{item}/slow",
        {"pricing": "price of", "reviews": "slow reviews"},
        timeout=1.0,
    ),
]


@pytest.fixture
async def http(micro_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    release = asyncio.Event()
    running = services(micro_settings, release)
    for service in running:
        await service.open()
    gateway = Gateway(
        Micro(micro_settings, service="gateway"),
        GatewaySettings(port=0, required_services=["stock", "pricing", "reviews"]),
        fan_outs=FAN_OUTS,
    )
    await gateway.start()
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
            yield client
    finally:
        release.set()
        await gateway.stop()
        await gateway.micro.close()
        for service in running:
            await service.close()


async def test_every_call_succeeding_is_a_200_with_each_result(http) -> None:
    response = await http.get("/items/tea", headers={"Authorization": "Bearer t0k3n"})
    assert response.status_code == 200
    assert response.json() == {
        "stock": {"status": 200, "result": {"item": "tea", "left": 3}},
        "pricing": {"status": 200, "result": {"item": "tea", "price": 9, "token": "t0k3n"}},
    }


async def test_a_failed_call_makes_a_207_and_keeps_the_others_results(http) -> None:
    response = await http.post("/items/tea/page", json={})
    assert response.status_code == 207
    body = response.json()
    assert body["stock"] == {"status": 200, "result": {"item": "tea", "left": 3}}
    assert body["reviews"]["status"] == 422
    assert body["reviews"]["error"]["code"] == "rule_violation"
    assert body["reviews"]["error"]["message"] == "reviews are closed"


async def test_each_call_has_its_own_deadline(http) -> None:
    response = await http.get("/items/tea/slow")
    assert response.status_code == 207
    body = response.json()
    assert body["pricing"]["status"] == 200
    assert body["reviews"]["status"] == 504
    assert body["reviews"]["error"]["code"] == "timeout"


async def test_a_body_that_is_not_an_object_is_a_400(http) -> None:
    response = await http.post("/items/tea/page", json=[1, 2])
    assert response.status_code == 400
    assert response.json()["error"]["details"]["fields"][0]["field"] == "payload"


async def test_openapi_documents_the_fan_out_with_200_and_207(http) -> None:
    document = (await http.get("/openapi.json")).json()
    operation = document["paths"]["/items/{item}"]["get"]
    assert set(operation["responses"]) >= {"200", "207"}
    schema = operation["responses"]["207"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["stock", "pricing"]
    assert [parameter["name"] for parameter in operation["parameters"]] == ["item"]


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        (("GO", "/x", {"a": "b"}), "method"),
        (("GET", "x", {"a": "b"}), "must start with '/'"),
        (("GET", "/x", {}), "names no commands"),
        (("GET", "/x", {"a": ""}), "must not be empty"),
        (("GET", "/x/{id}/{id}", {"a": "b"}), "names a parameter twice"),
    ],
)
def test_a_malformed_fan_out_is_refused_naming_what_is_wrong(arguments, reason) -> None:
    with pytest.raises(ValueError, match=reason):
        FanOut(*arguments)


def test_a_fan_out_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout"):
        FanOut("GET", "/x", {"a": "b"}, timeout=0)
