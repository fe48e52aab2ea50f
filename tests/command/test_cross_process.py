"""The command cycle across processes, on the JetStream event store (the default)."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from micro import (
    ConcurrencyError,
    Micro,
    RuleViolation,
    ServiceNotFoundError,
    Settings,
    TimeoutError,
)
from micro.eventstore import EventStore, NewEvent, RecordedEvent, open_event_store
from micro.eventstore.base import ANY
from micro.readmodel import Models
from micro.readmodel.projector import Projector
from micro.testing import wait_until as until
from tests.command.support import BANK, BANK_ENVIRONMENT, TALLY, signed_in

TALLY_SOURCE = f"""
from pathlib import Path
micro = Micro(service="tally", app_dir=Path({str(TALLY)!r}))
for command in ("add", "mark"):
    micro.commander.add_command(command)
micro.add_view("tally", lambda query, models: models.tally.require(query["id"]).model_dump())
micro.add_view("tallies", lambda query, models: sorted(
    (record.model_dump() for record in models.tally.all()), key=lambda record: record["id"]))
micro.add("tally health", lambda: micro.health())
if os.environ.get("SNAPSHOTS"):
    micro.modules.want(["snapshooter"])
    async def snapshot():
        return await micro.modules.get("snapshooter").save()
    micro.add("tally snapshot", snapshot)
if os.environ.get("HANDLED_FILE"):
    def handle(event):
        with open(os.environ["HANDLED_FILE"], "a") as handled:
            handled.write(f"{{event.position}}\\n")
    micro.on_event("Added", handle, group="audit")
micro.hook("on_start", announce)
micro.start()
"""

BANK_SOURCE = f"""
import runpy
micro = runpy.run_path({str(BANK / "app.py")!r}, run_name="bank_sample")["micro"]
micro.hook("on_start", announce)
micro.start()
"""


@pytest.fixture
async def events(micro_settings: Settings) -> AsyncIterator[EventStore]:
    """This test's JetStream event store, as the services see it."""
    store = open_event_store(micro_settings)
    await store.start()
    yield store
    await store.close()


async def all_events(store: EventStore) -> list[RecordedEvent]:
    return [event async for event in store.read_all()]


async def replayed_tallies(store: EventStore) -> list[dict[str, Any]]:
    """The tally model as a fresh replay of the whole store builds it."""
    service = Micro(Settings(), service="replay", app_dir=TALLY)
    service.commander.add_command("add")
    service.commander.add_command("mark")
    commander = service.commander
    projector = Projector(
        store, Models({"tally": commander.models.tally}), commander.reducers, commander.types
    )
    await projector.start(timeout=20)
    await projector.stop()
    return sorted(
        (record.model_dump() for record in projector.models.tally.all()), key=lambda r: r["id"]
    )


async def fill(store: EventStore, stream: str, count: int, amount: int = 1) -> None:
    tally = stream.removeprefix("tally-")
    for start in range(0, count, 500):
        batch = [
            NewEvent("Added", {"id": tally, "amount": amount})
            for _ in range(min(500, count - start))
        ]
        await store.append(stream, batch, ANY)


async def test_concurrent_withdrawals_over_two_processes_never_overdraw(
    spawn, micro_settings: Settings, events: EventStore
) -> None:
    spawn(BANK_SOURCE, **BANK_ENVIRONMENT)
    spawn(BANK_SOURCE, **BANK_ENVIRONMENT)
    async with Micro(micro_settings) as client:
        # Each step names the position it depends on: either instance may serve the next.
        meta, position = await signed_in(client)
        opened = await client.request(
            "open account", {"id": "a1", "owner": "ann"}, meta=meta, min_position=position
        )
        funded = await client.request(
            "deposit", {"id": "a1", "amount": 60}, meta=meta, min_position=opened.position
        )
        outcomes = await asyncio.gather(
            *(
                client.act(
                    "withdraw",
                    {"id": "a1", "amount": 1},
                    meta=meta,
                    timeout=10,
                    min_position=funded.position,
                )
                for _ in range(100)
            ),
            return_exceptions=True,
        )
        withdrawn = [e for e in await all_events(events) if e.type == "Withdrawn"]
        position = withdrawn[-1].position if withdrawn else 0
        balance = await client.act("account balance", {"id": "a1"}, min_position=position)
    served = [o for o in outcomes if isinstance(o, dict)]
    refused = [o for o in outcomes if isinstance(o, RuleViolation)]
    lost = [o for o in outcomes if isinstance(o, ConcurrencyError)]
    assert len(served) + len(refused) + len(lost) == 100, [
        o for o in outcomes if isinstance(o, Exception)
    ]
    assert all("insufficient funds" in str(o) for o in refused)
    assert len(withdrawn) == len(served)  # each success stored exactly once, nothing else
    assert balance["balance"] == 60 - len(served)
    assert balance["balance"] >= 0
    assert len(served) == 60 or lost  # money is left only when a race was lost too often
    assert {reply["balance"] for reply in served} <= set(range(60))


@pytest.mark.slow
async def test_a_service_killed_mid_load_keeps_every_acknowledged_command_once(
    spawn, micro_settings: Settings, events: EventStore
) -> None:
    service = spawn(TALLY_SOURCE)
    acknowledged: dict[str, int] = {}
    failed: list[str] = []
    commands = {f"k{n}": {"id": f"t{n % 20}", "amount": 1 + n % 3} for n in range(600)}
    async with Micro(micro_settings) as client:

        async def send(key: str) -> None:
            try:
                reply = await client.request("add", commands[key], idempotency_key=key, timeout=2)
            except (TimeoutError, ServiceNotFoundError):
                failed.append(key)
            else:
                acknowledged[key] = reply.position

        async def load() -> None:
            keys = list(commands)
            for start in range(0, len(keys), 30):
                await asyncio.gather(*(send(key) for key in keys[start : start + 30]))

        loading = asyncio.create_task(load())
        await until(lambda: len(acknowledged) >= 150, 20, "the load to be under way")
        service.process.kill()  # kill -9, in the middle of the load
        service.wait()
        await loading
        assert failed, "the kill landed after the load: nothing was in flight"
        spawn(TALLY_SOURCE)
        # the callers retry what failed, with the same keys
        for key in failed:
            reply = await client.request("add", commands[key], idempotency_key=key, timeout=10)
            acknowledged[key] = reply.position
        stored = await all_events(events)
        served = await client.act("tallies", min_position=stored[-1].position)
    keys = collections.Counter(event.metadata["idempotency_key"] for event in stored)
    assert set(keys) == set(commands)  # every command stored...
    assert max(keys.values()) == 1  # ...exactly once
    by_key = {event.metadata["idempotency_key"]: event.position for event in stored}
    assert all(by_key[key] == position for key, position in acknowledged.items())
    assert served == await replayed_tallies(events)
    assert sum(tally["total"] for tally in served) == sum(c["amount"] for c in commands.values())


async def test_a_restarted_service_serves_only_once_caught_up(
    spawn, micro_settings: Settings, events: EventStore
) -> None:
    await fill(events, "tally-a", 20_000)
    answers: list[object] = []
    async with Micro(micro_settings) as client:

        async def poll() -> None:
            while True:
                try:
                    answers.append(await client.act("tally", {"id": "a"}, timeout=5))
                    return
                except ServiceNotFoundError:
                    answers.append("not yet")
                    await asyncio.sleep(0.002)

        polling = asyncio.create_task(poll())
        await until(lambda: bool(answers), what="the first poll")
        await asyncio.to_thread(spawn, TALLY_SOURCE)
        await asyncio.wait_for(polling, 10)
    assert answers[0] == "not yet"
    assert answers[-1] == {"id": "a", "total": 20_000, "count": 20_000}  # its first answer


@pytest.mark.slow
async def test_a_restart_loads_the_snapshot_and_replays_only_the_tail(
    spawn, micro_settings: Settings, events: EventStore
) -> None:
    await fill(events, "tally-a", 5000)
    first = spawn(TALLY_SOURCE, SNAPSHOTS="1")
    async with Micro(micro_settings) as client:
        assert await client.act("tally snapshot") == 5000
        first.stop()
        await fill(events, "tally-b", 7)
        spawn(TALLY_SOURCE, SNAPSHOTS="1")
        health = await client.act("tally health")
        tallies = await client.act("tallies")
    assert health["models"]["applied"] == 7
    assert health["models"]["position"] == 5007
    assert tallies == await replayed_tallies(events)


async def test_a_rebuild_under_load_loses_no_command(
    spawn, micro_settings: Settings, events: EventStore
) -> None:
    await fill(events, "tally-big", 10_000, amount=0)
    spawn(TALLY_SOURCE)
    async with Micro(micro_settings) as client:
        rebuilding = asyncio.create_task(client.act("rebuild tally", timeout=30))
        replies = await asyncio.gather(
            *(
                client.request("add", {"id": f"t{n % 10}", "amount": 1}, timeout=30)
                for n in range(200)
            )
        )
        rebuilt = await rebuilding
        served = await client.act("tallies", min_position=max(r.position for r in replies))
    assert rebuilt["models"] == ["tally"]
    assert rebuilt["events"] >= 10_000
    assert [t["total"] for t in served if t["id"] != "big"] == [20] * 10
    assert served == await replayed_tallies(events)


STATS_SOURCE = """
from micro.readmodel import Model
from pydantic import BaseModel

class Total(BaseModel):
    id: str
    amount: int = 0

def on_added(event, models):
    current = models.grand.get("all") or Total(id="all")
    models.grand.put(current.model_copy(update={"amount": current.amount + event.data["amount"]}))

micro = Micro(service="stats")
micro.commander.add_model(Model("grand", Total))
micro.commander.add_reducer("Added", on_added)
micro.add_view("grand total", lambda query, models: (models.grand.get("all") or Total(id="all")).amount)
micro.hook("on_start", announce)
micro.start()
"""


async def test_read_your_writes_across_services_in_other_processes(
    spawn, micro_settings: Settings
) -> None:
    spawn(TALLY_SOURCE)
    spawn(STATS_SOURCE)
    async with Micro(micro_settings) as client:
        for amount in range(1, 41):
            written = await client.request("add", {"id": f"t{amount % 3}", "amount": amount})
            total = await client.act("grand total", min_position=written.position)
            assert total == sum(range(1, amount + 1))


async def test_a_key_retried_on_two_processes_is_stored_once(
    spawn, micro_settings: Settings, events: EventStore
) -> None:
    spawn(TALLY_SOURCE)
    spawn(TALLY_SOURCE)
    async with Micro(micro_settings) as client:
        replies = await asyncio.gather(
            *(
                client.request("add", {"id": "a", "amount": 600}, idempotency_key="once")
                for _ in range(20)
            )
        )
        sequential = [
            await client.request("add", {"id": "a", "amount": 600}, idempotency_key="once")
            for _ in range(10)
        ]
    assert {reply.position for reply in replies + sequential} == {1}
    assert {reply.value["total"] for reply in replies + sequential} == {600}
    assert len(await all_events(events)) == 1


async def test_an_event_handler_group_resumes_after_a_process_restart(
    spawn, micro_settings: Settings, events: EventStore, tmp_path: Path
) -> None:
    handled = tmp_path / "handled.txt"
    handled.touch()

    def positions() -> list[int]:
        return [int(line) for line in handled.read_text().split()]

    first = spawn(TALLY_SOURCE, HANDLED_FILE=str(handled))
    async with Micro(micro_settings) as client:
        for _ in range(5):
            await client.act("add", {"id": "a", "amount": 1})

        async def checkpointed() -> bool:
            health = await client.act("tally health")
            return bool(health["event_handlers"]["audit"]["handled"] == 5)

        await until(checkpointed, 10, "the group to store its checkpoint")
        first.stop()  # a graceful stop: the checkpoint is stored
        await fill(events, "tally-a", 3)
        spawn(TALLY_SOURCE, HANDLED_FILE=str(handled))
        await until(lambda: len(positions()) >= 8, 10)
        await client.act("add", {"id": "a", "amount": 1})
        await until(lambda: len(positions()) >= 9, 10)
    assert positions() == list(range(1, 10))
