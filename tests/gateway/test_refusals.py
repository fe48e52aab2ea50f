"""``Prefer: refusal=answer``: a rule's refusal as a 200 for the caller that asks, only."""

from __future__ import annotations

from tests.gateway.support import Stack

PREFER = {"Prefer": "refusal=answer"}


async def test_a_refusal_stays_422_for_a_caller_that_does_not_ask(stack: Stack) -> None:
    response = await stack.client.post("/api/demo/refuse", json={})
    assert response.status_code == 422
    assert "preference-applied" not in response.headers


async def test_a_caller_that_asks_gets_the_refusal_as_a_200_with_the_same_body(
    stack: Stack,
) -> None:
    plain = await stack.client.post("/api/demo/refuse", json={})
    answered = await stack.client.post("/api/demo/refuse", json={}, headers=PREFER)
    assert answered.status_code == 200
    assert answered.headers["preference-applied"] == "refusal=answer"
    assert "Prefer" in answered.headers["vary"]
    assert answered.json()["error"]["code"] == "rule_violation"
    assert answered.json()["error"]["message"] == plain.json()["error"]["message"]


async def test_the_preference_is_found_among_others(stack: Stack) -> None:
    headers = {"Prefer": "respond-async, Refusal=Answer"}
    response = await stack.client.post("/api/demo/refuse", json={}, headers=headers)
    assert response.status_code == 200


async def test_only_a_refusal_becomes_an_answer(stack: Stack) -> None:
    missing = await stack.client.get("/things/404", headers=PREFER)
    assert missing.status_code == 404
    bad = await stack.client.post("/api/demo/greet", json={"name": ""}, headers=PREFER)
    assert bad.status_code == 400
    ok = await stack.client.post("/api/demo/greet", json={"name": "a"}, headers=PREFER)
    assert ok.status_code == 200
    assert "preference-applied" not in ok.headers


async def test_the_metrics_still_count_the_refusal_as_422(stack: Stack) -> None:
    await stack.client.post("/api/demo/refuse", json={}, headers=PREFER)
    text = (await stack.client.get("/metrics")).text
    assert 'route="/api/demo/refuse",status="422"} 1.0' in text
