"""The soak: a long bank load on a 3-node R3 cluster under a seeded random schedule of faults.

``MICRO_SOAK_COMMANDS`` commands (1,000 by default) from callers that retry retryable errors
with the same key, through three bank instances, while faults follow one another: kill -9
of an instance (restarted), of a node or of the stream leader (restarted), SIGSTOP of an
instance or a node, and, where the partition rig runs (root), partitions: the stream
leader cut off, an instance cut off, a pair of nodes cut. One fault at a time; the next
comes once the load succeeds again and every replica caught up.

The seed is printed (``MICRO_SOAK_SEED`` replays a run); the checks are the fault suite's,
plus memory: each instance's resident memory at the end may exceed what it was once
serving by at most ``RSS_GROWTH_LIMIT``.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from micro import MicroError
from micro.testing.cluster import NatsCluster
from micro.testing.partition import PartitionCluster, partition_unavailable
from tests.faults.support import (
    FIGURES,
    BankInstance,
    Driver,
    PartitionScenario,
    Scenario,
    replicas_caught_up,
    stream_of,
    until,
)

SOAK_COMMANDS = int(os.environ.get("MICRO_SOAK_COMMANDS", "1000"))
SOAK_SEED = int(os.environ.get("MICRO_SOAK_SEED", "2026"))
BUDGET = 60 + 0.06 * SOAK_COMMANDS
"""Seconds the load may take: about four times what it takes with no fault at all."""
RSS_GROWTH_LIMIT = 128 * 1024 * 1024
"""Bytes an instance's resident memory may grow over the run: its models of a 10,000
command run, the allocator's slack and the fault's backlogs, not a leak per command."""

pytestmark = [
    pytest.mark.soak,
    pytest.mark.timeout(BUDGET + 1200),  # the load, then the transfer process's backlog
    # nats-py 2.16 drops, unclosed, the socket of a reconnect whose handshake fails after the
    # TCP connect succeeded: the rig's loopback forwarders accept for a node that is down
    # (as a TCP load balancer does), so each node kill leaves a few for the collector.
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <function StreamWriter.__del__"
        ":pytest.PytestUnraisableExceptionWarning"
    ),
]


@pytest.fixture
def soak_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """Nodes in namespaces where the partition rig runs, else on loopback (no partitions)."""
    if partition_unavailable() is None:
        with PartitionCluster(tmp_path / "cluster") as nodes:
            yield nodes
    else:
        with NatsCluster(tmp_path / "cluster") as nodes:
            yield nodes


class Chaos:
    """The seeded schedule: picks a fault, injects it, waits for the bank to recover."""

    def __init__(self, cluster: NatsCluster, run: Scenario, rng: random.Random) -> None:
        self.cluster = cluster
        self.run = run
        self.rng = rng
        self.stream = stream_of(run.namespace)
        self.injected: list[str] = []
        self.rss_at_start: dict[int, tuple[str, int]] = {}
        """pid -> (instance, resident bytes once it served)."""
        self.faults = [
            self.kill_instance,
            self.kill_node,
            self.kill_leader,
            self.freeze_instance,
            self.freeze_node,
        ]
        if isinstance(cluster, PartitionCluster):
            self.faults += [self.cut_leader, self.cut_instance, self.cut_pair]

    @property
    def driver(self) -> Driver:
        assert self.run.driver is not None
        return self.run.driver

    def measure(self, bank: BankInstance) -> None:
        assert bank.process is not None
        self.rss_at_start[bank.process.pid] = (bank.name, bank.rss())

    async def __call__(self, run: Scenario) -> None:
        for bank in run.banks:
            self.measure(bank)
        started = self.driver.now()
        while not self.driver.finished:
            await asyncio.sleep(self.rng.uniform(0.5, 2.0))  # the schedule's own gaps
            if self.driver.finished:
                break
            fault = self.rng.choice(self.faults)
            at = self.driver.now()
            what = await fault()
            self.injected.append(f"{at - started:6.1f} s  {what}")
            print(f"soak fault at {at - started:.1f} s: {what}", flush=True)
            await until(
                lambda at=at: self.driver.finished or self.driver.acked_since(at) >= 20,
                60,
                f"the bank to serve again after {what}",
            )
            await until(
                lambda: replicas_caught_up(self.cluster, self.stream),
                60,
                f"every replica to catch up after {what}",
            )

    def live_bank(self) -> BankInstance:
        return self.rng.choice([bank for bank in self.run.banks if bank.running])

    async def kill_instance(self) -> str:
        bank = self.live_bank()
        bank.kill()
        bank.stop()  # closes its pipe: the replacement takes its place in the list
        await until(
            lambda: self.driver.acked_since(self.driver.now() - 0.5) > 0 or self.driver.finished,
            30,
            "the other instances to serve",
        )
        replacement = await self.run.bank(bank.name).start()
        self.run.banks[self.run.banks.index(bank)] = replacement
        self.measure(replacement)
        return f"kill -9 of instance {bank.name}, restarted"

    async def kill_node(self, name: str | None = None) -> str:
        node = self.cluster.node(name) if name else self.rng.choice(self.cluster.nodes)
        node.kill()
        await asyncio.sleep(self.rng.uniform(0.5, 3.0))  # the outage's length
        await asyncio.to_thread(node.start)
        return f"kill -9 of node {node.server_name}, down until restarted"

    async def kill_leader(self) -> str:
        leader = await self.cluster.stream_leader(self.stream)
        await self.kill_node(leader)
        return f"kill -9 of the stream leader {leader}, restarted"

    async def freeze_instance(self) -> str:
        bank = self.live_bank()
        seconds = self.rng.uniform(1.0, 5.0)
        bank.pause()
        try:
            await asyncio.sleep(seconds)  # the freeze itself
        finally:
            bank.resume()
        return f"SIGSTOP of instance {bank.name} for {seconds:.1f} s"

    async def freeze_node(self) -> str:
        node = self.rng.choice(self.cluster.nodes)
        seconds = self.rng.uniform(1.0, 5.0)
        node.pause()
        try:
            await asyncio.sleep(seconds)  # the freeze itself
        finally:
            node.resume()
        return f"SIGSTOP of node {node.server_name} for {seconds:.1f} s"

    @property
    def network(self) -> PartitionCluster:
        assert isinstance(self.cluster, PartitionCluster)
        return self.cluster

    async def node_of(self, bank: BankInstance) -> str:
        try:
            address = await self.driver.client.act(f"bank node on {bank.name}", timeout=2)
        except MicroError:
            return "?"
        return next(
            (n.server_name or "" for n in self.cluster.nodes if n.url.endswith(address)), "?"
        )

    async def cut_leader(self) -> str:
        leader = await self.cluster.stream_leader(self.stream)
        others = [n.server_name or "" for n in self.cluster.nodes if n.server_name != leader]
        on_leader = [b.name for b in self.run.banks if await self.node_of(b) == leader]
        seconds = self.rng.uniform(4.0, 10.0)
        self.network.network.split([leader], others)
        try:
            # A fixed time, not "until the majority serves": the instances that use the
            # cut node stay with it (it still answers them), and all of them may.
            await asyncio.sleep(seconds)
        finally:
            self.network.network.heal_all()
        return (
            f"stream leader {leader} cut off from the other nodes for {seconds:.1f} s "
            f"(instances using it: {', '.join(on_leader) or 'none'})"
        )

    async def cut_instance(self) -> str:
        bank = self.live_bank()
        # Up to 20 s: past three pings the instance gives its connection up, and what it had
        # sent on it (appends decided before the cut) is lost, never acknowledged; shorter
        # cuts let TCP deliver those appends after the heal.
        seconds = self.rng.uniform(2.0, 20.0)
        self.network.network.isolate(bank.name)
        try:
            await asyncio.sleep(seconds)  # the outage itself
        finally:
            self.network.network.heal_all()
        return f"instance {bank.name} cut off from every node for {seconds:.1f} s"

    async def cut_pair(self) -> str:
        first, second = self.rng.sample([n.server_name or "" for n in self.cluster.nodes], 2)
        seconds = self.rng.uniform(2.0, 6.0)
        self.network.network.cut(first, second)
        try:
            await asyncio.sleep(seconds)  # the outage itself
        finally:
            self.network.network.heal_all()
        return f"nodes {first} and {second} cut apart for {seconds:.1f} s"

    def growth(self) -> dict[str, int]:
        """Resident bytes each instance still running gained since it first served."""
        grown = {}
        for bank in self.run.banks:
            if bank.running and bank.process is not None:
                name, start = self.rss_at_start[bank.process.pid]
                grown[name] = bank.rss() - start
        return grown


async def test_a_seeded_random_schedule_of_faults_loses_and_repeats_nothing(
    soak_cluster: NatsCluster, tmp_path: Path, scenarios: list[Scenario]
) -> None:
    print(f"soak: {SOAK_COMMANDS} commands, seed {SOAK_SEED} (MICRO_SOAK_SEED replays it)")
    name = f"soak: {SOAK_COMMANDS} commands, seed {SOAK_SEED}"
    options = {"instances": 3, "commands": SOAK_COMMANDS, "seed": SOAK_SEED, "budget": BUDGET}
    if isinstance(soak_cluster, PartitionCluster):
        run: Scenario = PartitionScenario(
            name, "", "soak", tmp_path, cluster=soak_cluster, **options
        )
    else:
        run = Scenario(name, soak_cluster.urls, "soak", tmp_path, replicas=3, **options)
    scenarios.append(run)
    chaos = Chaos(soak_cluster, run, random.Random(SOAK_SEED))

    figures = await run.run(chaos)
    growth = chaos.growth()
    print("soak faults:\n" + "\n".join(chaos.injected))
    print("soak memory growth (MiB):", {k: round(v / 2**20, 1) for k, v in growth.items()})
    FIGURES[-1].scenario += f" ({len(chaos.injected)} faults)"
    assert figures.lost == figures.duplicated == 0
    assert chaos.injected, "the load ended before any fault"
    over = {name: grown for name, grown in growth.items() if grown > RSS_GROWTH_LIMIT}
    assert not over, f"resident memory grew beyond {RSS_GROWTH_LIMIT} bytes: {over}"
