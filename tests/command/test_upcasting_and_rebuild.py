"""Old event shapes read through upcasters; rebuilding models while commands keep coming."""

from __future__ import annotations

import asyncio

import pytest

from micro import Micro, Reply, Settings, ValidationError
from micro.eventstore.base import ANY, NewEvent
from micro.readmodel.projector import Projector
from micro.testing import wait_until as until
from tests.command.support import HERE, LaggingStore, tally_service

LEDGER = HERE / "apps" / "ledger"


async def test_an_event_stored_at_version_1_is_read_as_version_2(
    micro_settings: Settings, store: LaggingStore
) -> None:
    # written by the service's previous release, before Paid had a currency
    await store.append("payment-p1", [NewEvent("Paid", {"id": "p1", "amount": 5})], ANY)
    ledger = Micro(micro_settings, service="ledger", app_dir=LEDGER)
    ledger.commander.add_command("pay")
    ledger.add_view(
        "payment", lambda query, models: models.payment.require(query["id"]).model_dump()
    )
    ledger.commander.store = store
    async with ledger, Micro(micro_settings) as client:
        assert await client.act("payment", {"id": "p1"}) == {
            "id": "p1",
            "amount": 5,
            "currency": "EUR",
        }
        await client.act("pay", {"id": "p2", "amount": 7, "currency": "CHF"})
        assert await client.act("payment", {"id": "p2"}) == {
            "id": "p2",
            "amount": 7,
            "currency": "CHF",
        }
    old, new = await store.events()
    assert old.data == {"id": "p1", "amount": 5}  # stored events are never rewritten
    assert "schema_version" not in old.metadata
    assert new.metadata["schema_version"] == 2


async def fill_tally(store: LaggingStore, count: int) -> None:
    for start in range(0, count, 500):
        await store.append(
            "tally-a",
            [NewEvent("Added", {"id": "a", "amount": 1}) for _ in range(min(500, count - start))],
            ANY,
        )


async def test_rebuild_replays_everything_into_fresh_models_and_swaps_them_in(
    micro_settings: Settings, store: LaggingStore
) -> None:
    await fill_tally(store, 1200)
    async with tally_service(micro_settings, store) as tally:
        commander = tally.commander
        models = commander.projector.models
        models.tally.put({"id": "a", "total": -5, "count": 0})  # drifted (a bug fixed since)
        assert await commander.rebuild() == 1200
        assert models.tally.require("a").model_dump() == {"id": "a", "total": 1200, "count": 1200}


async def test_the_rebuild_command_rebuilds_the_named_models(
    micro_settings: Settings, store: LaggingStore
) -> None:
    await fill_tally(store, 300)
    async with tally_service(micro_settings, store), Micro(micro_settings) as client:
        assert await client.act("rebuild tally") == {"models": ["tally"], "events": 300}
        assert await client.act("rebuild tally", {"models": ["tally"]}) == {
            "models": ["tally"],
            "events": 300,
        }
        with pytest.raises(ValidationError, match="unknown model"):
            await client.act("rebuild tally", {"models": ["talley"]})
        with pytest.raises(ValidationError, match="list of model names"):
            await client.act("rebuild tally", {"models": "tally"})


async def test_commands_during_a_rebuild_wait_and_none_is_lost(
    micro_settings: Settings, store: LaggingStore
) -> None:
    await fill_tally(store, 6000)
    async with tally_service(micro_settings, store) as tally, Micro(micro_settings) as client:
        commander = tally.commander
        rebuilding = asyncio.create_task(commander.rebuild())
        answered_during_rebuild: list[bool] = []

        async def add(payload: dict) -> Reply:
            reply = await client.request("add", payload)
            answered_during_rebuild.append(not rebuilding.done())
            return reply

        replies = await asyncio.gather(
            *(add({"id": f"t{n % 10}", "amount": n + 1}) for n in range(100)),
            add({"id": "b", "amount": 1}),
        )
        assert any(answered_during_rebuild)  # commands ran while the copy was replaying
        assert await rebuilding >= 6000
        # one more after the swap: the swapped-in models take new events too
        last = await client.request("add", {"id": "t0", "amount": 1})
        live = commander.projector.models.tally
        fresh = Projector(
            store,
            type(commander.models)({"tally": live.fresh()}),
            commander.reducers,
            commander.types,
        )
        await fresh.start(timeout=10)
        await fresh.stop()
    assert live.dump() == fresh.models.tally.dump()
    assert live.require("a").total == 6000
    assert live.require("b").total == 1
    assert sum(live.require(f"t{k}").total for k in range(10)) == sum(range(1, 101)) + 1
    assert sorted(reply.position for reply in replies) == list(range(6001, 6102))
    assert last.position == 6102


async def test_a_rebuild_waits_for_nothing_when_idle_and_keeps_serving(
    micro_settings: Settings, store: LaggingStore
) -> None:
    async with tally_service(micro_settings, store) as tally, Micro(micro_settings) as client:
        assert await tally.commander.rebuild() == 0
        await client.act("add", {"id": "a", "amount": 2})
        await until(lambda: tally.commander.projector.position == 1)
        assert await tally.commander.rebuild(["tally"]) == 1
        assert await client.act("tally", {"id": "a"}) == {"id": "a", "total": 2, "count": 1}
