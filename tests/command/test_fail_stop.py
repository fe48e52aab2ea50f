"""A reducer that fails stops the models (fail-stop) instead of skipping the event."""

from __future__ import annotations

import pytest

from micro import Micro, Settings, UnavailableError
from micro.eventstore.base import ANY, NewEvent
from micro.testing import wait_until as until
from tests.command.support import LaggingStore, tally_service


async def test_a_failing_reducer_stops_the_models_and_says_why(
    micro_settings: Settings, store: LaggingStore
) -> None:
    service = tally_service(micro_settings, store, commands=("add", "poison"))
    async with service as tally, Micro(micro_settings) as client:
        await client.act("add", {"id": "a", "amount": 5})
        with pytest.raises(UnavailableError) as poisoned:
            await client.act("poison", {"id": "a"})
        health = tally.health()["models"]
        with pytest.raises(UnavailableError) as command:
            await client.act("add", {"id": "a", "amount": 1})
        with pytest.raises(UnavailableError) as view:
            await client.act("tally", {"id": "a"})
        models = tally.commander.projector.models
        # untouched: as they were before the failing event, none of its half-done changes
        assert models.tally.require("a").total == 5
        assert "poisoned" not in models.tally
    assert health["status"] == "failed"
    assert "reducer for Poisoned failed at position 2" in health["reason"]
    assert "ZeroDivisionError: cannot apply poison to a" in health["reason"]
    assert health["position"] == 1
    for raised in (poisoned, command, view):
        assert "stopped" in str(raised.value)
        assert raised.value.retryable is False
    # the poison was stored (the store is the truth); nothing after it was
    assert [event.type for event in await store.events()] == ["Added", "Poisoned"]


async def test_events_after_the_failure_are_not_applied(
    micro_settings: Settings, store: LaggingStore
) -> None:
    service = tally_service(micro_settings, store, commands=("add", "poison"))
    async with service as tally, Micro(micro_settings) as client:
        with pytest.raises(UnavailableError):
            await client.act("poison", {"id": "nobody"})
        later = await store.append("tally-b", [NewEvent("Added", {"id": "b", "amount": 1})], ANY)
        projector = tally.commander.projector
        # handed in directly too, as the command that appended it would: still refused
        projector.apply_appended(later.events)
        assert not projector.apply(later.events[0])
        assert projector.position == 0
        assert "b" not in projector.models.tally


async def test_a_stored_event_that_fails_its_schema_stops_the_models(
    micro_settings: Settings, store: LaggingStore
) -> None:
    await store.append("tally-a", [NewEvent("Added", {"id": "a", "amount": 2})], ANY)
    await store.append("tally-a", [NewEvent("Added", {"id": "a", "amount": "lots"})], ANY)
    service = tally_service(micro_settings, store)
    tally = service.commander
    with pytest.raises(UnavailableError, match="Added failed at position 2"):
        await service.open()  # never serves wrong models
    assert tally.health()["status"] == "failed"
    assert "amount" in tally.health()["reason"]
    assert tally.models.tally.require("a").total == 2


async def test_health_reports_ok_with_the_position_while_all_is_well(
    micro_settings: Settings, store: LaggingStore
) -> None:
    async with tally_service(micro_settings, store) as tally, Micro(micro_settings) as client:
        assert tally.health()["models"] == {
            "status": "ok",
            "position": 0,
            "applied": 0,
            "reason": None,
        }
        await client.act("add", {"id": "a", "amount": 2})
        await until(lambda: tally.health()["models"]["applied"] == 1)
        assert tally.health()["models"]["position"] == 1
        assert tally.health()["connected"] is True
