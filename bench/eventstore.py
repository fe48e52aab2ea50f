"""Benchmark: JetStreamEventStore against raw nats-py on the same server, in the same run.

Starts its own nats-server (loopback, JetStream with ``sync_interval: always``) in a temporary
directory and measures:

* appends, one at a time and 64 in flight: the store versus raw ``js.publish`` with the
  ``Nats-Expected-Last-Subject-Sequence`` and ``Nats-Msg-Id`` headers (in flight, the store
  sends the appends that queue up behind one as a single atomic batch);
* replay of 100,000 events: ``read_all`` and ``subscribe`` versus a raw nats-py ordered
  consumer (receiving only, and receiving plus ``orjson.loads`` of each body), and the
  store's replay with other pull batch sizes.

Each figure is the median of a few rounds. Goals: appends >= 0.9x raw, replay >= 1.0x raw.

    .venv/bin/python bench/eventstore.py [--events 100000] [--appends 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import nats
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from micro._nats_server import NatsServer
from micro.eventstore.base import NO_STREAM, NewEvent, RecordedEvent
from micro.eventstore.jetstream import JetStreamEventStore
from micro.eventstore.jetstream import _puller as puller_module

console = Console()
if not console.is_terminal:
    console = Console(width=140)  # a piped table stays one line per measure
IN_FLIGHT = 64


@dataclass
class Measure:
    name: str
    run: Callable[[], Awaitable[int]]
    baseline: str | None = None
    goal: float | None = None


@dataclass
class Row:
    name: str
    count: int
    seconds: float
    cpu_seconds: float
    baseline: str | None = None
    goal: float | None = None

    @property
    def rate(self) -> float:
        return self.count / self.seconds


def _event(n: int) -> NewEvent:
    return NewEvent(
        "Deposited",
        {"account": f"acc-{n % 100}", "amount": n, "note": "benchmark deposit"},
        {"command": "deposit", "trace_id": uuid.uuid4().hex},
    )


def _raw_body(n: int) -> bytes:
    # The same shape and size as the store's envelope, so both sides move the same bytes.
    return orjson.dumps(
        {
            "id": str(uuid.uuid4()),
            "type": "Deposited",
            "version": n,
            "data": {"account": f"acc-{n % 100}", "amount": n, "note": "benchmark deposit"},
            "metadata": {
                "command": "deposit",
                "trace_id": uuid.uuid4().hex,
                "recorded_at": "2026-01-01T00:00:00.000000+00:00",
            },
        }
    )


_tags = itertools.count()


def _tag(prefix: str) -> str:
    """A fresh stream name prefix, so every round appends to new streams."""
    return f"{prefix}{next(_tags)}"


# -- appends ---------------------------------------------------------------------------------


async def store_appends(store: JetStreamEventStore, count: int, writers: int) -> int:
    per_writer = count // writers
    tag = _tag("s")

    async def writer(index: int) -> None:
        stream = f"{tag}-{index}"
        for n in range(per_writer):
            await store.append(stream, [_event(n)], expected_version=n - 1 if n else NO_STREAM)

    await asyncio.gather(*(writer(index) for index in range(writers)))
    return per_writer * writers


async def raw_appends(client: Client, namespace: str, count: int, writers: int) -> int:
    jetstream = client.jetstream()
    per_writer = count // writers
    tag = _tag("r")

    async def writer(index: int) -> None:
        subject = f"{namespace}.ev.{tag}-{index}"
        last = 0
        for n in range(per_writer):
            headers = {
                "Nats-Msg-Id": str(uuid.uuid4()),
                "Nats-Expected-Last-Subject-Sequence": str(last),
            }
            ack = await jetstream.publish(subject, _raw_body(n), headers=headers)
            last = ack.seq

    await asyncio.gather(*(writer(index) for index in range(writers)))
    return per_writer * writers


# -- replay ----------------------------------------------------------------------------------


async def fill(store: JetStreamEventStore, count: int, progress: Progress) -> None:
    task = progress.add_task("filling the store", total=count)
    batch = 500
    for start in range(0, count, batch):
        size = min(batch, count - start)
        await store.append(f"acc-{start // batch % 100}", [_event(start + n) for n in range(size)])
        progress.advance(task, size)
    progress.remove_task(task)


async def store_read_all(store: JetStreamEventStore, count: int) -> int:
    seen = 0
    async for _ in store.read_all(limit=count):
        seen += 1
    return seen


async def store_subscribe(store: JetStreamEventStore, count: int) -> int:
    seen = 0
    subscription = cast(AsyncGenerator[RecordedEvent, None], store.subscribe())
    async for _ in subscription:
        seen += 1
        if seen == count:
            break
    await subscription.aclose()
    return seen


async def raw_ordered(client: Client, namespace: str, count: int, decode: bool) -> int:
    done = asyncio.Event()
    seen = 0

    async def on_message(message: Msg) -> None:
        nonlocal seen
        if decode:
            orjson.loads(message.data)
        seen += 1
        if seen == count:
            done.set()

    subscription = await client.jetstream().subscribe(
        f"{namespace}.ev.>", ordered_consumer=True, cb=on_message
    )
    await done.wait()
    await subscription.unsubscribe()
    return seen


async def raw_direct_get(client: Client, namespace: str, count: int, batch: int = 1000) -> int:
    """Batched direct get (ADR-31), two requests in flight, receiving only."""
    done = asyncio.Event()
    seen = 0
    requested = 0
    inbox = client.new_inbox()
    stream = f"$JS.API.DIRECT.GET.{namespace.upper()}_EVENTS"

    async def request() -> None:
        nonlocal requested
        body = {"seq": requested + 1, "batch": batch, "next_by_subj": f"{namespace}.ev.>"}
        requested += batch
        await client.publish(stream, orjson.dumps(body), reply=inbox)

    async def on_message(message: Msg) -> None:
        nonlocal seen
        if not message.data:  # end of a batch
            if requested < count:
                await request()
            return
        seen += 1
        if seen == count:
            done.set()

    subscription = await client.subscribe(
        inbox, cb=on_message, pending_msgs_limit=-1, pending_bytes_limit=-1
    )
    await request()
    await request()
    await done.wait()
    await subscription.unsubscribe()
    return seen


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="events replayed")
    parser.add_argument("--appends", type=int, default=2000, help="appends per append test")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per figure (median)")
    options = parser.parse_args()
    namespace = "bench"
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as directory:
        server = NatsServer(store_dir=Path(directory)).start()
        client = await nats.connect(server.url, pending_size=64 * 1024 * 1024)
        store = JetStreamEventStore(client, namespace=namespace)
        await store.start()
        try:
            with Progress(console=console, transient=True) as progress:
                rows += await _measure(
                    _appends(store, client, namespace, options), options, progress
                )
                # Replay counts what the append rounds wrote too.
                existing = await store.last_position()
                await fill(store, max(options.events - existing, 0), progress)
                rows += await _measure(
                    _replays(store, client, namespace, options), options, progress
                )
        finally:
            await store.close()
            await client.close()
            server.stop()
    _print(rows, options)


def _appends(
    store: JetStreamEventStore, client: Client, namespace: str, options: argparse.Namespace
) -> list[Measure]:
    count = options.appends
    measures = []
    for writers, label in ((1, "sequential"), (IN_FLIGHT, f"{IN_FLIGHT} in flight")):
        raw = f"raw js.publish, {label}"
        measures += [
            Measure(raw, functools.partial(raw_appends, client, namespace, count, writers)),
            Measure(
                f"store.append, {label}",
                functools.partial(store_appends, store, count, writers),
                raw,
                0.9,
            ),
        ]
    return measures


def _replays(
    store: JetStreamEventStore, client: Client, namespace: str, options: argparse.Namespace
) -> list[Measure]:
    count = options.events
    raw = "raw ordered consumer (receive)"

    def with_pull_batch(batch: int) -> Callable[[], Awaitable[int]]:
        async def run() -> int:
            default, puller_module._PULL_BATCH = puller_module._PULL_BATCH, batch
            try:
                return await store_read_all(store, count)
            finally:
                puller_module._PULL_BATCH = default

        return run

    return [
        Measure(raw, lambda: raw_ordered(client, namespace, count, decode=False)),
        Measure(
            "raw ordered consumer + orjson.loads",
            lambda: raw_ordered(client, namespace, count, decode=True),
            raw,
        ),
        Measure(
            "raw batched direct get (receive)",
            lambda: raw_direct_get(client, namespace, count),
            raw,
        ),
        Measure("store.read_all -> RecordedEvent", lambda: store_read_all(store, count), raw, 1.0),
        Measure(
            "store.subscribe -> RecordedEvent", lambda: store_subscribe(store, count), raw, 1.0
        ),
        Measure("store.read_all, pull batch 1000", with_pull_batch(1000), raw),
        Measure("store.read_all, pull batch 16000", with_pull_batch(16000), raw),
    ]


async def _measure(
    measures: list[Measure], options: argparse.Namespace, progress: Progress
) -> list[Row]:
    """Run the measures round-robin, so drift and noisy neighbours hit all of them alike."""
    samples: dict[str, list[tuple[int, float, float]]] = {m.name: [] for m in measures}
    task = progress.add_task("measuring", total=options.rounds * len(measures))
    for _ in range(options.rounds):
        for measure in measures:
            progress.update(task, description=measure.name)
            wall, cpu = time.perf_counter(), time.process_time()
            count = await measure.run()
            samples[measure.name].append(
                (count, time.perf_counter() - wall, time.process_time() - cpu)
            )
            progress.advance(task)
    progress.remove_task(task)
    return [
        Row(
            measure.name,
            samples[measure.name][0][0],
            statistics.median(seconds for _, seconds, _ in samples[measure.name]),
            statistics.median(cpu for _, _, cpu in samples[measure.name]),
            measure.baseline,
            measure.goal,
        )
        for measure in measures
    ]


def _print(rows: list[Row], options: argparse.Namespace) -> None:
    rates = {row.name: row.rate for row in rows}
    table = Table(
        title=f"JetStreamEventStore vs raw nats-py: median of {options.rounds} interleaved "
        "rounds; nats-server sync_interval always; loopback"
    )
    table.add_column("measure")
    table.add_column("count", justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("per second", justify="right")
    table.add_column("client CPU µs/op", justify="right")
    table.add_column("vs raw", justify="right")
    table.add_column("goal", justify="right")
    for row in rows:
        ratio = None if row.baseline is None else row.rate / rates[row.baseline]
        goal = ""
        if row.goal is not None and ratio is not None:
            goal = f">= {row.goal:.1f}x " + (
                "[green]met[/]" if ratio >= row.goal else "[red]missed[/]"
            )
        table.add_row(
            row.name,
            str(row.count),
            f"{row.seconds:.3f}",
            f"{row.rate:,.0f}",
            f"{row.cpu_seconds / row.count * 1e6:.1f}",
            "" if ratio is None else f"{ratio:.2f}x",
            goal,
        )
    console.print(table)


if __name__ == "__main__":
    asyncio.run(main())
