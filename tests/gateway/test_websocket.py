"""``/ws``: calls, streams, the event feed, tokens and limits over one WebSocket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from micro import Context, Micro
from micro.eventstore.base import ANY, NewEvent
from micro.gateway import Gateway, GatewaySettings
from micro.testing import wait_until
from tests.gateway.support import Stack

DEADLINE = 10


def _ws_url(gateway: Gateway) -> str:
    return gateway.url.replace("http://", "ws://") + "/ws"


@asynccontextmanager
async def socket(
    gateway: Gateway, headers: dict[str, str] | None = None
) -> AsyncIterator[ClientConnection]:
    async with connect(_ws_url(gateway), additional_headers=headers, open_timeout=DEADLINE) as ws:
        yield ws


async def send(ws: ClientConnection, frame: Any) -> None:
    await ws.send(orjson.dumps(frame).decode())


async def receive(ws: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), DEADLINE))
    return frame


async def call(
    ws: ClientConnection, frame_id: Any, act: str, payload: Any = None, **extra: Any
) -> dict[str, Any]:
    await send(ws, {"id": frame_id, "act": act, "payload": payload or {}, **extra})
    return await receive(ws)


@asynccontextmanager
async def gateway_with(stack: Stack, **settings: Any) -> AsyncIterator[Gateway]:
    gateway = Gateway(
        Micro(stack.service.settings, service="gateway-limits"),
        GatewaySettings(port=0, required_services=["demo"], **settings),
        routes=stack.gateway.routes,
        event_store=stack.store,
    )
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop()
        await gateway.micro.close()


async def test_a_call_gets_its_reply_under_its_id(stack: Stack) -> None:
    async with socket(stack.gateway) as ws:
        answer = await call(ws, 1, "greet", {"name": "ada", "times": 2})
        assert answer == {
            "id": 1,
            "result": {"greeting": "hello ada hello ada", "meta": {}, "min_position": None},
        }
        assert (await call(ws, "second", "lookup", {"id": 7}))["result"] == {
            "id": 7,
            "verbose": False,
        }


async def test_errors_carry_the_same_envelope_as_http(stack: Stack) -> None:
    async with socket(stack.gateway) as ws:
        refused = await call(ws, 1, "refuse")
        http = await stack.client.post("/api/demo/refuse", json={})
        assert refused["status"] == http.status_code
        assert refused["error"]["code"] == http.json()["error"]["code"] == "rule_violation"
        invalid = await call(ws, 2, "greet", {"name": ""})
        assert invalid["status"] == 400
        assert invalid["error"]["code"] == "validation"
        assert invalid["error"]["details"]["fields"][0]["field"] == "name"
        hidden = await call(ws, 3, "explode")
        assert hidden["status"] == 500
        assert hidden["error"]["message"] == "internal error"
        assert "hunter2" not in orjson.dumps(hidden).decode()
        missing = await call(ws, 4, "no such command")
        assert missing["error"]["code"] == "not_found"


async def test_a_stream_sends_messages_then_done(stack: Stack) -> None:
    async with socket(stack.gateway) as ws:
        await send(ws, {"id": 9, "act": "count", "payload": {}, "stream": True})
        frames = [await receive(ws) for _ in range(5)]
    assert frames == [
        {"id": 9, "message": {"step": 0}},
        {"id": 9, "message": {"step": 1}},
        {"id": 9, "message": {"step": 2}},
        {"id": 9, "message": 3},
        {"id": 9, "done": True},
    ]


@pytest.mark.parametrize(
    ("frame", "field"),
    [
        ("{not json", "frame"),
        ("[1, 2]", "frame"),
        ('{"hello": 1}', "frame"),
        ('{"act": "greet", "payload": {"name": "x"}}', "id"),
        ('{"id": true, "act": "greet"}', "id"),
        ('{"id": 1, "act": 5}', "act"),
        ('{"id": 1, "act": "greet", "payload": {"name": "x"}, "min_position": -1}', "min_position"),
        ('{"subscribe": "gossip"}', "subscribe"),
    ],
)
async def test_a_malformed_frame_gets_an_error_frame_and_the_socket_stays_usable(
    stack: Stack, frame: str, field: str
) -> None:
    async with socket(stack.gateway) as ws:
        await ws.send(frame)
        error = await receive(ws)
        assert error["status"] == 400
        assert error["error"]["details"]["fields"][0]["field"] == field
        assert (await call(ws, 2, "greet", {"name": "still here"}))["result"]["greeting"] == (
            "hello still here"
        )


async def test_a_binary_frame_is_refused(stack: Stack) -> None:
    async with socket(stack.gateway) as ws:
        await ws.send(b'{"id": 1, "act": "greet"}')
        error = await receive(ws)
        assert error["error"]["code"] == "bad_request"
        assert (await call(ws, 2, "lookup", {"id": 1}))["result"]["id"] == 1


async def test_a_frame_too_large_is_refused_with_a_typed_error(stack: Stack) -> None:
    async with gateway_with(stack, ws_max_frame=2_000) as gateway, socket(gateway) as ws:
        answer = await call(ws, 1, "greet", {"name": "x" * 3_000})
        assert answer["status"] == 413
        assert answer["error"]["code"] == "payload_too_large"
        assert answer["error"]["details"]["limit"] == 2_000
        assert (await call(ws, 2, "greet", {"name": "small"}))["result"][
            "greeting"
        ] == "hello small"
        # Far beyond the limit, the protocol itself closes the socket (1009).
        await ws.send("x" * 20_000)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), DEADLINE)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1009


async def test_too_many_calls_in_flight_are_refused_with_a_typed_error(stack: Stack) -> None:
    async with gateway_with(stack, ws_max_in_flight=2) as gateway, socket(gateway) as ws:
        await send(ws, {"id": 1, "act": "hold", "payload": {}})
        await send(ws, {"id": 2, "act": "hold", "payload": {}})
        refused = await call(ws, 3, "hold")
        assert refused["id"] == 3
        assert refused["status"] == 429
        assert refused["error"]["code"] == "too_many_requests"
        assert refused["error"]["retryable"] is True
        stack.release.set()
        answers = {(await receive(ws))["id"], (await receive(ws))["id"]}
        assert answers == {1, 2}
        assert (await call(ws, 4, "lookup", {"id": 4}))["result"]["id"] == 4


async def test_the_token_comes_from_the_header_or_the_first_frame(stack: Stack) -> None:
    async with socket(stack.gateway, {"Authorization": "Bearer good"}) as ws:
        assert (await call(ws, 1, "demo secret"))["result"] == "the secret"
    async with socket(stack.gateway) as ws:
        await send(ws, {"token": "good", "id": "auth"})
        assert await receive(ws) == {"id": "auth", "result": "ok"}
        assert (await call(ws, 1, "demo secret"))["result"] == "the secret"
        await send(ws, {"token": "other"})
        late = await receive(ws)
        assert late["error"]["details"]["fields"][0] == {"field": "token", "reason": "not first"}
    async with socket(stack.gateway) as ws:
        refused = await call(ws, 1, "demo secret")
        assert refused["status"] == 401


async def test_a_malformed_authorization_header_is_refused_and_closed(stack: Stack) -> None:
    async with socket(stack.gateway, {"Authorization": "Basic abc"}) as ws:
        error = await receive(ws)
        assert error["status"] == 401
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), DEADLINE)


async def test_events_arrive_on_the_socket_that_subscribed(stack: Stack) -> None:
    async with socket(stack.gateway) as ws:
        await send(ws, {"subscribe": "events"})
        assert (await receive(ws))["status"] == 401
    async with socket(stack.gateway, {"Authorization": "Bearer good"}) as ws:
        await send(ws, {"subscribe": "events"})
        subscribed = await receive(ws)
        assert subscribed["subscribed"] == "events"
        await stack.store.append("account-1", [NewEvent("AccountOpened", {"id": "1"})], ANY)
        await stack.store.append("user-ada", [NewEvent("UserSignedUp", {"hash": "x"})], ANY)
        await stack.store.append("account-1", [NewEvent("Deposited", {"amount": 5})], ANY)
        first, second = await receive(ws), await receive(ws)
        assert [first["event"]["type"], second["event"]["type"]] == ["AccountOpened", "Deposited"]
        # Calls and events share the socket.
        assert (await call(ws, 1, "lookup", {"id": 2}))["result"]["id"] == 2
        await send(ws, {"unsubscribe": "events"})
        assert await receive(ws) == {"unsubscribed": "events"}


async def test_an_idle_socket_is_closed(stack: Stack) -> None:
    async with gateway_with(stack, ws_idle_timeout=0.3) as gateway, socket(gateway) as ws:
        await send(ws, {"ping": 1})
        assert await receive(ws) == {"pong": 1}
        closing = await receive(ws)
        assert "idle" in closing["closing"]
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), DEADLINE)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1001


async def test_stopping_the_gateway_closes_its_sockets(stack: Stack) -> None:
    async with gateway_with(stack) as gateway, socket(gateway) as ws:
        await gateway.stop()
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), DEADLINE)


async def test_a_page_of_another_origin_cannot_open_the_socket(stack: Stack) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(_ws_url(stack.gateway), origin=Origin("http://elsewhere.example")):
            pass
    assert refused.value.response.status_code == 403
    own = Origin(stack.gateway.url)
    async with connect(_ws_url(stack.gateway), origin=own) as ws:
        assert (await call(ws, 1, "lookup", {"id": 3}))["result"]["id"] == 3
    async with (
        gateway_with(stack, cors_origins=["http://elsewhere.example"]) as gateway,
        connect(_ws_url(gateway), origin=Origin("http://elsewhere.example")) as ws,
    ):
        assert (await call(ws, 1, "lookup", {"id": 4}))["result"]["id"] == 4


async def test_socket_calls_count_toward_the_gateways_own_limit(stack: Stack) -> None:
    async with gateway_with(stack, max_in_flight=1) as gateway, socket(gateway) as ws:
        await send(ws, {"id": 1, "act": "hold", "payload": {}})
        # The first call is in flight once the gateway counts it; ask until it does.
        refused: dict[str, Any] = {}
        for attempt in range(100):
            refused = await call(ws, f"probe-{attempt}", "lookup", {"id": 1})
            if "error" in refused:
                break
        assert refused["status"] == 429
        assert "the gateway is forwarding" in refused["error"]["message"]
        http = await stack.client.get(f"{gateway.url}/api/demo/lookup", params={"id": 1})
        assert http.status_code == 429
        stack.release.set()
        assert (await receive(ws))["id"] == 1


async def test_a_subscription_replays_from_a_position_then_goes_live(stack: Stack) -> None:
    first = await stack.store.append("account-9", [NewEvent("Deposited", {"amount": 1})], ANY)
    await stack.store.append("account-9", [NewEvent("Deposited", {"amount": 2})], ANY)
    async with socket(stack.gateway, {"Authorization": "Bearer good"}) as ws:
        await send(ws, {"subscribe": "events", "from_position": first.position})
        assert (await receive(ws))["subscribed"] == "events"
        replayed = [(await receive(ws))["event"]["data"]["amount"] for _ in range(2)]
        assert replayed == [1, 2]
        await stack.store.append("account-9", [NewEvent("Deposited", {"amount": 3})], ANY)
        assert (await receive(ws))["event"]["data"]["amount"] == 3


async def test_a_slid_session_token_comes_back_and_the_socket_uses_it(stack: Stack) -> None:
    def slide(request: dict, ctx: Context) -> str:
        ctx.token = "fresh-" + str(ctx.meta.get("token"))
        return "ok"

    slider = Micro(stack.service.settings, service="slider").add("slide", slide)

    async def routed() -> bool:
        return bool((await stack.gateway.refresh()).by_command("slide"))

    async with slider:
        await wait_until(routed, DEADLINE, what="the gateway to find 'slide'")
        async with socket(stack.gateway, {"Authorization": "Bearer old"}) as ws:
            first = await call(ws, 1, "slide")
            assert first == {"id": 1, "result": "ok", "token": "fresh-old"}
            second = await call(ws, 2, "slide")
            assert second["token"] == "fresh-fresh-old"
