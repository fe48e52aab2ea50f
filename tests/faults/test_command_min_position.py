"""A command sent with ``min_position`` is decided on models that applied that position.

Two instances of the bank, in this process: the second one's store is a replica that lags
(it receives the first one's events only when the test copies them over), as the models of
an instance lag behind an event another instance just stored.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from micro import Micro, RuleViolation, Settings
from micro.context import Context
from micro.eventstore import ANY, MemoryEventStore, NewEvent

BANK = Path(__file__).resolve().parents[2] / "samples" / "bank"


def bank(settings: Settings, store: MemoryEventStore) -> Micro:
    micro = Micro(settings, service="bank", app_dir=BANK)
    for command in ("open account", "deposit"):
        micro.commander.add_command(command)
    micro.commander.store = store
    return micro


def context(command: str, min_position: int | None = None) -> Context:
    return Context(
        service="bank",
        command=command,
        trace_id="t" * 16,
        span_id="s" * 16,
        deadline=time.time() + 5,
        min_position=min_position,
    )


async def copy_over(source: MemoryEventStore, replica: MemoryEventStore) -> None:
    """Replicate what ``replica`` lacks, in order, so positions stay the same."""
    async for event in source.read_all(await replica.last_position() + 1):
        stored = NewEvent(event.type, event.data, event.metadata, id=event.id)
        await replica.append(event.stream, [stored], ANY)


async def test_a_deposit_right_after_the_account_opened_elsewhere_waits_for_it(
    micro_settings: Settings,
) -> None:
    first_store, lagging_store = MemoryEventStore(), MemoryEventStore()
    async with (
        bank(micro_settings, first_store) as first,
        bank(micro_settings, lagging_store) as lagging,
    ):
        first_pipeline, lagging_pipeline = first.commander.pipeline, lagging.commander.pipeline
        assert first_pipeline is not None
        assert lagging_pipeline is not None
        rules = first.commander.rules
        opened = context("open account")
        await first_pipeline.run(rules["open account"], {"id": "a1", "owner": "ann"}, opened)
        assert opened.position is not None
        deposit = {"id": "a1", "amount": 5}
        # Without the position, the lagging instance decides on what it has: no account.
        with pytest.raises(RuleViolation, match="does not exist"):
            await lagging_pipeline.run(rules["deposit"], deposit, context("deposit"))
        # With it, the command waits until the account has reached its models.
        waiting = asyncio.create_task(
            lagging_pipeline.run(rules["deposit"], deposit, context("deposit", opened.position))
        )
        await copy_over(first_store, lagging_store)
        reply = await asyncio.wait_for(waiting, 5)
    assert reply == {"id": "a1", "balance": 5}
