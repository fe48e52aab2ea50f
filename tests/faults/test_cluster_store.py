"""The JetStream store on a 3-node cluster: appends through every node, starts without quorum."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs

from micro.errors import EventStoreUnavailableError
from micro.eventstore import NO_STREAM, AppendResult, JetStreamEventStore, NewEvent
from micro.testing.cluster import NatsCluster
from micro.testing.waiting import wait_until


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


@contextlib.contextmanager
def two_nodes_frozen(cluster: NatsCluster) -> Iterator[None]:
    """Nodes 2 and 3 stopped (SIGSTOP): node 1 alone has no quorum and no meta leader."""
    frozen = cluster.nodes[1:]
    for node in frozen:
        node.pause()
    try:
        yield
    finally:
        for node in frozen:
            node.resume()


async def test_a_store_starting_while_the_cluster_has_no_quorum_waits_for_it(
    cluster: NatsCluster,
) -> None:
    # The node left cannot answer stream requests, as while a cluster is still electing.
    # The store asks again until it can.
    store = JetStreamEventStore(
        url=cluster.nodes[0].url, namespace="patient", replicas=3, timeout=1.0
    )
    starting = None
    try:
        with two_nodes_frozen(cluster), capture_logs() as logs:
            starting = asyncio.create_task(store.start())
            await wait_until(
                lambda: any(log["event"].startswith("JetStream is not answering") for log in logs),
                15,
                "the store to report that it asks again",
            )
            assert not starting.done()
        await asyncio.wait_for(starting, 30)
        result = await store.append("p-1", [NewEvent("Happened", {})], NO_STREAM)
        assert result.position >= 1
    finally:
        if starting is not None:
            starting.cancel()  # a start still waiting when the test failed
        await store.close()


async def test_a_store_that_may_not_wait_fails_at_once_without_quorum(
    cluster: NatsCluster,
) -> None:
    store = JetStreamEventStore(
        url=cluster.nodes[0].url, namespace="hasty", replicas=3, timeout=1.0, start_timeout=0
    )
    with (
        two_nodes_frozen(cluster),
        pytest.raises(EventStoreUnavailableError, match="event store unavailable"),
    ):
        await store.start()
