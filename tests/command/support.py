"""Helpers for the command-cycle tests: the sample apps, a controllable store, waiting."""

from __future__ import annotations

import asyncio
import runpy
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from micro import ConcurrencyError, Context, Micro, Settings
from micro.eventstore.base import (
    ANY,
    NO_STREAM,
    AppendResult,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
)
from micro.eventstore.memory import MemoryEventStore

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
TALLY = HERE / "apps" / "tally"
BANK = ROOT / "samples" / "bank"


def tally_service(
    settings: Settings,
    store: Any = None,
    *,
    commands: Sequence[str] = ("add", "mark"),
    app_dir: Path = TALLY,
    **overrides: Any,
) -> Micro:
    """The tally test app in this process; ``store=None`` uses the configured store."""
    micro = Micro(settings, service="tally", app_dir=app_dir, **overrides)
    for command in commands:
        micro.commander.add_command(command)
    micro.add_view("tally", view_tally)
    if store is not None:
        micro.commander.store = store
    return micro


def view_tally(query: dict[str, Any], models: Any) -> dict[str, Any]:
    return models.tally.require(query["id"]).model_dump()


def bank_service(store: Any = None) -> Micro:
    """A fresh instance of samples/bank (settings from the environment)."""
    namespace = runpy.run_path(str(BANK / "app.py"), run_name="bank_sample")
    micro: Micro = namespace["micro"]
    if store is not None:
        micro.commander.store = store
    return micro


BANK_ENVIRONMENT = {
    "MICRO_AUTH_SECRET": "a-secret-every-bank-instance-of-a-test-shares-0123456789",
    # test-only password hashing costs (the defaults take ~100 ms a hash)
    "MICRO_AUTH_HASH_TIME_COST": "1",
    "MICRO_AUTH_HASH_MEMORY_KIB": "8",
    "MICRO_AUTH_HASH_PARALLELISM": "1",
    "MICRO_LOG_LEVEL": "warning",
}
PASSWORD = "Correct-Horse-42-battery"


async def customer(client: Micro, login: str = "ann") -> dict[str, Any]:
    """Sign a customer up and log in; the meta that carries the token."""
    meta, _ = await signed_in(client, login)
    return meta


async def signed_in(client: Micro, login: str = "ann") -> tuple[dict[str, Any], int]:
    """Sign a customer up and log in: the meta that carries the token, and the position to
    pass as ``min_position`` so that any instance serving the next call knows the session."""
    signed_up = await client.request(
        "auth signup",
        {
            "name": login.title(),
            "login": login,
            "password": PASSWORD,
            "password_confirmation": PASSWORD,
        },
    )
    logged_in = await client.request(
        "auth login",
        {"login": login, "password": PASSWORD, "device": "test"},
        min_position=signed_up.position,
    )
    assert logged_in.position is not None
    return {"token": logged_in.value["token"]}, logged_in.position


def context(command: str, **fields: Any) -> Context:
    """A request context for running a pipeline directly (no bus in between)."""
    return Context(service="tally", command=command, trace_id="t" * 16, span_id="s" * 16, **fields)


async def run_command(micro: Micro, command: str, payload: Any, **fields: Any) -> Any:
    """Run ``command`` through ``micro``'s pipeline directly: an instance not on the bus."""
    ctx = context(command, **fields)
    pipeline = micro.commander.pipeline
    assert pipeline is not None, "start the commander first"
    return await pipeline.run(micro.commander.rules[command], payload, ctx), ctx.position


class LaggingStore(MemoryEventStore):
    """A memory store that can hold back live delivery, yields like real I/O, and counts.

    ``hold()`` stops subscriptions from delivering (a projector that lags); ``release()``
    lets them go on. Reads yield to the event loop every ``yield_every`` events, so a long
    replay interleaves with requests the way a networked store does.
    """

    def __init__(self, *, yield_every: int = 50) -> None:
        super().__init__()
        self.yield_every = yield_every
        self.appends: list[tuple[str, ExpectedVersion]] = []
        self.conflicts = 0
        self._open = asyncio.Event()
        self._open.set()
        self.blocked_appends: dict[str, asyncio.Event] = {}
        """Appends to these streams wait until their event is set."""
        self.waiting: set[str] = set()
        """Streams with an append waiting in ``blocked_appends``."""
        self.delivered = 0
        """The last position a subscriber took in through a subscription."""

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    async def append(
        self, stream: str, events: Sequence[NewEvent], expected_version: ExpectedVersion = ANY
    ) -> AppendResult:
        await asyncio.sleep(0)  # a real store answers later: others run meanwhile
        gate = self.blocked_appends.get(stream)
        if gate is not None:
            self.waiting.add(stream)
            await gate.wait()
            self.waiting.discard(stream)
        self.appends.append((stream, expected_version))
        try:
            return await super().append(stream, events, expected_version)
        except ConcurrencyError:
            self.conflicts += 1
            raise

    async def read_all(
        self, from_position: int = 0, limit: int | None = None
    ) -> AsyncIterator[RecordedEvent]:
        count = 0
        async for event in super().read_all(from_position, limit):
            count += 1
            if count % self.yield_every == 0:
                await asyncio.sleep(0)
            yield event
            # resumed once the subscriber took the event in and asked for the next one
            self.delivered = max(self.delivered, event.position)

    async def subscribe(self, from_position: int = 0) -> AsyncIterator[RecordedEvent]:
        count = 0
        async for event in super().subscribe(from_position):
            await self._open.wait()
            count += 1
            if count % self.yield_every == 0:
                await asyncio.sleep(0)
            yield event
            # resumed once the subscriber took the event in and asked for the next one
            self.delivered = max(self.delivered, event.position)

    async def events(self) -> list[RecordedEvent]:
        return [event async for event in super().read_all()]


async def fill(store: Any, stream: str, events: list[NewEvent], batch: int = 100) -> None:
    """Append ``events`` to ``stream`` in batches, straight into the store."""
    version = await store.stream_version(stream)
    for start in range(0, len(events), batch):
        result = await store.append(
            stream, events[start : start + batch], NO_STREAM if version is None else version
        )
        version = result.version
