"""The context of one request: trace ids, meta, deadline, caller, and calls that carry them.

A foundation module: the bus fills it in, handlers and logging read it.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from micro._ids import random_hex64

if TYPE_CHECKING:
    from micro.bus.caller import Caller

__all__ = ["Context", "current_context", "new_id"]


def new_id() -> str:
    """A random 64-bit id in hex, as trace and span ids are (no system call per id)."""
    return random_hex64()


@dataclass(slots=True, eq=False)
class Context:
    """What a handler knows about the request it serves.

    A handler receives it when it declares a second parameter (or one annotated
    ``Context``). ``act`` made from inside a handler, through ``ctx.act`` or the service's
    own ``micro.act``, carries the trace id, the meta and the remaining deadline along.
    """

    service: str
    command: str
    trace_id: str
    span_id: str
    parent_span: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    deadline: float | None = None
    """Absolute deadline, epoch seconds; ``None`` when the caller set none."""
    caller: str | None = None
    hops: int = 0
    idempotency_key: str | None = None
    min_position: int | None = None
    user: Any = None
    """The authenticated user, when the auth module is loaded."""
    position: int | None = None
    """Set by a command that appended events: the reply carries it."""
    _caller: Caller | None = field(default=None, repr=False)
    _send: Callable[[Any], Awaitable[None]] | None = field(default=None, repr=False)
    finished: bool = field(default=False, repr=False)
    token: str | None = None
    """Set when the caller's session slid: the reply carries the fresh token."""

    @property
    def remaining(self) -> float | None:
        """Seconds left before the deadline (never negative), or ``None``."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.time())

    async def act(self, name: str, payload: Any = None, **options: Any) -> Any:
        """Call another command as part of this request (trace, meta and deadline carried)."""
        if self._caller is None:
            raise RuntimeError("this context is not attached to a connected Micro")
        return await self._caller.act(name, payload, parent=self, **options)

    async def send(self, message: Any) -> None:
        """Send an intermediate message to a caller reading the reply as a stream.

        A plain ``act`` does not ask for intermediate messages; they are dropped for it.
        """
        if self.finished:
            raise RuntimeError(f"{self.command!r} already replied: send() after the reply")
        if self._send is not None:
            await self._send(message)


current_context: contextvars.ContextVar[Context | None] = contextvars.ContextVar(
    "micro_context", default=None
)
"""The context of the request being served by the running task, if any."""
