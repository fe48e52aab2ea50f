"""Stopping background tasks."""

from __future__ import annotations

import asyncio

from micro._tasks import stop_task


async def test_a_task_that_swallows_a_cancellation_is_cancelled_again_until_it_ends() -> None:
    cancelled = 0
    started = asyncio.Event()

    async def stubborn() -> None:
        nonlocal cancelled
        started.set()
        for _ in range(2):
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled += 1  # swallowed, as a library may do

    task = asyncio.create_task(stubborn())
    await started.wait()
    await stop_task(task)
    assert task.done()
    assert cancelled == 2


async def test_what_a_failed_task_raised_does_not_stop_the_stopping() -> None:
    async def failing() -> None:
        raise RuntimeError("already logged")

    task = asyncio.create_task(failing())
    await asyncio.wait({task})
    await stop_task(task)
    await stop_task(None)
    assert isinstance(task.exception(), RuntimeError)
