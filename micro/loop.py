"""The event loop micro runs on: uvloop where it is installed, unless told otherwise.

``MICRO_EVENT_LOOP`` (or ``Settings.event_loop``) is ``auto`` (uvloop when importable on a
POSIX system, else asyncio's own loop), ``uvloop`` (required: an error when missing) or
``asyncio``. It applies where micro owns the loop: ``Micro.start()``, ``micro run`` and the
other CLI commands, the blocking client's thread, and ``micro.run()``. Code that starts its
own loop with ``asyncio.run`` keeps the loop it chose.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar, get_args

from micro.errors import ConfigError

__all__ = ["EventLoopChoice", "loop_factory", "new_event_loop", "run"]

EventLoopChoice = Literal["auto", "asyncio", "uvloop"]
_CHOICES: tuple[str, ...] = get_args(EventLoopChoice)
_T = TypeVar("_T")


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def loop_factory(choice: str | None = None) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the chosen loop; ``None`` means asyncio's default.

    ``choice`` defaults to ``MICRO_EVENT_LOOP``, then ``auto``.
    """
    if choice is None:
        choice = os.environ.get("MICRO_EVENT_LOOP", "auto").strip().lower() or "auto"
    if choice not in _CHOICES:
        raise ConfigError(
            f"MICRO_EVENT_LOOP must be one of {', '.join(_CHOICES)}, not {choice!r}",
            details={"fields": [{"field": "event_loop", "reason": "unknown event loop"}]},
        )
    if choice == "asyncio" or (choice == "auto" and sys.platform == "win32"):
        return None
    factory = _uvloop_factory()
    if factory is None and choice == "uvloop":
        raise ConfigError(
            "MICRO_EVENT_LOOP is uvloop but uvloop is not installed (pip install uvloop)",
            details={"fields": [{"field": "event_loop", "reason": "uvloop not installed"}]},
        )
    return factory


def new_event_loop(choice: str | None = None) -> asyncio.AbstractEventLoop:
    """A new loop of the chosen kind (for a thread of its own)."""
    factory = loop_factory(choice)
    return factory() if factory is not None else asyncio.new_event_loop()


def run(main: Coroutine[Any, Any, _T], *, loop: str | None = None) -> _T:
    """``asyncio.run`` on the chosen loop (uvloop by default where installed)."""
    try:
        factory = loop_factory(loop)
    except BaseException:
        main.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
