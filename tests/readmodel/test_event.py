"""Typed events, their stored names and schema versions, and upcasters."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from micro import ConfigError
from micro.readmodel import AppliedEvent, Event, upcaster
from micro.readmodel.event import EventTypes


class Shipped(Event):
    schema_version = 3
    order: str
    carrier: str
    tracking: str


@upcaster("Shipped", from_version=1)
def _add_carrier(data: dict) -> dict:
    return {**data, "carrier": "post"}


@upcaster("Shipped", from_version=2)
def _add_tracking(data: dict) -> dict:
    return {**data, "tracking": data.get("carrier", "") + "-unknown"}


def test_old_shapes_are_upcast_step_by_step_to_the_current_one() -> None:
    types = EventTypes()
    types.add(Shipped)
    assert types.decode("Shipped", {"order": "o1"}, {}) == Shipped(
        order="o1", carrier="post", tracking="post-unknown"
    )
    assert types.decode("Shipped", {"order": "o1", "carrier": "ups"}, {"schema_version": 2}) == (
        Shipped(order="o1", carrier="ups", tracking="ups-unknown")
    )
    current = {"order": "o1", "carrier": "ups", "tracking": "1Z"}
    assert types.decode("Shipped", current, {"schema_version": 3}) == Shipped(**current)


def test_a_missing_upcaster_is_a_config_error_naming_the_gap() -> None:
    class Billed(Event):
        schema_version = 2
        amount: int

    types = EventTypes()
    types.add(Billed)
    with pytest.raises(ConfigError, match="no upcaster for Billed from version 1"):
        types.decode("Billed", {"amount": 1}, {})


def test_two_upcasters_for_one_step_are_refused() -> None:
    with pytest.raises(ConfigError, match="two upcasters for Shipped version 1"):
        upcaster("Shipped", from_version=1)(lambda data: data)


def test_events_are_frozen_and_strict() -> None:
    event = Shipped(order="o", carrier="c", tracking="t")
    with pytest.raises(ValidationError):
        event.order = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        Shipped(order="o", carrier="c", tracking="t", extra=1)  # type: ignore[call-arg]


def test_unknown_types_decode_to_their_raw_data() -> None:
    assert EventTypes().decode("Unknown", {"x": 1}, {}) == {"x": 1}


def test_two_different_classes_with_one_name_are_refused() -> None:
    types = EventTypes()
    types.add(Shipped)
    same_shape = type("Shipped", (Event,), {"__annotations__": Shipped.__annotations__})
    types.add(same_shape)  # the same event declared in two sheets is fine
    other = type("Shipped", (Event,), {"__annotations__": {"order": int}})
    with pytest.raises(ConfigError, match="two different event classes are named Shipped"):
        types.add(other)


def test_an_applied_event_tells_when_it_was_recorded() -> None:
    event = AppliedEvent("Shipped", {}, "s", 0, 1, {"recorded_at": "2025-01-02T03:04:05Z"})
    assert event.recorded_at == dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
