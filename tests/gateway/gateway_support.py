"""Helpers shared by the gateway tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


async def wait_until(
    condition: Callable[[], Any], timeout: float = 5.0, what: str = "condition"
) -> None:
    """Poll ``condition`` (sync or async) until true, failing after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        await asyncio.sleep(0.02)
