"""Snapshots and rebuilds have spans; the snapshot's age is a metric."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from pydantic import BaseModel
from telemetry_support import Sdk

from micro import telemetry
from micro.eventstore.base import ANY, NewEvent
from micro.eventstore.memory import MemoryEventStore
from micro.readmodel import AppliedEvent, Model, Models
from micro.readmodel.event import EventTypes
from micro.readmodel.projector import Projector
from micro.readmodel.snapshots import Snapshooter
from micro.testing import NatsServer


class Tally(BaseModel):
    id: str
    total: int = 0


def on_added(event: AppliedEvent, models: Models) -> None:
    tally = models.tally.get(event.data["id"]) or Tally(id=event.data["id"])
    models.tally.put({"id": tally.id, "total": tally.total + event.data["amount"]})


def fresh_models() -> Models:
    return Models({"tally": Model("tally", Tally)})


@pytest.fixture
async def client(nats_server: NatsServer) -> AsyncIterator[nats.NATS]:
    connection = await nats.connect(nats_server.url)
    yield connection
    await connection.close()


async def test_snapshot_save_restore_and_rebuild_are_spans_and_the_age_a_metric(
    sdk: Sdk, client: nats.NATS, micro_namespace: str
) -> None:
    telemetry.refresh()  # what Micro.open does: these parts run here without a Micro
    store = MemoryEventStore()
    for index in range(12):
        await store.append("tally-a", [NewEvent("Added", {"id": "a", "amount": index})], ANY)
    projector = Projector(
        store, fresh_models(), {"Added": [on_added]}, EventTypes(), name="snapshotted"
    )
    snapshooter = Snapshooter(client, namespace=micro_namespace, service="tally")
    assert await snapshooter.restore(projector) == 0
    await projector.start(timeout=10)
    try:
        assert await snapshooter.save() == 12
        ages = [
            p.value
            for found, p in sdk.points("micro.snapshot.age")
            if found == {"micro.models": "snapshotted"}
        ]
        assert len(ages) == 1
        assert 0 <= ages[0] < 60
        assert await projector.rebuild(["tally"], fresh_models()) == 12
    finally:
        await projector.stop()
    (restored,) = sdk.named("snapshot restore")
    (saved,) = sdk.named("snapshot save")
    (rebuilt,) = sdk.named("rebuild")
    assert restored.attributes is not None
    assert restored.attributes["micro.position"] == 0
    assert saved.attributes is not None
    assert saved.attributes["micro.position"] == 12
    assert rebuilt.attributes is not None
    assert rebuilt.attributes["micro.models"] == "tally"
