"""Views: read-only endpoints over models; read-your-writes across services."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

from micro import Micro, ServiceNotFoundError, Settings, TimeoutError
from micro.eventstore.base import ANY, NewEvent
from micro.readmodel import AppliedEvent, Model
from micro.testing import wait_until as until
from tests.command.support import LaggingStore, tally_service


class Total(BaseModel):
    id: str
    amount: int = 0


def stats_service(settings: Settings, store: LaggingStore) -> Micro:
    """Another service, with its own model of the tally's events."""
    micro = Micro(settings, service="stats")

    def on_added(event: AppliedEvent, models) -> None:
        current = models.grand.get("all") or Total(id="all")
        models.grand.put(
            current.model_copy(update={"amount": current.amount + event.data["amount"]})
        )

    micro.commander.add_model(Model("grand", Total))
    micro.commander.add_reducer("Added", on_added)
    micro.add_view(
        "grand total", lambda query, models: (models.grand.get("all") or Total(id="all")).amount
    )
    micro.commander.store = store
    return micro


async def test_a_view_on_another_service_waits_for_the_position_of_a_write(
    micro_settings: Settings, store: LaggingStore
) -> None:
    tally = tally_service(micro_settings, store)
    stats = stats_service(micro_settings, store)
    async with tally, stats, Micro(micro_settings) as client:
        await client.act("add", {"id": "a", "amount": 5})
        await until(lambda: stats.commander.projector.position == 1)
        store.hold()  # the stats service lags behind (so does the tally: no command now)
        await store.append("tally-a", [NewEvent("Added", {"id": "a", "amount": 7})], ANY)
        # without a position a view answers at once, from what it has
        assert await client.act("grand total") == 5
        reading = asyncio.create_task(client.request("grand total", min_position=2))
        projector = stats.commander.projector
        await until(lambda: bool(projector._waiters), what="the view to wait for position 2")
        assert not reading.done()
        store.release()
        reply = await reading
    assert reply.value == 12


async def test_read_your_writes_with_the_position_a_command_replied(
    micro_settings: Settings, store: LaggingStore
) -> None:
    tally = tally_service(micro_settings, store)
    stats = stats_service(micro_settings, store)
    async with tally, stats, Micro(micro_settings) as client:
        for amount in range(1, 31):
            written = await client.request("add", {"id": "a", "amount": amount})
            assert await client.act("grand total", min_position=written.position) == sum(
                range(1, amount + 1)
            )


async def test_a_view_gives_up_at_the_deadline_when_the_position_never_comes(
    micro_settings: Settings, store: LaggingStore
) -> None:
    async with stats_service(micro_settings, store), Micro(micro_settings) as client:
        with pytest.raises(TimeoutError):
            await client.act("grand total", min_position=99, timeout=0.4)
        assert await client.act("grand total", min_position=0) == 0


async def test_a_service_serves_only_once_its_models_caught_up(
    micro_settings: Settings, store: LaggingStore
) -> None:
    events = [NewEvent("Added", {"id": "a", "amount": 1}) for _ in range(3000)]
    for start in range(0, len(events), 500):
        await store.append("tally-a", events[start : start + 500], ANY)
    answers: list[object] = []
    async with Micro(micro_settings) as client:

        async def poll() -> None:
            while True:
                try:
                    answers.append(await client.act("tally", {"id": "a"}, timeout=2))
                    return
                except ServiceNotFoundError:
                    answers.append("not yet")
                    await asyncio.sleep(0.001)

        polling = asyncio.create_task(poll())
        await until(lambda: len(answers) > 0, what="the first poll")
        async with tally_service(micro_settings, store) as tally:
            await asyncio.wait_for(polling, 5)
            assert tally.commander.projector.applied == 3000
    assert answers[0] == "not yet"
    assert answers[-1] == {"id": "a", "total": 3000, "count": 3000}  # the first real answer
