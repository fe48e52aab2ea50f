"""Waiting on a condition with a deadline: the honest alternative to sleep-and-hope."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

__all__ = ["wait_until"]


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]],
    timeout: float = 5.0,
    what: str = "condition",
    *,
    interval: float = 0.01,
) -> None:
    """Poll ``condition`` (sync or async) until it holds.

    Raises ``AssertionError`` naming ``what`` once ``timeout`` seconds have passed, so a
    test fails with a reason instead of hanging.

    Usage::

        await wait_until(lambda: len(received) == 3, what="three events received")
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout}s")
        await asyncio.sleep(interval)
