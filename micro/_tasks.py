"""Stopping the background tasks of a component."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["stop_task"]


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and return once it is over, whatever it raised.

    A cancellation can be lost (nats-py turns some into its own errors, and
    ``asyncio.wait_for`` on Python 3.11 may swallow one): cancel until the task is really
    over. What it raised is retrieved, not raised again: a background task that failed has
    logged why already, and stopping must go on.
    """
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    if not task.cancelled():
        task.exception()
