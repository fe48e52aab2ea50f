"""Events without replies: emit() and on(), one instance per service or broadcast."""

import asyncio
from collections.abc import Callable

import pytest
from pydantic import BaseModel

from micro import Context, Micro, Settings, ValidationError
from micro.bus.connection import confirm
from micro.testing import wait_until as until


class Inbox:
    """Events received, with a way to wait (with a deadline) until enough arrived."""

    def __init__(self) -> None:
        self.items: list[tuple[str, object]] = []
        self._changed = asyncio.Condition()

    def listener(self, label: str) -> Callable[..., object]:
        async def receive(payload) -> None:
            async with self._changed:
                self.items.append((label, payload))
                self._changed.notify_all()

        return receive

    def of(self, label: str) -> list[object]:
        return [payload for who, payload in self.items if who == label]

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 5) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(condition), timeout)


async def settle(publisher: Micro, *listeners: Micro) -> None:
    """Every event published so far has been handed to, and handled by, every listener."""
    await confirm(publisher.client, 5)  # every publish reached the server
    for micro in listeners:
        await confirm(micro.client, 5)  # its PONG comes after every message routed to it
        for listener in micro._events.listeners:
            await asyncio.wait_for(listener.subscription._pending_queue.join(), 5)
        if micro._events._tasks:
            await asyncio.wait(set(micro._events._tasks), timeout=5)


async def test_each_subscribing_service_gets_an_event_once_on_one_instance(
    micro_settings: Settings,
) -> None:
    inbox = Inbox()
    billing = [
        Micro(micro_settings, service="billing").on("order placed", inbox.listener(f"b{i}"))
        for i in range(2)
    ]
    shipping = Micro(micro_settings, service="shipping").on("order placed", inbox.listener("s"))
    bystander = Micro(micro_settings, service="bystander").on("other", inbox.listener("x"))
    async with billing[0], billing[1], shipping, bystander, Micro(micro_settings) as emitter:
        for number in range(40):
            await emitter.emit("order placed", {"order": number})
        await inbox.wait_for(
            lambda: len(inbox.of("s")) == 40 and len(inbox.of("b0") + inbox.of("b1")) == 40
        )
        await settle(emitter, *billing, shipping, bystander)
    assert sorted(p["order"] for p in inbox.of("b0") + inbox.of("b1")) == list(range(40))
    assert inbox.of("b0")
    assert inbox.of("b1")  # the two instances shared the events
    assert [p["order"] for p in inbox.of("s")] == list(range(40))  # in order, each once
    assert inbox.of("x") == []


async def test_broadcast_listeners_get_every_event_on_every_instance(
    micro_settings: Settings,
) -> None:
    inbox = Inbox()
    instances = [
        Micro(micro_settings, service="cache").on(
            "price changed", inbox.listener(f"c{i}"), broadcast=True
        )
        for i in range(3)
    ]
    async with instances[0], instances[1], instances[2], Micro(micro_settings) as emitter:
        for number in range(5):
            await emitter.emit("price changed", number)
        await inbox.wait_for(lambda: len(inbox.items) == 15)
        await settle(emitter, *instances)
    for index in range(3):
        assert inbox.of(f"c{index}") == [0, 1, 2, 3, 4]


async def test_an_event_reaches_a_listener_in_another_process(
    spawn, micro_settings: Settings
) -> None:
    spawn(
        """
        from micro import Context
        async def audit(event, ctx: Context):
            await ctx.act("record", {"seen": event, "trace": ctx.trace_id})
        micro = Micro(service="auditor")
        micro.on("user signed up", audit)
        micro.hook("on_start", announce)
        micro.start()
        """
    )
    recorded: asyncio.Queue[dict] = asyncio.Queue()
    test_side = Micro(micro_settings, service="recorder").add("record", recorded.put_nowait)
    async with test_side:
        await test_side.emit("user signed up", {"user": "ana"})
        record = await asyncio.wait_for(recorded.get(), 5)
    assert record["seen"] == {"user": "ana"}
    assert len(record["trace"]) == 16


async def test_an_event_emitted_while_serving_a_request_carries_its_trace(
    micro_settings: Settings,
) -> None:
    traces: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    async def place(request, ctx: Context) -> str:
        await service.emit("order placed", request)
        return ctx.trace_id

    async def on_placed(event, ctx: Context) -> None:
        traces.put_nowait((ctx.trace_id, ctx.caller))

    service = Micro(micro_settings, service="shop").add("place", place)
    service.on("order placed", on_placed)
    async with service, Micro(micro_settings, service="caller") as caller:
        trace = await caller.act("place", {"item": "tea"})
        assert await asyncio.wait_for(traces.get(), 5) == (trace, "shop")


async def test_a_failing_or_refusing_listener_does_not_stop_the_next_events(
    micro_settings: Settings,
) -> None:
    class Payment(BaseModel):
        amount: int

    inbox = Inbox()
    received = inbox.listener("ok")

    async def picky(payment: Payment) -> None:
        if payment.amount == 13:
            raise RuntimeError("unlucky")
        await received(payment.amount)

    async with (
        Micro(micro_settings, service="svc").on("paid", picky) as service,
        Micro(micro_settings) as emitter,
    ):
        await emitter.emit("paid", {"amount": 13})  # the listener raises
        await emitter.emit("paid", {"amount": "lots"})  # fails validation
        await emitter.emit("paid", {"amount": 2})
        await inbox.wait_for(lambda: inbox.of("ok") == [2])
        await settle(emitter, service)
    assert inbox.of("ok") == [2]


async def test_listeners_added_while_serving_receive_later_events(
    micro_settings: Settings,
) -> None:
    inbox = Inbox()
    async with Micro(micro_settings, service="svc") as service, Micro(micro_settings) as emitter:
        service.on("late", inbox.listener("l"))
        # on() subscribes in the background: wait until the server knows the subscription
        await until(lambda: bool(service._events.listeners))
        await confirm(service.client, 5)
        await emitter.emit("late", 1)
        await inbox.wait_for(lambda: inbox.of("l") == [1])


async def test_emit_refuses_bad_names_and_payloads_and_needs_a_connection(
    micro_settings: Settings,
) -> None:
    with pytest.raises(RuntimeError, match="not connected"):
        await Micro(micro_settings).emit("x")
    async with Micro(micro_settings) as emitter:
        with pytest.raises(ValidationError, match="event name"):
            await emitter.emit("")
        with pytest.raises(ValidationError, match="not JSON-serialisable"):
            await emitter.emit("x", {"when": object()})


def test_on_refuses_bad_listeners_at_registration(micro_settings: Settings) -> None:
    micro = Micro(micro_settings)
    with pytest.raises(TypeError, match="not callable"):
        micro.on("x", "print")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="event name"):
        micro.on("a\nb", print)
    with pytest.raises(TypeError, match="broadcast"):
        micro.on("x", print, broadcast="yes")  # type: ignore[arg-type]
