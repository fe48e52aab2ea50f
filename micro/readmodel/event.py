"""Typed events: what rules produce, what reducers receive, and how old shapes are upcast.

An event class is a pydantic model named in the past tense; its class name is the stored
``type`` and ``schema_version`` says which shape it has::

    class Deposited(Event):
        account: str
        amount: int

When a shape changes, bump ``schema_version`` and register an upcaster that turns the old
stored data into the new shape; stored events are never rewritten::

    @upcaster("Deposited", from_version=1)
    def add_currency(data: dict) -> dict:
        return {**data, "currency": "EUR"}
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from micro._models import validate
from micro.errors import ConfigError

__all__ = ["AppliedEvent", "Event", "EventTypes", "upcaster"]

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
_UPCASTERS: dict[tuple[str, int], Upcaster] = {}


class Event(BaseModel):
    """Base class of event types. ``schema_version`` is the current shape's number."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: ClassVar[int] = 1

    @classmethod
    def type_name(cls) -> str:
        return cls.__name__


def upcaster(event_type: str, *, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register a function turning ``event_type`` data of ``from_version`` into the next."""

    def register(fn: Upcaster) -> Upcaster:
        key = (event_type, from_version)
        if key in _UPCASTERS and _UPCASTERS[key] is not fn:
            raise ConfigError(f"two upcasters for {event_type} version {from_version}")
        _UPCASTERS[key] = fn
        return fn

    return register


def upcast(event_type: str, data: dict[str, Any], stored: int, current: int) -> dict[str, Any]:
    """Data of ``stored`` version brought to ``current`` through registered upcasters."""
    version = stored
    while version < current:
        step = _UPCASTERS.get((event_type, version))
        if step is None:
            raise ConfigError(
                f"no upcaster for {event_type} from version {version} (current is {current})"
            )
        data = step(data)
        version += 1
    return data


@dataclass(frozen=True, slots=True)
class AppliedEvent:
    """An event as a reducer sees it: typed data plus where and when it was recorded."""

    type: str
    data: Any
    """The event class instance when its type is known, else the raw dict."""
    stream: str
    version: int
    position: int
    metadata: dict[str, Any]

    @property
    def recorded_at(self) -> dt.datetime:
        """When the event was stored: reducers use this, never the clock."""
        raw = self.metadata.get("recorded_at")
        if isinstance(raw, str):
            return dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        return dt.datetime.fromtimestamp(0, dt.UTC)


class EventTypes:
    """The event classes a service knows, by stored type name."""

    def __init__(self) -> None:
        self._types: dict[str, type[Event]] = {}

    def add(self, cls: type[Event]) -> None:
        if not (isinstance(cls, type) and issubclass(cls, Event)):
            raise ConfigError(f"{cls!r} is not an Event class")
        name = cls.type_name()
        existing = self._types.get(name)
        if existing is not None and existing is not cls:
            # Same name from two sheets: fine when the shapes agree (a shared event).
            if existing.model_json_schema() != cls.model_json_schema():
                raise ConfigError(f"two different event classes are named {name}")
            return
        self._types[name] = cls

    def get(self, name: str) -> type[Event] | None:
        return self._types.get(name)

    def decode(self, name: str, data: dict[str, Any], metadata: dict[str, Any]) -> Any:
        cls = self._types.get(name)
        if cls is None:
            return data
        stored = metadata.get("schema_version", 1)
        if isinstance(stored, int) and stored < cls.schema_version:
            data = upcast(name, data, stored, cls.schema_version)
        return validate(cls, data)
