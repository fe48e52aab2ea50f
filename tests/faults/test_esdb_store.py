"""Fault injection on EventStoreDB: the bank keeps its events in the esdb store, on the fake
EventStoreDB server running as a process of its own, and that server is killed mid-load.

The fake keeps its log in a file (flushed before each answer), so a restart on the same port
and file is a node that died and came back. Only the protocol fake runs here: what a real
cluster does under the same fault (elections, a follower taking over) it does not show.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from micro.testing import NatsServer
from micro.testing.esdb_fake import FakeEventStoreDBProcess
from tests.faults.support import Scenario

pytestmark = pytest.mark.timeout(180)

SERVER_DOWNTIME = 1.0
"""Seconds the killed EventStoreDB server stays down before it is started again."""


async def test_kill_9_of_the_eventstoredb_server_then_a_restart_on_its_log(
    nats_server: NatsServer, micro_namespace: str, tmp_path: Path, scenarios: list[Scenario]
) -> None:
    with FakeEventStoreDBProcess(tmp_path / "esdb.log") as esdb:
        scenario = Scenario(
            "kill -9 of the EventStoreDB server (fake, esdb store), restart on its log",
            nats_server.url,
            micro_namespace,
            tmp_path,
            esdb_url=esdb.url,
        )
        scenarios.append(scenario)

        async def fault(scenario: Scenario) -> None:
            esdb.kill()
            await asyncio.sleep(SERVER_DOWNTIME)  # a deliberate outage of fixed length
            await asyncio.to_thread(esdb.start)

        figures = await scenario.run(fault)
        scenario.stop_banks()  # before the server they write to goes
    assert figures.lost == figures.duplicated == 0
