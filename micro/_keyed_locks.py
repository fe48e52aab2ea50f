"""Locks by key (an event stream's name), kept only while in use."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["KeyedLocks"]


class KeyedLocks:
    """One lock per key, dropped once nobody holds or waits for it.

    ``async with locks.hold(key):`` -- a plain class rather than a generator-based context
    manager or a ``WeakValueDictionary``: every command goes through one or two of these.
    """

    __slots__ = ("locks",)

    def __init__(self) -> None:
        self.locks: dict[str, list[Any]] = {}  # key -> [lock, holders and waiters]

    def hold(self, key: str) -> Held:
        return Held(self.locks, key)


class Held:
    """``async with`` of one key's lock."""

    __slots__ = ("entry", "key", "locks")

    def __init__(self, locks: dict[str, list[Any]], key: str) -> None:
        self.locks = locks
        self.key = key
        self.entry: list[Any] = []

    async def __aenter__(self) -> None:
        entry = self.locks.get(self.key)
        if entry is None:
            entry = self.locks[self.key] = [asyncio.Lock(), 0]
        entry[1] += 1
        self.entry = entry
        try:
            await entry[0].acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self.entry[0].release()
        self._leave()

    def _leave(self) -> None:
        self.entry[1] -= 1
        if self.entry[1] == 0:
            del self.locks[self.key]
