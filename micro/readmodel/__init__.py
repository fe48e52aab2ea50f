"""Read models: typed events, models on tinydb, and the projector that keeps them current."""

from __future__ import annotations

from micro.readmodel.event import AppliedEvent, Event, upcaster
from micro.readmodel.model import Model, Models

__all__ = ["AppliedEvent", "Event", "Model", "Models", "upcaster"]
