"""An event handler whose calls fail with retryable errors waits the outage out."""

from __future__ import annotations

import asyncio
import contextlib
import time

from micro import Micro, ServiceNotFoundError, Settings, TimeoutError
from micro.eventstore import ANY, MemoryEventStore, NewEvent
from micro.readmodel import AppliedEvent


async def until_handled(micro: Micro, group: str, count: int) -> dict[str, object]:
    async def handled() -> dict[str, object]:
        while True:
            health: dict[str, object] = micro.health()["event_handlers"][group]
            if health["handled"] == count or health["status"] == "failed":
                return health
            await asyncio.sleep(0.01)

    return await asyncio.wait_for(handled(), 10)


async def test_retryable_failures_do_not_use_up_a_handlers_attempts(
    micro_settings: Settings,
) -> None:
    calls: list[int] = []

    async def notify(event: AppliedEvent) -> None:
        calls.append(event.position)
        if len(calls) <= 3:  # three calls into an outage, more than its attempts
            raise (TimeoutError if len(calls) % 2 else ServiceNotFoundError)("outage")

    store = MemoryEventStore()
    micro = Micro(micro_settings, service="notifier")
    micro.on_event("Happened", notify, group="mail")
    micro.commander.store = store
    async with micro:
        micro.modules.get("app_stream").attempts = 2
        await store.append("thing-1", [NewEvent("Happened", {})], ANY)
        health = await until_handled(micro, "mail", 1)
    assert health["status"] == "ok", health["reason"]
    assert calls == [1, 1, 1, 1]


async def test_a_handler_failing_otherwise_still_stops_its_group_after_its_attempts(
    micro_settings: Settings,
) -> None:
    calls: list[int] = []

    async def notify(event: AppliedEvent) -> None:
        calls.append(event.position)
        raise ValueError("a bug, not an outage")

    store = MemoryEventStore()
    micro = Micro(micro_settings, service="notifier")
    micro.on_event("Happened", notify, group="mail")
    micro.commander.store = store
    async with micro:
        micro.modules.get("app_stream").attempts = 2
        await store.append("thing-1", [NewEvent("Happened", {})], ANY)
        health = await until_handled(micro, "mail", 1)
    assert health["status"] == "failed"
    assert "a bug, not an outage" in str(health["reason"])
    assert calls == [1, 1]


async def test_a_service_stops_even_when_a_cancellation_of_its_handlers_is_lost(
    micro_settings: Settings,
) -> None:
    # nats-py turns some cancellations into its own errors, and asyncio.wait_for on
    # Python 3.11 can swallow one; a handler that does the same plays that here.
    started = asyncio.Event()

    async def slow(event: AppliedEvent) -> None:
        started.set()
        with contextlib.suppress(asyncio.CancelledError):  # lost
            await asyncio.sleep(30)

    store = MemoryEventStore()
    micro = Micro(micro_settings, service="notifier")
    micro.on_event("Happened", slow, group="mail")
    micro.commander.store = store
    await micro.open()
    try:
        await store.append("thing-1", [NewEvent("Happened", {})], ANY)
        await asyncio.wait_for(started.wait(), 5)
    finally:
        began = time.monotonic()
        await asyncio.wait_for(micro.close(), 20)
    assert time.monotonic() - began < 5
