"""Overload: a burst of ten times what one bank instance absorbs, for ten seconds.

The paced load of the fault suite runs against one bank instance (``max_in_flight`` 100);
a quarter in, the test measures the rate the instance has been serving and then offers ten
times that rate for ``BURST`` seconds, each burst command sent once with a key of its own.
Callers get ``OverloadedError`` (nothing stored) or a timeout (outcome unknown: settled
afterwards by retrying with the same key, as a careful caller would). Then: the service
serves a fresh command again within ``RECOVERY`` seconds, the instance's resident memory
grew by less than ``RSS_GROWTH_LIMIT``, and the fault suite's audit holds over everything
that was sent, burst included.
"""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

import pytest

from micro import MicroError, OverloadedError, RuleViolation
from micro.testing import NatsServer
from tests.faults.support import FIGURES, Command, Scenario, bank_load, until

pytestmark = pytest.mark.timeout(150)

BURST = 10.0
FACTOR = 10
TICK = 0.05
"""Seconds between two waves of the burst."""
RECOVERY = 30.0
RSS_GROWTH_LIMIT = 256 * 1024 * 1024
MAX_IN_FLIGHT = 100


async def test_a_burst_of_ten_times_the_capacity_is_refused_or_timed_out_and_loses_nothing(
    nats_server: NatsServer, micro_namespace: str, tmp_path: Path, scenarios: list[Scenario]
) -> None:
    scenario = Scenario(
        f"overload: {FACTOR}x the capacity for {BURST:.0f} s",
        nats_server.url,
        micro_namespace,
        tmp_path,
        instances=1,
    )
    scenarios.append(scenario)
    outcomes: collections.Counter[str] = collections.Counter()
    measured: dict[str, float] = {}

    def bank(name: str) -> object:
        instance = Scenario.bank(scenario, name)
        instance.env["MICRO_MAX_IN_FLIGHT"] = str(MAX_IN_FLIGHT)
        return instance

    scenario.bank = bank  # type: ignore[method-assign,assignment]

    async def burst(run: Scenario) -> None:
        driver = run.driver
        assert driver is not None
        first = driver.acks[0][1]
        capacity = len(driver.acks) / (driver.now() - first)
        rss_before = run.banks[0].rss()
        accounts = sorted({c.payload.get("id", "") for c in run.load if c.name != "transfer"})
        per_tick = max(1, round(capacity * FACTOR * TICK))
        waves = round(BURST / TICK)
        commands = bank_load(accounts, per_tick * waves, seed=99)
        for command in commands:
            command.key = "burst-" + command.key
            if command.name == "transfer":
                command.payload["id"] = "burst-" + command.payload["id"]

        async def once(command: Command) -> None:
            command.attempts += 1
            try:
                reply = await driver.client.request(
                    command.name,
                    command.payload,
                    meta=driver.meta,
                    idempotency_key=command.key,
                    timeout=2.0,
                    min_position=driver.min_position,
                )
            except OverloadedError:
                command.outcome = "overloaded"  # refused before anything ran: nothing stored
            except RuleViolation:
                command.outcome = "refused"
            except MicroError as error:
                command.outcome = "unknown"
                command.failures.append(type(error).__name__)
            else:
                command.outcome, command.position = "acked", reply.position
            outcomes[command.outcome] += 1

        started = driver.now()
        sending = []
        for wave in range(waves):
            sending += [
                asyncio.create_task(once(c))
                for c in commands[wave * per_tick : (wave + 1) * per_tick]
            ]
            await asyncio.sleep(max(0.0, started + (wave + 1) * TICK - driver.now()))  # the rhythm
        ended = driver.now()
        offered = len(commands) / (ended - started)
        await asyncio.gather(*sending)
        probe = Command("burst-probe", "deposit", {"id": accounts[0], "amount": 1})

        async def probe_served() -> bool:
            await driver.execute(probe)
            return probe.outcome == "acked"

        await until(probe_served, RECOVERY, "a command served again after the burst")
        measured.update(
            capacity=capacity,
            offered=offered,
            recovery=driver.now() - ended,
            rss_growth=run.banks[0].rss() - rss_before,
        )
        # Settle the unknown outcomes: the same key again until a definite answer.
        for command in commands:
            if command.outcome == "unknown":
                await driver.execute(command)
        run.load += [*commands, probe]

    figures = await scenario.run(burst)
    print(f"overload: {dict(outcomes)}; {measured}")
    FIGURES[-1].recovery = measured["recovery"]
    FIGURES[-1].scenario += (
        f" ({measured['offered']:.0f}/s offered to {measured['capacity']:.0f}/s served: "
        f"{outcomes['overloaded']} overloaded, {outcomes['unknown']} timed out)"
    )
    assert figures.lost == figures.duplicated == 0
    assert outcomes["overloaded"] + outcomes["unknown"] > 0, "the burst never overloaded the bank"
    assert measured["rss_growth"] < RSS_GROWTH_LIMIT, measured
