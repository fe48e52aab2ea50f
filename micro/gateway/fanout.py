"""Fan-out routes: one HTTP route that calls several commands, across services, at once,
and answers with each one's outcome.

``FanOut("GET", "/overview", {"bank": "accounts", "auth": "auth whoami"})`` calls both
commands concurrently with the same payload (the query string or body, plus path
parameters) and the caller's token. The reply maps each key to ``{"status": 200,
"result": ...}`` or ``{"status": <the error's HTTP status>, "error": {...}}`` (the error
envelope of any other route). The overall status is 200 when every call succeeded and 207
(Multi-Status) when any failed. Each call has its own deadline, ``timeout`` or the
gateway's request timeout, whichever is shorter, so one slow service cannot hold the others'
answers past their own.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from micro.bus.subjects import check_name
from micro.errors import MicroError
from micro.gateway.routes import Operation, _compile

if TYPE_CHECKING:
    from micro.app import Micro

__all__ = ["FanOut", "call_all"]

_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True, slots=True)
class FanOut:
    """A route calling the commands of ``calls`` (reply key -> command) concurrently."""

    method: str
    path: str
    calls: Mapping[str, str]
    summary: str = ""
    """One line shown in the API docs."""
    timeout: float | None = None
    """Seconds each call may take (capped by the gateway's request timeout)."""
    pattern: re.Pattern[str] = field(init=False, compare=False, repr=False)
    parameters: tuple[str, ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        method = self.method.upper() if isinstance(self.method, str) else self.method
        if method not in _METHODS:
            raise ValueError(
                f"fan-out {self.path!r}: method {self.method!r} is not one of {_METHODS}"
            )
        if not isinstance(self.path, str) or not self.path.startswith("/"):
            raise ValueError(f"fan-out path {self.path!r} must start with '/'")
        if not isinstance(self.calls, Mapping) or not self.calls:
            raise ValueError(f"fan-out {self.path!r} names no commands")
        for key, command in self.calls.items():
            if not isinstance(key, str) or not key:
                raise ValueError(f"fan-out {self.path!r}: reply key {key!r} is not a name")
            check_name(command, f"command of fan-out key {key!r}")
        if self.timeout is not None and (
            isinstance(self.timeout, bool)
            or not isinstance(self.timeout, int | float)
            or self.timeout <= 0
        ):
            raise ValueError(f"fan-out {self.path!r}: timeout must be a positive number of seconds")
        pattern, parameters = _compile(self.path)
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "calls", dict(self.calls))
        object.__setattr__(self, "pattern", pattern)
        object.__setattr__(self, "parameters", parameters)

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """The path parameters when ``method path`` is this route, else ``None``."""
        if method != self.method:
            return None
        matched = self.pattern.match(path)
        return None if matched is None else matched.groupdict()

    def operation(self) -> Operation:
        """The route as the payload decoder and the API docs see it (no schema of its own:
        each service validates its part)."""
        return Operation(
            method=self.method,
            path=self.path,
            command=", ".join(self.calls.values()),
            kind="fan-out",
            service=", ".join(self.calls),
            request_schema=None,
            reply_schema=None,
            description=self.summary,
            parameters=self.parameters,
            generated=False,
            pattern=self.pattern,
        )


async def call_all(
    micro: Micro,
    fan_out: FanOut,
    payload: Any,
    *,
    meta: dict[str, Any] | None,
    min_position: int | None,
    timeout: float,
) -> tuple[int, dict[str, Any], int | None]:
    """Call every command of ``fan_out``: the overall status, the composite reply, and the
    newest event position any reply carried."""
    wait = min(timeout, fan_out.timeout) if fan_out.timeout is not None else timeout

    async def one(command: str) -> tuple[dict[str, Any], int | None]:
        try:
            reply = await micro.request(
                command, payload, timeout=wait, meta=meta, min_position=min_position
            )
        except MicroError as error:
            return {"status": error.status, "error": error.to_wire()["error"]}, None
        return {"status": 200, "result": reply.value}, reply.position

    outcomes = await asyncio.gather(*(one(command) for command in fan_out.calls.values()))
    composite = {key: outcome for key, (outcome, _) in zip(fan_out.calls, outcomes, strict=True)}
    positions = [position for _, position in outcomes if position is not None]
    failed = any(outcome["status"] != 200 for outcome, _ in outcomes)
    return (207 if failed else 200), composite, max(positions, default=None)
