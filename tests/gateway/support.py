"""Helpers shared by the gateway tests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import httpx

from micro import Micro
from micro.eventstore.memory import MemoryEventStore
from micro.gateway import Gateway


@dataclass
class Stack:
    """A service, a gateway in front of it, an HTTP client, and the gateway's event store."""

    service: Micro
    gateway: Gateway
    client: httpx.AsyncClient
    store: MemoryEventStore
    release: asyncio.Event = field(default_factory=asyncio.Event)
    """Lets the demo service's ``hold`` command return."""
