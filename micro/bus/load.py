"""Load shedding: new requests are refused with ``OverloadedError`` while the event loop lags
or the process's memory passes a bound, instead of queueing without limit.

A monitor task sleeps for a short tick and measures how late it woke: that is the loop's
lag. Between ticks, a request arriving while the monitor's wake-up is already overdue by
more than the bound also counts as lag, so a loop blocked by a handler sheds the requests
that queued up behind the block before the monitor even runs again. Shedding stops at the
first tick that wakes on time (and, for memory, once RSS is back under its bound).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

__all__ = ["LoadMonitor"]

_TICK = 0.05
"""Seconds between the monitor's wake-ups; lag is measured at this resolution."""
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_STATM = Path("/proc/self/statm")


def rss_bytes() -> int | None:
    """This process's resident memory, where the platform tells it (Linux)."""
    try:
        return int(_STATM.read_text().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


class LoadMonitor:
    """Watches the running loop's lag and the process's RSS against their bounds.

    ``max_lag`` is in seconds and ``max_rss`` in bytes; 0 turns a bound off.
    """

    def __init__(self, *, max_lag: float = 0.0, max_rss: int = 0) -> None:
        self.max_lag = max_lag
        self.max_rss = max_rss
        self.lag = 0.0
        """The lag the last tick measured, in seconds."""
        self.rss: int | None = None
        self._due = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._due = self._loop.time() + _TICK
        self.rss = rss_bytes() if self.max_rss else None
        self._task = asyncio.create_task(self._watch(), name="micro-load-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _watch(self) -> None:
        assert self._loop is not None
        while True:
            self._due = self._loop.time() + _TICK
            await asyncio.sleep(_TICK)
            self.lag = max(0.0, self._loop.time() - self._due)
            if self.max_rss:
                self.rss = rss_bytes()

    def reason(self) -> str | None:
        """Why new requests are shed right now, or ``None`` when they are not."""
        if self.max_lag and self._loop is not None:
            lag = max(self.lag, self._loop.time() - self._due)
            if lag > self.max_lag:
                return f"the event loop lags {lag:.3f}s (bound {self.max_lag:g}s)"
        if self.max_rss and self.rss is not None and self.rss > self.max_rss:
            return f"resident memory is {self.rss // 2**20} MiB (bound {self.max_rss // 2**20} MiB)"
        return None

    def status(self) -> dict[str, Any]:
        """What health reports: whether requests are shed, why, and the measures."""
        reason = self.reason()
        return {
            "shedding": reason is not None,
            "reason": reason,
            "loop_lag_s": round(self.lag, 4),
            "rss_mib": None if self.rss is None else self.rss // 2**20,
        }
