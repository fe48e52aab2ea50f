"""Fault injection: a bank under load loses and repeats nothing through crashes and hiccups.

Each test runs samples/bank in two subprocesses, drives a few hundred keyed commands from a
client that retries retryable failures with the same key, injects one fault mid-load, and
audits the whole store and every instance's models (see ``support``). All on loopback.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from micro.testing import NatsServer
from micro.testing.cluster import NatsCluster
from tests.faults.support import (
    ATTEMPT_TIMEOUT,
    Scenario,
    replicas_caught_up,
    stream_of,
    until,
)

pytestmark = pytest.mark.timeout(150)

SERVER_DOWNTIME = 1.0
"""Seconds the killed nats-server stays down before it is started again."""
PAUSE = 2.5 * ATTEMPT_TIMEOUT
"""Seconds a node stays frozen (SIGSTOP): longer than the client's timeouts."""


async def test_kill_9_of_one_of_two_bank_instances(
    nats_server: NatsServer, micro_namespace: str, tmp_path: Path, scenarios: list[Scenario]
) -> None:
    scenario = Scenario(
        "kill -9 one of two bank instances", nats_server.url, micro_namespace, tmp_path
    )
    scenarios.append(scenario)

    async def fault(scenario: Scenario) -> None:
        driver = scenario.driver
        assert driver is not None
        killed_at = driver.now()
        scenario.banks[0].kill()
        await until(lambda: driver.acked_since(killed_at) >= 50, 30, "the survivor to serve")
        # The replacement a restart policy would start, catching up while the load goes on.
        scenario.banks.append(await scenario.bank("b3").start())

    figures = await scenario.run(fault)
    assert figures.lost == figures.duplicated == 0


async def test_kill_9_of_the_nats_server_then_a_restart_on_the_same_store(
    own_server: NatsServer, tmp_path: Path, scenarios: list[Scenario]
) -> None:
    scenario = Scenario("kill -9 of the only nats-server, restart", own_server.url, "f2", tmp_path)
    scenarios.append(scenario)

    async def fault(scenario: Scenario) -> None:
        own_server.kill()
        await asyncio.sleep(SERVER_DOWNTIME)  # a deliberate outage of fixed length
        await asyncio.to_thread(own_server.start)

    figures = await scenario.run(fault)
    assert figures.lost == figures.duplicated == 0


async def test_kill_9_of_the_node_leading_the_event_stream(
    cluster: NatsCluster, tmp_path: Path, scenarios: list[Scenario]
) -> None:
    scenario = Scenario(
        "3-node cluster, R3: kill -9 of the stream leader, later back",
        cluster.urls,
        "f3",
        tmp_path,
        replicas=3,
    )
    scenarios.append(scenario)
    stream = stream_of(scenario.namespace)

    async def fault(scenario: Scenario) -> None:
        driver = scenario.driver
        assert driver is not None
        leader = cluster.node(await cluster.stream_leader(stream))
        killed_at = driver.now()
        leader.kill()
        await until(
            lambda: driver.acked_since(killed_at) >= 60, 30, "the two others to take writes"
        )
        await asyncio.to_thread(leader.start)

    figures = await scenario.run(fault)
    assert figures.lost == figures.duplicated == 0
    await until(lambda: replicas_caught_up(cluster, stream), 30, "the old leader to catch up")


async def test_a_node_frozen_longer_than_the_client_timeouts(
    cluster: NatsCluster, tmp_path: Path, scenarios: list[Scenario]
) -> None:
    scenario = Scenario(
        f"3-node cluster, R3: stream leader frozen {PAUSE:.0f} s (SIGSTOP, SIGCONT)",
        cluster.urls,
        "f4",
        tmp_path,
        replicas=3,
    )
    scenarios.append(scenario)
    stream = stream_of(scenario.namespace)

    async def fault(scenario: Scenario) -> None:
        leader = cluster.node(await cluster.stream_leader(stream))
        leader.pause()
        try:
            await asyncio.sleep(PAUSE)  # the hiccup itself: a fixed time, not a wait
        finally:
            leader.resume()

    figures = await scenario.run(fault)
    assert figures.lost == figures.duplicated == 0
    await until(lambda: replicas_caught_up(cluster, stream), 30, "the frozen node to catch up")
