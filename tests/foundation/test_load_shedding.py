"""Load shedding: while the event loop lags past its bound, new requests are refused with
OverloadedError (retryable) instead of queueing, and serving resumes once the lag drops."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from micro import Micro, OverloadedError, Settings
from micro.bus.load import LoadMonitor
from micro.testing import wait_until


async def test_a_blocked_loop_is_seen_at_once_and_forgotten_at_the_next_tick() -> None:
    monitor = LoadMonitor(max_lag=0.1)
    monitor.start()
    try:
        await wait_until(lambda: monitor.reason() is None, 5, what="a tick on time")
        time.sleep(0.3)  # noqa: ASYNC251 - a handler blocking the loop, on purpose
        reason = monitor.reason()
        assert reason is not None
        assert "event loop lags" in reason
        await wait_until(lambda: monitor.reason() is None, 5, what="the lag to drop")
        assert monitor.lag < 0.1
    finally:
        await monitor.stop()


async def test_memory_past_its_bound_sheds() -> None:
    monitor = LoadMonitor(max_rss=1)  # one byte: every process is past it
    monitor.start()
    try:
        reason = monitor.reason()
        assert reason is not None
        assert "resident memory" in reason
    finally:
        await monitor.stop()


async def test_health_says_why_requests_are_shed(micro_settings: Settings) -> None:
    service = Micro(micro_settings.model_copy(update={"shed_loop_lag": 0.1}), service="slow")
    async with service.add("echo", lambda value: value):
        await wait_until(
            lambda: service.health()["load"]["shedding"] is False, 5, what="a calm loop"
        )
        time.sleep(0.3)  # noqa: ASYNC251 - blocks this test's loop, the service's too
        load = service.health()["load"]
        assert load["shedding"] is True
        assert "event loop lags" in load["reason"]


async def test_requests_behind_a_blocking_handler_are_shed_then_served_again(
    spawn, micro_settings: Settings, tmp_path: Path
) -> None:
    marker = tmp_path / "blocking"
    spawn(
        f"""
        import time
        from pathlib import Path
        micro = Micro(service="slow", shed_loop_lag=0.2)
        def block():
            Path({str(marker)!r}).write_text("now")
            time.sleep(1.0)  # blocks the service's loop on purpose
        micro.add("block", block)
        micro.add("echo", lambda value: value)
        micro.hook("on_start", announce)
        micro.start()
        """
    )
    async with Micro(micro_settings, service="caller") as caller:
        blocking = asyncio.create_task(caller.act("block", timeout=10))
        await wait_until(marker.exists, 10, what="the handler to block the loop")
        started = time.monotonic()
        outcomes = await asyncio.gather(
            *(caller.act("echo", n, timeout=10) for n in range(20)), return_exceptions=True
        )
        shed = [outcome for outcome in outcomes if isinstance(outcome, OverloadedError)]
        served = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
        assert len(shed) + len(served) == 20, outcomes  # nothing else went wrong
        assert shed, "the requests queued behind the block were not shed"
        assert all("sheds load: the event loop lags" in error.message for error in shed)
        assert shed[0].retryable
        assert time.monotonic() - started < 8  # answered, not left waiting for the timeout
        await blocking

        async def serves_again() -> bool:
            try:
                return await caller.act("echo", "back") == "back"
            except OverloadedError:
                return False

        await wait_until(serves_again, 10, what="the service to serve again")


def test_the_bounds_reject_negative_values() -> None:
    with pytest.raises(ValueError, match="shed_loop_lag"):
        Settings(shed_loop_lag=-1)
    with pytest.raises(ValueError, match="shed_rss_mib"):
        Settings(shed_rss_mib=-5)
