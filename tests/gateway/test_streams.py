"""Server-Sent Events: a command's intermediate messages, and the live event feed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import orjson

from micro.eventstore.base import ANY, NewEvent
from micro.testing import wait_until as until
from tests.gateway.support import Stack


async def _sse(response: httpx.Response) -> AsyncIterator[tuple[str, str | None, object]]:
    """Each event of an SSE response as (event, id, data)."""
    event, event_id, data = "message", None, []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield event, event_id, orjson.loads("\n".join(data))
            event, event_id, data = "message", None, []
        elif line.startswith("event: "):
            event = line[7:]
        elif line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            data.append(line[6:])


async def _take(stack: Stack, url: str, count: int, **options) -> list:
    taken = []
    async with stack.client.stream("GET", url, **options) as response:
        assert response.status_code == 200
        async for item in _sse(response):
            taken.append(item)
            if len(taken) == count:
                break
    return taken


async def test_intermediate_messages_then_the_result_stream_as_sse(stack: Stack) -> None:
    events = []
    async with stack.client.stream(
        "POST", "/api/demo/count", json={}, headers={"Accept": "text/event-stream"}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [(name, data) async for name, _, data in _sse(response)]
    assert events == [
        ("message", {"step": 0}),
        ("message", {"step": 1}),
        ("message", {"step": 2}),
        ("result", 3),
    ]


async def test_a_stream_that_fails_at_once_is_a_plain_error_response(stack: Stack) -> None:
    response = await stack.client.post(
        "/api/demo/refuse", json={}, headers={"Accept": "text/event-stream"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "rule_violation"


async def test_the_event_feed_needs_a_token(stack: Stack) -> None:
    response = await stack.client.get("/api/events")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


async def test_appended_events_appear_live_on_the_feed(stack: Stack) -> None:
    async def append_soon() -> None:
        feed = stack.gateway.feed
        assert feed is not None
        # Live events only: append once the client's queue has joined the feed.
        await until(lambda: len(feed._clients) == 1, what="the client to join the feed")
        await stack.store.append("account-1", [NewEvent("AccountOpened", {"id": "1"})], ANY)
        await stack.store.append("user-ada", [NewEvent("UserSignedUp", {"hash": "x"})], ANY)
        await stack.store.append("account-1", [NewEvent("Deposited", {"amount": 5})], ANY)

    task = asyncio.ensure_future(append_soon())
    taken = await asyncio.wait_for(
        _take(stack, "/api/events", 2, headers={"Authorization": "Bearer t"}), 10
    )
    await task
    assert [data["type"] for _, _, data in taken] == ["AccountOpened", "Deposited"]
    assert [event_id for _, event_id, _ in taken] == ["1", "3"]
    assert taken[1][2]["data"] == {"amount": 5}
    assert set(taken[1][2]["metadata"]) <= {"command", "correlation_id", "recorded_at"}


async def test_the_feed_replays_history_from_a_position_and_resumes_after_last_event_id(
    stack: Stack,
) -> None:
    for amount in range(1, 5):
        await stack.store.append("account-2", [NewEvent("Deposited", {"amount": amount})], ANY)
    await stack.gateway.feed.wait_for(4, 5)
    history = await _take(stack, "/api/events?from_position=2&access_token=t", 3)
    assert [data["data"]["amount"] for _, _, data in history] == [2, 3, 4]
    resumed = await _take(
        stack, "/api/events", 1, headers={"Authorization": "Bearer t", "Last-Event-ID": "3"}
    )
    assert resumed[0][2]["position"] == 4


async def test_a_bad_from_position_is_400(stack: Stack) -> None:
    response = await stack.client.get("/api/events?from_position=abc&access_token=t")
    assert response.status_code == 400


async def test_read_your_writes_min_position_ahead_of_the_store_is_400(stack: Stack) -> None:
    response = await stack.client.get("/api/demo/lookup?id=1&min_position=999")
    assert response.status_code == 400
    assert response.json()["error"]["details"]["fields"][0]["field"] == "min_position"
    await stack.store.append("account-3", [NewEvent("Deposited", {"amount": 1})], ANY)
    response = await stack.client.get("/api/demo/lookup?id=1&min_position=1")
    assert response.status_code == 200


async def test_a_command_takes_min_position_too(stack: Stack) -> None:
    # A command that depends on an earlier one (a login after the sign-up) is decided by an
    # instance that has applied the earlier one's position.
    response = await stack.client.post("/api/demo/greet?min_position=999", json={"name": "a"})
    assert response.status_code == 400
    assert response.json()["error"]["details"]["fields"][0]["field"] == "min_position"
    await stack.store.append("account-3", [NewEvent("Deposited", {"amount": 1})], ANY)
    response = await stack.client.post("/api/demo/greet?min_position=1", json={"name": "a"})
    assert response.status_code == 200
    assert response.json()["min_position"] == 1
    response = await stack.client.post("/api/demo/greet", json={"name": "a"})
    assert response.json()["min_position"] is None
