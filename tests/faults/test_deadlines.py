"""A keyed command is not stored after its caller gave up on it.

The race the fault suite found: a withdrawal's append stalls (an outage), the caller's
attempt times out and its retry, served elsewhere, is refused (the balance is short at that
moment); then the stalled attempt loses its append to newer events, decides again on a
balance that has grown meanwhile, and stores the withdrawal the caller was told was refused.
The stall is played here by micro's memory store with a gate on appends (the real thing,
with nats-server killed mid-load, is ``test_faults``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from micro import Micro, Settings, TimeoutError
from micro.context import Context
from micro.eventstore import ANY, AppendResult, ExpectedVersion, MemoryEventStore, NewEvent

BANK = Path(__file__).resolve().parents[2] / "samples" / "bank"


class StallingStore(MemoryEventStore):
    """Appends wait while the gate is closed, as over a network that stalls."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.stalled = asyncio.Event()

    async def append(
        self, stream: str, events: Sequence[NewEvent], expected_version: ExpectedVersion = ANY
    ) -> AppendResult:
        if not self.gate.is_set():
            self.stalled.set()
            await self.gate.wait()
        return await super().append(stream, events, expected_version)

    async def append_elsewhere(self, stream: str, event: NewEvent) -> None:
        """What another instance appends meanwhile (its network is fine)."""
        await super().append(stream, [event], ANY)


async def test_a_stalled_withdrawal_whose_caller_gave_up_is_not_stored_later(
    micro_settings: Settings,
) -> None:
    store = StallingStore()
    bank = Micro(micro_settings, service="bank", app_dir=BANK)
    for command in ("open account", "deposit", "withdraw"):
        bank.commander.add_command(command)
    bank.commander.store = store
    async with bank:
        pipeline, rules = bank.commander.pipeline, bank.commander.rules
        assert pipeline is not None

        def context(key: str, seconds: float) -> Context:
            return Context(
                service="bank",
                command="withdraw",
                trace_id="t" * 16,
                span_id="s" * 16,
                idempotency_key=key,
                deadline=time.time() + seconds,
            )

        await pipeline.run(rules["open account"], {"id": "a1", "owner": "ann"}, context("o", 5))
        await pipeline.run(rules["deposit"], {"id": "a1", "amount": 50}, context("d", 5))
        store.gate.clear()
        attempt = context("w", 2.0)
        stalled = asyncio.create_task(
            pipeline.run(rules["withdraw"], {"id": "a1", "amount": 40}, attempt)
        )
        await asyncio.wait_for(store.stalled.wait(), 5)
        # Meanwhile, elsewhere: the balance drops (a retry of "w" would be refused now),
        # then grows past what "w" asks.
        await store.append_elsewhere(
            "account-a1", NewEvent("Withdrawn", {"id": "a1", "amount": 30})
        )
        await store.append_elsewhere(
            "account-a1", NewEvent("Deposited", {"id": "a1", "amount": 100})
        )
        assert attempt.deadline is not None
        await asyncio.sleep(attempt.deadline - time.time() + 0.01)  # the caller gives up
        store.gate.set()
        with pytest.raises(TimeoutError, match="nothing was stored"):
            await asyncio.wait_for(stalled, 5)
    keys = [event.metadata.get("idempotency_key") async for event in store.read_all()]
    assert "w" not in keys
