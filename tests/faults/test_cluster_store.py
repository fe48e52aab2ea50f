"""The JetStream store on a 3-node cluster: one event appended at once through every node."""

from __future__ import annotations

import asyncio
import uuid

from micro.eventstore import NO_STREAM, AppendResult, JetStreamEventStore, NewEvent
from micro.testing.cluster import NatsCluster


async def test_an_event_appended_at_once_through_every_node_is_stored_once_for_all(
    cluster: NatsCluster,
) -> None:
    # Two instances serving one retried command append the same event id at the same time;
    # on a clustered stream the later append meets the first while it is being replicated
    # (err 10158, "duplicate message id is in process"): each must get the first's result.
    stores = [
        JetStreamEventStore(url=node.url, namespace="twins", replicas=3) for node in cluster.nodes
    ]
    for store in stores:
        await store.start()
    try:
        for number in range(20):
            event = NewEvent("Happened", {"number": number}, id=uuid.uuid4())
            results = await asyncio.gather(
                *(store.append(f"s-{number}", [event], NO_STREAM) for store in stores * 2)
            )
            assert set(results) == {results[0]}
            assert isinstance(results[0], AppendResult)
        stored = [event async for event in stores[0].read_all()]
    finally:
        for store in stores:
            await store.close()
    assert [event.data["number"] for event in stored] == list(range(20))
