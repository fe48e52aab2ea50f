"""The JetStream event store beside the raw nats-py shapes, same run.

Measured, for ``store/<loop>`` (micro's ``JetStreamEventStore``, opened with
``open_event_store``) and ``raw/<loop>`` (plain nats-py):

* replay of 100,000 stored events: ``store.read_all()`` to ``RecordedEvent`` versus an
  ordered push consumer (``js.subscribe(..., ordered_consumer=True)``) with ``json.loads``
  of each body, until the last sequence;
* appends one at a time (2,000), each with its expected version, versus ``js.publish`` with
  ``Nats-Expected-Last-Subject-Sequence`` and ``Nats-Msg-Id``;
* appends with 64 in flight (6,400; 64 writers, a stream each), the same two shapes (with
  ``event_store_group_commit`` on, as advised for a server that syncs always, the store
  sends the appends that queue up behind one as a single atomic batch; ``--group-commit``).

The log replayed is written once per round through the store; every system then gets a
fresh nats-server (``sync_interval: always``) on a copy of it and a fresh process running
its event loop (``asyncio.run`` or ``uvloop.run``), the systems taking turns in an order
rotated each round. Figures are medians over the rounds, ratios the medians of the
per-round ratios; beside each, CPU µs per event of the process and of the nats-server.

    python bench/eventstore.py [--events 100000] [--appends 2000] [--rounds 5] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import harness
from harness import Child, Figures, Meter, Ratio, Section

SCRIPT = str(Path(__file__).resolve())
NAMESPACE = "bench"
IN_FLIGHT = 64


def store_event(n: int) -> Any:
    from micro.eventstore import NewEvent

    return NewEvent(
        "Deposited",
        {"account": f"acc-{n % 100}", "amount": n, "note": "benchmark deposit"},
        {"command": "deposit", "trace_id": uuid.uuid4().hex},
    )


def raw_body(n: int) -> bytes:
    # The shape and size of the store's envelope, so both sides move the same bytes.
    return json.dumps(
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
    ).encode()


def open_store(url: str) -> Any:
    from micro import Settings
    from micro.eventstore import open_event_store

    return open_event_store(Settings(nats_url=url, namespace=NAMESPACE, embedded=False))


async def fill(url: str, count: int) -> int:
    store = open_store(url)
    await store.start()
    try:
        batch = 500
        for start in range(0, count, batch):
            size = min(batch, count - start)
            events = [store_event(start + n) for n in range(size)]
            await store.append(f"acc-{start // batch % 100}", events)
        position: int = await store.last_position()
        return position
    finally:
        await store.close()


# -- the child: one system's three phases -------------------------------------------------------


async def phases(
    params: dict[str, Any],
    replay: Any,
    append: Any,
) -> Figures:
    meter = Meter({"server": params["server_pid"]})
    figures: Figures = {}
    meter.start()
    seen = await replay()
    figures |= meter.stop("replay", seen)
    figures["replay"] = seen / figures["replay.seconds"]
    figures["events"] = seen
    for prefix, writers, count in (
        ("seq", 1, params["appends"]),
        ("app64", IN_FLIGHT, params["appends_in_flight"]),
    ):
        per_writer = count // writers

        async def writer(index: int, per_writer: int = per_writer, prefix: str = prefix) -> None:
            stream = f"{prefix}-{index}"
            state: Any = None
            for n in range(per_writer):
                state = await append(stream, n, state)

        meter.start()
        await asyncio.gather(*(writer(index) for index in range(writers)))
        done = per_writer * writers
        figures |= meter.stop(prefix, done)
        figures[prefix] = done / figures[f"{prefix}.seconds"]
    return figures


def store_role(params: dict[str, Any]) -> None:
    from micro.eventstore import NO_STREAM

    async def main() -> None:
        store = open_store(params["url"])
        await store.start()

        async def replay() -> int:
            seen = 0
            async for _ in store.read_all():
                seen += 1
            return seen

        async def append(stream: str, n: int, _state: Any) -> None:
            await store.append(stream, [store_event(n)], n - 1 if n else NO_STREAM)

        figures = await phases(params, replay, append)
        await store.close()
        harness.say("result", figures)

    harness.run_on(params["loop"], main)


def raw_role(params: dict[str, Any]) -> None:
    import nats
    from nats.aio.msg import Msg

    async def main() -> None:
        client = await nats.connect(params["url"])
        js = client.jetstream()

        async def replay() -> int:
            last = (await js.stream_info(f"{NAMESPACE.upper()}_EVENTS")).state.last_seq
            done = asyncio.Event()
            seen = 0

            async def on_message(msg: Msg) -> None:
                nonlocal seen
                json.loads(msg.data)
                seen += 1
                if msg.metadata.sequence.stream >= last:
                    done.set()

            subscription = await js.subscribe(
                f"{NAMESPACE}.ev.>", cb=on_message, ordered_consumer=True
            )
            await done.wait()
            await subscription.unsubscribe()
            return seen

        async def append(stream: str, n: int, last: int | None) -> int:
            ack = await js.publish(
                f"{NAMESPACE}.ev.{stream}",
                raw_body(n),
                headers={
                    "Nats-Msg-Id": str(uuid.uuid4()),
                    "Nats-Expected-Last-Subject-Sequence": str(last or 0),
                },
            )
            return ack.seq

        figures = await phases(params, replay, append)
        await client.close()
        harness.say("result", figures)

    harness.run_on(params["loop"], main)


ROLES = {"store": store_role, "raw": raw_role}


def run_one(args: argparse.Namespace, system: str, source: Path) -> Figures:
    kind, _, loop = system.partition("/")
    with harness.fresh_server(copy_of=source) as server:
        child = Child(
            harness.role_command(
                SCRIPT,
                kind,
                url=server.url,
                loop=loop,
                server_pid=server.pid,
                appends=args.appends,
                appends_in_flight=args.appends_in_flight,
            ),
            harness.group_commit_env(args.group_commit, harness.FSYNC_ALWAYS),
        )
        try:
            figures = child.result(timeout=900)
        finally:
            child.stop()
    if figures["events"] != args.events:
        raise AssertionError(f"{system} replayed {figures['events']} of {args.events} events")
    return figures


def sections(args: argparse.Namespace, loops: list[str]) -> list[Section]:
    names = {"replay": "replay", "seq": "appends one at a time", "app64": "appends in flight"}

    def ratios(key: str, goal: float) -> list[Ratio]:
        pairs: list[tuple[str, str, float | None]] = [
            (f"store/{loop}", f"raw/{loop}", goal) for loop in loops
        ]
        if len(loops) == 2:
            pairs.append(("store/uvloop", "raw/asyncio", None))
        return [Ratio(a, b, key, f"{a} ÷ {b}, {names[key]}", g) for a, b, g in pairs]

    processes = ("client", "server")
    return [
        Section(
            f"replay of {args.events:,} events",
            "replay",
            [("replay", "events/s", ",.0f")],
            processes,
            ratios("replay", 1.0),
        ),
        Section(
            f"appends one at a time ({args.appends:,})",
            "seq",
            [("seq", "appends/s", ",.0f")],
            processes,
            ratios("seq", 0.9),
        ),
        Section(
            f"appends, {IN_FLIGHT} in flight ({args.appends_in_flight:,}), store "
            + harness.group_commit_label(args.group_commit, harness.FSYNC_ALWAYS),
            "app64",
            [("app64", "appends/s", ",.0f")],
            processes,
            ratios("app64", 0.9),
        ),
    ]


def main() -> None:
    if harness.dispatch(ROLES):
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000, help="events replayed")
    parser.add_argument("--appends", type=int, default=2000, help="appends one at a time")
    parser.add_argument("--appends-in-flight", type=int, default=6400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--group-commit",
        default="match",
        choices=("match", "auto", "on", "off"),
        help="the store's event_store_group_commit; match (default): on, as the server "
        "syncs always",
    )
    parser.add_argument("--loops", default="asyncio,uvloop", help="event loops to compare")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round")
    parser.add_argument("--json", action="store_true", help="print every figure as JSON")
    args = parser.parse_args()
    if args.quick:
        args.events, args.appends, args.appends_in_flight, args.rounds = 10_000, 300, 640, 1
    from micro.log import configure_logging

    configure_logging("warning")
    console = harness.console_for(args)
    loops = harness.available_loops(args.loops.split(","))
    systems = [f"{kind}/{loop}" for loop in loops for kind in ("raw", "store")]
    with tempfile.TemporaryDirectory(prefix="micro-bench-") as folder:
        source = Path(folder) / "log"

        def write_log(_round: int) -> None:
            shutil.rmtree(source, ignore_errors=True)
            with harness.fresh_server(harness.FSYNC_DEFAULT) as server:
                written = asyncio.run(fill(server.url, args.events))
                assert written == args.events, written
                server.stop()  # a clean stop, then its files are a consistent copy
                shutil.copytree(server.store_dir, source)

        with harness.progress_bar(console) as progress:
            results = harness.alternate(
                systems,
                args.rounds,
                lambda system, _r: run_one(args, system, source),
                progress,
                "event store",
                before_round=write_log,
            )
    lines = harness.report(
        console,
        sections(args, loops),
        results,
        "CPU µs/op: CPU time over the phase ÷ events (the measuring process, nats-server); "
        "nats-server with sync_interval: always. Goals: appends >= 0.9x raw, replay >= 1.0x.",
    )
    harness.goals(console, lines, "Goals (the store's own)")
    if args.json:
        harness.dump({"eventstore": results}, lines)


if __name__ == "__main__":
    main()
