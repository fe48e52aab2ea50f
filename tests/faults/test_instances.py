"""Several bank instances serving together: a write read back on any instance, under load."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

from micro import Micro
from micro.testing import NatsServer
from tests.faults.support import Scenario, audit, log_in, read_store

WRITERS = 6
WRITES = 40


async def test_read_your_writes_holds_on_every_instance_under_load(
    nats_server: NatsServer, micro_namespace: str, tmp_path: Path, scenarios: list[Scenario]
) -> None:
    scenario = Scenario("three instances", nats_server.url, micro_namespace, tmp_path, instances=3)
    scenarios.append(scenario)
    await scenario.start_banks()
    instances = itertools.cycle(bank.name for bank in scenario.banks)
    reads: list[tuple[str, int, int]] = []
    """(instance, balance read, balance written) of every read after a write."""
    async with Micro(scenario.settings(), request_timeout=10) as client:
        meta, seen = await log_in(client)
        for writer in range(WRITERS):
            opened = await client.request(
                "open account", {"id": f"w{writer}", "owner": "ann"}, meta=meta, min_position=seen
            )
            assert opened.position is not None
            seen = opened.position

        async def write_then_read(writer: int) -> None:
            # One writer per account: after each deposit its balance is known exactly.
            account, total = f"w{writer}", 0
            for number in range(1, WRITES + 1):
                written = await client.request(
                    "deposit",
                    {"id": account, "amount": number},
                    meta=meta,
                    idempotency_key=f"{account}-{number}",
                    min_position=seen,  # the account may be news to the instance serving it
                )
                total += number
                assert written.position is not None
                instance = next(instances)  # the next read goes to another instance
                balance = await client.act(
                    f"account balance on {instance}",
                    {"id": account},
                    min_position=written.position,
                )
                reads.append((instance, balance, total))
                # ...and so does a read through the queue group, whichever instance takes it
                anywhere = await client.act(
                    "account balance", {"id": account}, min_position=written.position
                )
                assert anywhere["balance"] == total

        await asyncio.gather(*(write_then_read(writer) for writer in range(WRITERS)))
        served = {
            record.id: (record.endpoint("deposit") or record.endpoints[0]).stats
            for record in await client.services("bank", stats=True, window=2.0)
        }
        events = await read_store(scenario.url, scenario.namespace, 1)
        replayed = audit(events).replay.models()
        for bank in scenario.banks:
            models = await client.act(
                f"bank models on {bank.name}", min_position=events[-1].position
            )
            assert models == replayed, f"instance {bank.name} differs from a fresh replay"
    assert [read for read in reads if read[1] != read[2]] == []
    assert {instance for instance, _, _ in reads} == {bank.name for bank in scenario.banks}
    assert len(reads) == WRITERS * WRITES
    # the queue group spread the deposits over every instance
    assert len(served) == 3
    assert all(stats is not None and stats.requests > 0 for stats in served.values())
