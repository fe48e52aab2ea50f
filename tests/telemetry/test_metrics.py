"""Metrics through the OpenTelemetry API: exact after a known load, and the lag reaches zero."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from telemetry_support import Sdk

from micro import Micro, Settings, ValidationError, telemetry
from micro.eventstore.base import ANY, NewEvent
from micro.eventstore.memory import MemoryEventStore
from micro.readmodel import AppliedEvent, Models
from micro.readmodel.event import EventTypes
from micro.readmodel.projector import Projector
from micro.telemetry import metrics
from micro.testing import wait_until as until

TALLY = Path(__file__).resolve().parent.parent / "command" / "apps" / "tally"


def total(sdk: Sdk, metric: str, field: str = "value", **attributes: Any) -> float:
    """The sum of ``field`` over the points of ``metric`` whose attributes include these."""
    wanted = {key.replace("_", "."): value for key, value in attributes.items()}
    return sum(
        getattr(point, field)
        for found, point in sdk.points(metric)
        if all(found.get(key) == value for key, value in wanted.items())
    )


async def test_counts_and_histogram_totals_are_exact_after_a_known_load(
    sdk: Sdk, micro_settings: Settings
) -> None:
    service = Micro(micro_settings, service="metered", app_dir=TALLY)
    service.commander.add_command("add")
    before_appends = total(sdk, "micro.eventstore.append.batch_size", "count")
    before_events = total(sdk, "micro.eventstore.append.batch_size", "sum")
    async with service, Micro(micro_settings) as client:
        for amount in range(1, 8):
            await client.act("add", {"id": "a", "amount": amount})
        for _ in range(3):
            with pytest.raises(ValidationError):
                await client.act("add", {"id": "a", "amount": 0})
        command = {"micro_service": "metered", "micro_command": "add"}
        assert total(sdk, "micro.command.requests", **command) == 10
        assert total(sdk, "micro.command.errors", **command, error_type="validation") == 3
        assert total(sdk, "micro.command.errors", **command) == 3
        assert total(sdk, "micro.command.duration", "count", **command) == 10
        assert total(sdk, "micro.command.duration", "sum", **command) > 0
        assert total(sdk, "micro.eventstore.append.batch_size", "count") - before_appends == 7
        assert total(sdk, "micro.eventstore.append.batch_size", "sum") - before_events == 7
        assert total(sdk, "micro.eventstore.append.duration", "count") - before_appends == 7
        await until(
            lambda: (
                total(sdk, "micro.projector.lag", micro_models="metered") == 0
                and len(
                    [
                        p
                        for found, p in sdk.points("micro.projector.lag")
                        if found == {"micro.models": "metered"}
                    ]
                )
                == 1
            ),
            what="the models' lag to be reported as zero",
        )
        caught_up = total(sdk, "micro.projector.last_catch_up", micro_models="metered")
        assert caught_up > 0


async def test_the_lag_gauge_counts_the_events_models_have_not_applied(
    sdk: Sdk, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "HEAD_INTERVAL", 0.05)
    telemetry.refresh()  # what Micro.open does: the projector runs here without a Micro

    def poison(event: AppliedEvent, _models: Models) -> None:
        if event.data["stop"]:
            raise RuntimeError("this reducer stops the models")

    store = MemoryEventStore()
    projector = Projector(store, Models({}), {"Added": [poison]}, EventTypes(), name="behind")
    await projector.start(timeout=10)
    try:
        for stop in (False, True, False, False, False):
            await store.append("s", [NewEvent("Added", {"stop": stop})], ANY)

        def lag() -> float:
            return total(sdk, "micro.projector.lag", micro_models="behind")

        # the models applied one event and stopped at the second: four are not applied
        await until(lambda: lag() == 4, what="the lag gauge to count 4 events")
    finally:
        await projector.stop()
    assert projector.position == 1
