"""A session: calls that see each other's writes, whichever instance serves each.

A command's reply carries the position of the events it stored; the instance that ran it
has applied them, the others a moment later. A session keeps the newest position its
replies carried and sends it as ``min_position`` with every later call, so a login right
after a sign-up, or a balance right after a deposit, is answered by an instance that has
applied them. It can also carry ``meta`` (an auth token) for every call.

Usage::

    session = micro.session()
    await session.act("auth signup", {...})
    login = await session.act("auth login", {...})
    session.meta["token"] = login["token"]
    await session.act("open account", {"id": "a1", "owner": "ann"})
    balance = await session.act("account balance", {"id": "a1"})   # sees the opening
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from micro.bus.caller import Reply, check_min_position

if TYPE_CHECKING:
    from micro.app import Micro

__all__ = ["Session"]


class Session:
    """Calls through one ``Micro`` that read their own writes (see the module docstring)."""

    def __init__(self, micro: Micro, *, meta: dict[str, Any] | None = None) -> None:
        self.micro = micro
        self.meta: dict[str, Any] = dict(meta or {})
        """Sent with every call of the session (merged under a call's own ``meta``)."""
        self.position = 0
        """The newest event position a reply of this session carried (0: none yet)."""

    async def request(
        self,
        name: str,
        payload: Any = None,
        *,
        timeout: float | None = None,
        meta: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        min_position: int | None = None,
    ) -> Reply:
        """Like ``Micro.request``, waiting for what this session has written so far."""
        check_min_position(min_position)
        wanted = max(self.position, min_position or 0)
        reply = await self.micro.request(
            name,
            payload,
            timeout=timeout,
            meta={**self.meta, **meta} if meta else (self.meta or None),
            idempotency_key=idempotency_key,
            min_position=wanted or None,
        )
        if reply.position is not None and reply.position > self.position:
            self.position = reply.position
        if reply.token is not None:
            self.meta["token"] = reply.token  # the session slid: later calls carry the new one
        return reply

    async def act(
        self,
        name: str,
        payload: Any = None,
        *,
        timeout: float | None = None,
        meta: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        min_position: int | None = None,
    ) -> Any:
        """Like ``Micro.act``, waiting for what this session has written so far."""
        reply = await self.request(
            name,
            payload,
            timeout=timeout,
            meta=meta,
            idempotency_key=idempotency_key,
            min_position=min_position,
        )
        return reply.value
