"""Network partitions: a bank on a 3-node R3 cluster loses and repeats nothing across them.

Each node and each bank instance runs in a network namespace of its own (``PartitionCluster``);
a cut sets a pair's link down, so packets vanish silently, as across a failed switch. The
load, the faults' timing and the checks are those of the fault suite (``support``); the
rows are named ``partition: ...`` in the figures table.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from micro import MicroError
from micro.testing.partition import PartitionCluster
from tests.faults.support import (
    ATTEMPT_TIMEOUT,
    FIGURES,
    PartitionScenario,
    Scenario,
    replicas_caught_up,
    stream_of,
    until,
)

pytestmark = [pytest.mark.partition, pytest.mark.timeout(180)]

ISOLATION = 2.5 * ATTEMPT_TIMEOUT
"""Seconds an instance stays cut off: longer than the callers' timeouts, shorter than its
pings' patience. Its connection survives, and TCP delivers what it sent before the cut
(appends decided then) after the heal, long after their callers retried elsewhere."""
FLAP_EVERY = 2.0
FLAP_FOR = 30.0
ACKED_WHILE_CUT = 40
"""Commands acknowledged after a cut before it heals: the side that can go on, goes on."""


def one_node_each(cluster: PartitionCluster) -> dict[str, str]:
    """b1 uses n1 only, b2 n2, b3 n3: whichever node a cut leaves alone, one instance is
    with it. (A NATS client stays with a node that answers, even one cut off from its
    peers: were every instance on the minority's node, nothing could be stored until the
    cut heals, which is what a scenario that waits for the majority must rule out.)"""
    return {f"b{index + 1}": node.url for index, node in enumerate(cluster.nodes)}


def scenario(
    name: str, cluster: PartitionCluster, tmp_path: Path, namespace: str, **options: object
) -> PartitionScenario:
    return PartitionScenario(
        f"partition: {name}",
        "",
        namespace,
        tmp_path,
        instances=3,
        cluster=cluster,
        **{"commands": 300, **options},  # type: ignore[arg-type]
    )


async def test_a_stream_leader_cut_off_from_the_two_other_nodes(
    partition_cluster: PartitionCluster, tmp_path: Path, scenarios: list[Scenario]
) -> None:
    cluster = partition_cluster
    run = scenario(
        "stream leader cut off from both other nodes, healed",
        cluster,
        tmp_path,
        "p1",
        bank_urls=one_node_each(cluster),
    )
    scenarios.append(run)
    stream = stream_of(run.namespace)

    async def fault(run: Scenario) -> None:
        driver = run.driver
        assert driver is not None
        leader = await cluster.stream_leader(stream)
        others = [node.server_name or "" for node in cluster.nodes if node.server_name != leader]
        cut_at = driver.now()
        cluster.network.split([leader], others)
        try:
            await until(
                lambda: driver.acked_since(cut_at) >= ACKED_WHILE_CUT, 40, "the majority to serve"
            )
        finally:
            cluster.network.heal_all()

    figures = await run.run(fault)
    assert figures.lost == figures.duplicated == 0
    await until(lambda: replicas_caught_up(cluster, stream), 30, "the old leader to catch up")


async def test_a_bank_instance_that_reaches_only_the_node_in_the_minority(
    partition_cluster: PartitionCluster, tmp_path: Path, scenarios: list[Scenario]
) -> None:
    cluster = partition_cluster
    run = scenario(
        "b3 reaches only n3, n3 cut off from n1 and n2, healed",
        cluster,
        tmp_path,
        "p2",
        bank_urls=one_node_each(cluster),
    )
    scenarios.append(run)
    stream = stream_of(run.namespace)

    async def fault(run: Scenario) -> None:
        driver = run.driver
        assert driver is not None
        cut_at = driver.now()
        cluster.network.split(["n3", "b3"], ["n1", "n2"])
        try:
            await until(
                lambda: driver.acked_since(cut_at) >= ACKED_WHILE_CUT, 40, "the majority to serve"
            )
        finally:
            cluster.network.heal_all()

    figures = await run.run(fault)
    assert figures.lost == figures.duplicated == 0
    await until(lambda: replicas_caught_up(cluster, stream), 30, "n3 to catch up")


async def test_a_bank_instance_cut_off_from_every_node_with_commands_in_flight(
    partition_cluster: PartitionCluster, tmp_path: Path, scenarios: list[Scenario]
) -> None:
    cluster = partition_cluster
    run = scenario(f"b1 cut off from every node for {ISOLATION:.0f} s", cluster, tmp_path, "p3")
    scenarios.append(run)

    async def fault(run: Scenario) -> None:
        cluster.network.isolate("b1")
        try:
            await asyncio.sleep(ISOLATION)  # the outage itself: a fixed time, not a wait
        finally:
            cluster.network.heal_all()

    figures = await run.run(fault)
    assert figures.lost == figures.duplicated == 0


async def test_a_random_pair_of_nodes_cut_every_two_seconds(
    partition_cluster: PartitionCluster, tmp_path: Path, scenarios: list[Scenario]
) -> None:
    cluster = partition_cluster
    rng = random.Random(20)
    run = scenario(
        f"a random pair of nodes cut every {FLAP_EVERY:.0f} s for {FLAP_FOR:.0f} s",
        cluster,
        tmp_path,
        "p4",
        commands=600,
        concurrency=8,
        pace=0.3,
    )
    scenarios.append(run)
    stream = stream_of(run.namespace)
    names = [node.server_name or "" for node in cluster.nodes]

    async def fault(run: Scenario) -> None:
        driver = run.driver
        assert driver is not None
        end = driver.now() + FLAP_FOR
        try:
            while driver.now() < end:
                cluster.network.heal_all()
                cluster.network.cut(*rng.sample(names, 2))
                await asyncio.sleep(FLAP_EVERY)  # the flapping's rhythm
        finally:
            cluster.network.heal_all()

    figures = await run.run(fault)
    assert figures.lost == figures.duplicated == 0
    await until(lambda: replicas_caught_up(cluster, stream), 30, "every replica to catch up")


CUT_FROM_ITS_NODE = 30.0
"""Seconds an instance cut off from the node it is connected to (the others reachable) may
take to notice and reconnect elsewhere: three pings (``Settings.ping_interval``) and a
reconnect, with room to spare on a loaded machine."""


async def test_a_bank_instance_cut_off_from_its_node_moves_to_another_and_serves(
    partition_cluster: PartitionCluster, tmp_path: Path, scenarios: list[Scenario]
) -> None:
    cluster = partition_cluster
    run = scenario(
        "b1 cut off from the node it uses (the others reachable) until it moves",
        cluster,
        tmp_path,
        "p5",
    )
    scenarios.append(run)
    moved: dict[str, Any] = {}

    async def fault(run: Scenario) -> None:
        driver = run.driver
        assert driver is not None
        before = await driver.client.act("bank node on b1", timeout=5)
        node = next(n.server_name or "" for n in cluster.nodes if n.url.endswith(before))
        cut_at = driver.now()
        cluster.network.cut("b1", node)
        try:

            async def elsewhere() -> bool:
                try:
                    now = await driver.client.act("bank node on b1", timeout=1)
                except MicroError:
                    return False
                moved["to"], moved["after"] = now, driver.now() - cut_at
                return bool(now != before)

            await until(elsewhere, CUT_FROM_ITS_NODE, "b1 to reconnect to another node")
        finally:
            cluster.network.heal_all()

    figures = await run.run(fault)
    print(f"b1 moved to {moved['to']} after {moved['after']:.1f} s")
    FIGURES[-1].scenario += f" (moved after {moved['after']:.0f} s)"
    assert figures.lost == figures.duplicated == 0
