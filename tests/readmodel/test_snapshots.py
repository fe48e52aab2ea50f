"""The snapshooter: models plus checkpoint in a JetStream object store; restarts replay the tail."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import orjson
import pytest
import structlog
from pydantic import BaseModel

from micro.command.idempotency import REFUSALS_STREAM, CommandRefused, SeenCommands
from micro.eventstore.base import ANY, NewEvent
from micro.eventstore.memory import MemoryEventStore
from micro.readmodel import AppliedEvent, Model, Models
from micro.readmodel.event import EventTypes
from micro.readmodel.projector import Projector
from micro.readmodel.snapshots import Snapshooter
from micro.testing import NatsServer, wait_until


class Tally(BaseModel):
    id: str
    total: int = 0


class TallyWithLabel(BaseModel):
    id: str
    total: int = 0
    label: str = ""


def on_added(event: AppliedEvent, models: Models) -> None:
    tally = models.tally.get(event.data["id"]) or Tally(id=event.data["id"])
    models.tally.put({"id": tally.id, "total": tally.total + event.data["amount"]})


def projector_of(store: MemoryEventStore, record: type[BaseModel] = Tally) -> Projector:
    return Projector(
        store,
        Models({"tally": Model("tally", record)}),
        {"Added": [on_added]},
        EventTypes(),
        ledger=SeenCommands(),
    )


async def add(store: MemoryEventStore, count: int, *, key: str | None = None) -> None:
    for index in range(count):
        metadata = {"idempotency_key": f"{key}-{index}", "command": "add"} if key else {}
        await store.append(
            f"tally-{index % 7}",
            [NewEvent("Added", {"id": f"t{index % 7}", "amount": index}, metadata)],
            ANY,
        )


@pytest.fixture
async def client(nats_server: NatsServer) -> AsyncIterator[nats.NATS]:
    connection = await nats.connect(nats_server.url)
    yield connection
    await connection.close()


@pytest.fixture
def snapshooter(client: nats.NATS, micro_namespace: str) -> Snapshooter:
    return Snapshooter(client, namespace=micro_namespace, service="tally")


async def started(projector: Projector, snapshooter: Snapshooter) -> Projector:
    await snapshooter.restore(projector)
    await projector.start(timeout=10)
    return projector


async def snapshotted(store: MemoryEventStore, snapshooter: Snapshooter) -> Projector:
    """A projector on ``store`` that caught up and saved a snapshot (then stopped)."""
    projector = await started(projector_of(store), snapshooter)
    await snapshooter.save()
    await projector.stop()
    return projector


async def test_a_restart_loads_the_snapshot_and_replays_only_the_tail(
    client: nats.NATS, micro_namespace: str, snapshooter: Snapshooter
) -> None:
    store = MemoryEventStore()
    await add(store, 120)
    before = await started(projector_of(store), snapshooter)
    assert await snapshooter.save() == 120
    await before.stop()
    await add(store, 9)

    again = Snapshooter(client, namespace=micro_namespace, service="tally")
    after = await started(projector_of(store), again)
    full = await started(
        projector_of(store), Snapshooter(client, namespace=micro_namespace, service="other")
    )
    try:
        assert after.applied == 9
        assert after.position == full.position == 129
        assert after.models.tally.dump() == full.models.tally.dump()
        assert after.versions == full.versions
        assert full.applied == 129
    finally:
        await after.stop()
        await full.stop()


async def test_idempotency_keys_survive_a_snapshot(
    snapshooter: Snapshooter, client, micro_namespace
) -> None:
    store = MemoryEventStore()
    await add(store, 20, key="k")
    before = await snapshotted(store, snapshooter)
    after = await restarted(store, client, micro_namespace)
    assert after.applied == 0
    assert after.ledger == before.ledger
    assert after.ledger["k-3"].position == 4


REFUSAL = {"code": "rule_violation", "message": "not today", "details": {"why": "closed"}}


async def refuse(store: MemoryEventStore, key: str) -> None:
    """The refusal of a keyed command, as the command pipeline stores it."""
    await store.append(
        REFUSALS_STREAM,
        [
            NewEvent(
                CommandRefused.type_name(),
                {"command": "add", "error": REFUSAL},
                {"idempotency_key": key, "command": "add"},
            )
        ],
        ANY,
    )


async def restarted(store: MemoryEventStore, client, namespace: str) -> Projector:
    """A new projector on ``store`` that started from the newest snapshot (then stopped)."""
    projector = await started(
        projector_of(store), Snapshooter(client, namespace=namespace, service="tally")
    )
    await projector.stop()
    return projector


async def test_refusals_survive_a_snapshot(
    snapshooter: Snapshooter, client, micro_namespace
) -> None:
    store = MemoryEventStore()
    await add(store, 5, key="k")
    await refuse(store, "r")
    before = await snapshotted(store, snapshooter)
    after = await restarted(store, client, micro_namespace)
    assert after.applied == 0
    assert after.ledger == before.ledger
    assert after.ledger["r"].refusal == REFUSAL
    assert after.ledger["k-3"].refusal is None


async def format_2(snapshooter: Snapshooter) -> None:
    """Rewrite the newest snapshot as a version that kept no refusals wrote it."""
    objects = await snapshooter._objects()
    (name, *_) = await snapshooter._names()
    snapshot = orjson.loads((await objects.get(name)).data)
    snapshot["format"] = 2
    snapshot["keys"] = [row[:6] for row in snapshot["keys"]]
    await objects.put(name, orjson.dumps(snapshot))


async def test_a_snapshot_of_format_2_still_loads(
    snapshooter: Snapshooter, client, micro_namespace
) -> None:
    store = MemoryEventStore()
    await add(store, 20, key="k")
    before = await snapshotted(store, snapshooter)
    await format_2(snapshooter)
    await refuse(store, "r")
    with structlog.testing.capture_logs() as logs:
        after = await restarted(store, client, micro_namespace)
    assert not [line for line in logs if line["log_level"] == "warning"]
    assert after.applied == 1
    assert after.ledger["k-3"] == before.ledger["k-3"]
    assert after.ledger["r"].refusal == REFUSAL


async def test_a_snapshot_of_format_2_that_saw_a_refusal_is_skipped_for_a_replay(
    snapshooter: Snapshooter, client, micro_namespace
) -> None:
    store = MemoryEventStore()
    await add(store, 20, key="k")
    await refuse(store, "r")
    before = await snapshotted(store, snapshooter)
    await format_2(snapshooter)  # a row for "r" on the refusals stream, but not its refusal
    with structlog.testing.capture_logs() as logs:
        after = await restarted(store, client, micro_namespace)
    (warning,) = [line for line in logs if line["log_level"] == "warning"]
    assert "refused" in warning["reason"]
    assert after.applied == 21
    assert after.ledger == before.ledger


@pytest.mark.parametrize(
    "corruption",
    [b"not json at all", b'{"format": 99}', b"[]", b'{"format": 1, "service": "tally"}'],
)
async def test_a_corrupt_snapshot_is_skipped_with_a_warning_and_all_is_replayed(
    snapshooter: Snapshooter, corruption: bytes
) -> None:
    store = MemoryEventStore()
    await add(store, 30)
    objects = await snapshooter._objects()
    await objects.put(snapshooter._name(30), corruption)
    with structlog.testing.capture_logs() as logs:
        projector = await started(projector_of(store), snapshooter)
    await projector.stop()
    assert projector.applied == 30
    assert [line["event"] for line in logs if line["log_level"] == "warning"] == [
        "snapshot skipped"
    ]


async def test_a_corrupt_newest_snapshot_falls_back_to_an_older_valid_one(
    client, micro_namespace, snapshooter: Snapshooter
) -> None:
    store = MemoryEventStore()
    await add(store, 30)
    await snapshotted(store, snapshooter)
    await add(store, 10)
    objects = await snapshooter._objects()
    await objects.put(
        snapshooter._name(40), b'{"format": 1, "service": "tally", "models": {"tally": []}}'
    )
    with structlog.testing.capture_logs() as logs:
        projector = await started(
            projector_of(store), Snapshooter(client, namespace=micro_namespace, service="tally")
        )
    full = await started(
        projector_of(store), Snapshooter(client, namespace=micro_namespace, service="other")
    )
    await projector.stop()
    await full.stop()
    assert projector.applied == 10
    assert projector.models.tally.dump() == full.models.tally.dump()
    assert any(line["event"] == "snapshot skipped" for line in logs)


async def test_a_snapshot_of_models_of_another_shape_is_ignored(
    client, micro_namespace, snapshooter: Snapshooter
) -> None:
    store = MemoryEventStore()
    await add(store, 25)
    await snapshotted(store, snapshooter)
    with structlog.testing.capture_logs() as logs:
        changed = await started(
            projector_of(store, TallyWithLabel),
            Snapshooter(client, namespace=micro_namespace, service="tally"),
        )
    await changed.stop()
    assert changed.applied == 25  # a full replay into the new shape
    (warning,) = [line for line in logs if line["log_level"] == "warning"]
    assert "changed shape" in warning["reason"]


async def test_only_the_newest_snapshots_are_kept(snapshooter: Snapshooter) -> None:
    store = MemoryEventStore()
    projector = await started(projector_of(store), snapshooter)
    for _ in range(5):
        await add(store, 3)
        await projector.catch_up(5)
        await snapshooter.save()
    await projector.stop()
    assert await snapshooter._names() == [snapshooter._name(p) for p in (15, 12, 9)]


async def test_a_snapshot_is_saved_every_n_events(client, micro_namespace) -> None:
    snapshooter = Snapshooter(
        client, namespace=micro_namespace, service="tally", every_events=50, every_seconds=0.02
    )
    store = MemoryEventStore()
    projector = await started(projector_of(store), snapshooter)
    await snapshooter.start()
    try:
        await add(store, 49)
        await projector.catch_up(5)
        await add(store, 1)
        await wait_until(lambda: snapshooter.saves > 0, 5, "a periodic snapshot saved")
    finally:
        await snapshooter.stop()
        await projector.stop()
    assert snapshooter.saved_position >= 50
    snapshot = orjson.loads(
        (
            await (await snapshooter._objects()).get(snapshooter._name(snapshooter.saved_position))
        ).data
    )
    assert snapshot["position"] == snapshooter.saved_position
    assert set(snapshot["models"]) == {"tally"}
