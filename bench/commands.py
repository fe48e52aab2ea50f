"""W2, W3 and restart: the command cycle against hand-written nats-py + JetStream, same run.

W2  ``deposit`` over the bus against 100 accounts: validate, durable append with optimistic
    concurrency, apply to the balance model, reply. Micro (a service process built from
    sheets) versus a raw nats-py service doing the same work by hand: pydantic validation,
    a JetStream publish with ``Nats-Expected-Last-Subject-Sequence``, an in-memory dict
    update, the reply. Sequential p50/p99, then throughput with 64 calls in flight. The raw
    service publishes each event on its own, as a hand-written handler does; micro's store
    groups the appends that meet in time into one atomic batch (one disk sync per group),
    which is where its lead at 64 in flight comes from. Also
    the CPU micro's command cycle takes alone (pipeline, projector, models on the memory
    store, called directly): the part of a command that is micro's own code.
W3  Rebuild the balance model from 100,000 events: ``commander.rebuild()`` versus a raw
    nats-py ordered-consumer replay applying the same dict update.
R1M Restart of a service with 1,000,000 events of history from a snapshot: time until it
    serves (and its first answer shows the events after the snapshot).

Everything runs on loopback against one nats-server started here with ``sync_interval:
always`` (every acknowledged write is on disk). Run: ``python bench/commands.py``;
``--quick`` for a smaller run, ``--parts W2,W3`` or ``--skip-restart`` to leave out the
1M-event part (writing that history takes about a minute), ``--profile FILE`` to write a
cProfile of this process (W3's replay runs here; W2's services run in their own
processes, so W2 also reports each service's CPU time per call).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import orjson
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from micro import Context, Micro, Settings
from micro.eventstore import ANY, NO_STREAM, NewEvent, open_event_store
from micro.log import configure_logging
from micro.readmodel.snapshots import Snapshooter
from micro.testing import NatsServer

ROOT = Path(__file__).resolve().parent.parent
ACCOUNTS = 100

SHEETS = {
    "models/account_model.py": """
        from pydantic import BaseModel

        class Account(BaseModel):
            id: str
            balance: int = 0

        record = Account
        """,
    "rules/open_account_rule.py": """
        from pydantic import BaseModel
        from micro import RuleViolation
        from micro.readmodel import Event

        class Request(BaseModel):
            id: str

        class AccountOpened(Event):
            id: str

        def stream(request):
            return f"account-{request.id}"

        def validation(request, models):
            if request.id in models.account:
                raise RuleViolation(f"account {request.id} exists")

        def events(request, models):
            return [AccountOpened(id=request.id)]
        """,
    "reducers/open_account_reducer.py": """
        def opened(event, models):
            models.account.insert({"id": event.data.id})

        reducers = {"AccountOpened": opened}
        """,
    "rules/deposit_rule.py": """
        from pydantic import BaseModel, Field
        from micro import RuleViolation
        from micro.readmodel import Event

        class Request(BaseModel):
            id: str
            amount: int = Field(gt=0, le=1_000_000)

        class Deposited(Event):
            id: str
            amount: int

        def stream(request):
            return f"account-{request.id}"

        def validation(request, models):
            if request.id not in models.account:
                raise RuleViolation(f"account {request.id} does not exist")

        def events(request, models):
            return [Deposited(id=request.id, amount=request.amount)]

        def respond(request, models, events):
            return {"id": request.id, "balance": models.account.require(request.id).balance}
        """,
    "reducers/deposit_reducer.py": """
        def deposited(event, models):
            account = models.account.require(event.data.id)
            models.account.update(account.id, balance=account.balance + event.data.amount)

        reducers = {"Deposited": deposited}
        """,
}

MICRO_SERVICE = """
import os, sys, threading, time
started = time.perf_counter()
from micro import Micro
micro = Micro(nats_url=sys.argv[1], namespace=sys.argv[2], service="bank", app_dir=sys.argv[3],
              log_level="warning")
micro.commander.add_command("open account")
micro.commander.add_command("deposit")
micro.add_view("account balance", lambda query, models: models.account.require(query["id"]).balance)
if os.environ.get("BENCH_SNAPSHOTS"):
    micro.modules.want(["snapshooter"])
async def ready(_micro):
    print("ready", time.perf_counter() - started, flush=True)
    def wait():
        sys.stdin.read()
        micro.stop()
    threading.Thread(target=wait, daemon=True).start()
micro.hook("on_start", ready)
micro.start()
"""

RAW_SERVICE = """
import asyncio, sys, uuid
import nats, orjson
from pydantic import BaseModel, Field, ValidationError

class Request(BaseModel):
    id: str
    amount: int = Field(gt=0, le=1_000_000)

async def main():
    namespace = sys.argv[2]
    client = await nats.connect(sys.argv[1])
    js = client.jetstream()
    stream = namespace.upper() + "_EVENTS"
    await js.add_stream(name=stream, subjects=[namespace + ".ev.>"], storage="file",
                        duplicate_window=120)
    balances = {}   # account -> (balance, last sequence of its subject)
    locks = {}

    async def handle(msg):
        try:
            request = Request.model_validate_json(msg.data)
        except ValidationError as error:
            await msg.respond(orjson.dumps({"error": str(error)}))
            return
        lock = locks.setdefault(request.id, asyncio.Lock())
        async with lock:   # one writer per account, as expected-sequence needs
            if request.id not in balances:
                await msg.respond(orjson.dumps({"error": "no such account"}))
                return
            balance, sequence = balances[request.id]
            body = orjson.dumps({"id": str(uuid.uuid4()), "type": "Deposited",
                                 "data": {"id": request.id, "amount": request.amount}})
            ack = await js.publish(namespace + ".ev.account-" + request.id, body, headers={
                "Nats-Expected-Last-Subject-Sequence": str(sequence),
                "Nats-Msg-Id": str(uuid.uuid4())})
            balance += request.amount
            balances[request.id] = (balance, ack.seq)
        await msg.respond(orjson.dumps({"id": request.id, "balance": balance}))

    async def open_account(msg):
        account = orjson.loads(msg.data)["id"]
        ack = await js.publish(namespace + ".ev.account-" + account,
                               orjson.dumps({"type": "AccountOpened", "data": {"id": account}}),
                               headers={"Nats-Expected-Last-Subject-Sequence": "0"})
        balances[account] = (0, ack.seq)
        await msg.respond(b"{}")

    tasks = set()
    def spawn(handler):
        async def on_message(msg):
            task = asyncio.create_task(handler(msg))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        return on_message

    await client.subscribe(sys.argv[3], queue="raw", cb=spawn(handle))
    await client.subscribe(sys.argv[4], queue="raw", cb=spawn(open_account))
    await client.flush()
    await client.flush()  # nats-py's first PING can overtake the SUBs: the second follows them
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
asyncio.run(main())
"""


def write_sheets(folder: Path) -> Path:
    for name, source in SHEETS.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return folder


def start_process(source: str, *args: str, **env: str) -> tuple[subprocess.Popen[str], float]:
    process = subprocess.Popen(
        [sys.executable, "-c", source, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("ready"):
        process.kill()
        raise RuntimeError(f"service did not start: {line!r}")
    parts = line.split()
    return process, float(parts[1]) if len(parts) > 1 else 0.0


def stop_process(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None
    process.stdin.close()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    call: Callable[[int], Awaitable[Any]],
    sequential: int,
    total: int,
    in_flight: int,
    service_pid: int,
    server_pid: int,
) -> dict[str, float]:
    for number in range(200):
        await call(number)
    latencies = []
    for number in range(sequential):
        started = time.perf_counter()
        await call(number)
        latencies.append(time.perf_counter() - started)
    latencies.sort()
    counter = iter(range(total))

    async def worker() -> None:
        for number in counter:
            await call(number)

    cpu, server_cpu, client_cpu = (
        cpu_seconds(service_pid),
        cpu_seconds(server_pid),
        time.process_time(),
    )
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(service_pid) - cpu
    server_cpu = cpu_seconds(server_pid) - server_cpu
    client_cpu = time.process_time() - client_cpu
    return {
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "throughput": total / elapsed,
        # the service's own CPU per command: what a busy machine cannot blur
        "cpu_ms": cpu / total * 1000,
        "server_cpu_ms": server_cpu / total * 1000,
        "client_cpu_ms": client_cpu / total * 1000,
    }


# -- W2 ----------------------------------------------------------------------------------


async def w2_raw(url: str, args: argparse.Namespace, namespace: str) -> dict[str, float]:
    deposit = f"{namespace}.raw.deposit"
    opening = f"{namespace}.raw.open"
    service, _ = start_process(RAW_SERVICE, url, namespace, deposit, opening)
    client = await nats.connect(url)
    try:
        for account in range(ACCOUNTS):
            await client.request(opening, orjson.dumps({"id": f"a{account}"}), timeout=5)

        async def call(number: int) -> Any:
            payload = {"id": f"a{number % ACCOUNTS}", "amount": 1}
            reply = orjson.loads(
                (await client.request(deposit, orjson.dumps(payload), timeout=10)).data
            )
            assert "balance" in reply, reply
            return reply

        return await measure(
            call, args.sequential, args.total, args.in_flight, service.pid, args.server_pid
        )
    finally:
        await client.close()
        stop_process(service)


async def w2_micro(
    url: str, args: argparse.Namespace, namespace: str, app: Path
) -> dict[str, float]:
    service, _ = start_process(MICRO_SERVICE, url, namespace, str(app))
    micro = Micro(nats_url=url, namespace=namespace, service="caller", log_level="warning")
    await micro.open()
    try:
        for account in range(ACCOUNTS):
            await micro.act("open account", {"id": f"a{account}"})

        async def call(number: int) -> Any:
            reply = await micro.act(
                "deposit", {"id": f"a{number % ACCOUNTS}", "amount": 1}, timeout=10
            )
            assert "balance" in reply, reply
            return reply

        return await measure(
            call, args.sequential, args.total, args.in_flight, service.pid, args.server_pid
        )
    finally:
        await micro.close()
        stop_process(service)


async def pipeline_alone(app: Path, total: int) -> dict[str, float]:
    """The command cycle's own CPU per deposit, without the bus and without a durable append.

    The pipeline, projector and models of the W2 service, on the memory store, called
    directly: what micro spends on a command beyond nats-py, asyncio and JetStream.
    """
    micro = Micro(
        namespace="pipeline",
        service="bank",
        app_dir=app,
        log_level="warning",
        event_store="memory",
    )
    micro.commander.add_command("open account")
    micro.commander.add_command("deposit")
    await micro.commander.start()
    try:
        pipeline, rules = micro.commander.pipeline, micro.commander.rules
        assert pipeline is not None

        def context(command: str) -> Context:
            return Context(service="bank", command=command, trace_id="bench", span_id="bench")

        for account in range(ACCOUNTS):
            await pipeline.run(
                rules["open account"], {"id": f"a{account}"}, context("open account")
            )
        started = time.process_time()
        for number in range(total):
            payload = {"id": f"a{number % ACCOUNTS}", "amount": 1}
            await pipeline.run(rules["deposit"], payload, context("deposit"))
        cpu = time.process_time() - started
    finally:
        await micro.commander.stop()
    return {"us_per_command": cpu / total * 1e6}


# -- W3 ----------------------------------------------------------------------------------


async def fill(
    url: str, namespace: str, deposits_per_account: int, progress: Any = None, task: Any = None
) -> int:
    """Open ACCOUNTS accounts and append deposits in atomic batches; the last position."""
    store = open_event_store(Settings(nats_url=url, namespace=namespace, embedded=False))
    await store.start()
    try:
        for account in range(ACCOUNTS):
            opened = NewEvent("AccountOpened", {"id": f"a{account}"})
            await store.append(f"account-a{account}", [opened], NO_STREAM)
        queue = asyncio.Queue[tuple[int, int]]()
        for account in range(ACCOUNTS):
            left = deposits_per_account
            while left:
                size = min(1000, left)
                queue.put_nowait((account, size))
                left -= size

        async def writer() -> None:
            while not queue.empty():
                account, size = queue.get_nowait()
                deposit = {"id": f"a{account}", "amount": 1}
                await store.append(
                    f"account-a{account}",
                    [NewEvent("Deposited", deposit) for _ in range(size)],
                    ANY,
                )
                if progress is not None:
                    progress.advance(task, size)

        await asyncio.gather(*(writer() for _ in range(32)))
        return await store.last_position()
    finally:
        await store.close()


async def w3_micro(url: str, namespace: str, app: Path) -> dict[str, float]:
    micro = Micro(
        nats_url=url, namespace=namespace, service="bank", app_dir=app, log_level="warning"
    )
    micro.commander.add_command("open account")
    micro.commander.add_command("deposit")
    started = time.perf_counter()
    await micro.commander.start()  # catch-up at start: a full replay too
    catch_up = time.perf_counter() - started
    try:
        started = time.perf_counter()
        applied = await micro.commander.rebuild()
        rebuild = time.perf_counter() - started
        balances = {r.id: r.balance for r in micro.commander.projector.models.account.all()}
    finally:
        await micro.commander.stop()
    return {
        "events": applied,
        "seconds": rebuild,
        "catch_up_seconds": catch_up,
        "checksum": sum(balances.values()),
    }


async def w3_raw(url: str, namespace: str) -> dict[str, float]:
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        stream = f"{namespace.upper()}_EVENTS"
        last = (await js.stream_info(stream)).state.last_seq
        started = time.perf_counter()
        balances: dict[str, int] = {}
        subscription = await js.subscribe(f"{namespace}.ev.>", ordered_consumer=True)
        applied = 0
        async for message in subscription.messages:
            event = orjson.loads(message.data)
            if event["type"] == "Deposited":
                data = event["data"]
                balances[data["id"]] = balances.get(data["id"], 0) + data["amount"]
            elif event["type"] == "AccountOpened":
                balances[event["data"]["id"]] = 0
            applied += 1
            if message.metadata.sequence.stream >= last:
                break
        seconds = time.perf_counter() - started
        await subscription.unsubscribe()
    finally:
        await client.close()
    return {"events": applied, "seconds": seconds, "checksum": sum(balances.values())}


# -- restart from a snapshot -------------------------------------------------------------


async def snapshot_at(url: str, namespace: str, app: Path, deposits_per_account: int) -> int:
    """Save the snapshot a running bank would have saved after the bulk of the history.

    Every bulk event is a deposit of 1, so the state after them is known without replaying
    a million events here; it goes through the real snapshooter, in its real format.
    """
    micro = Micro(
        nats_url=url, namespace=namespace, service="bank", app_dir=app, log_level="warning"
    )
    micro.commander.add_command("open account")
    micro.commander.add_command("deposit")
    commander = micro.commander
    client = await nats.connect(url)
    store = open_event_store(Settings(nats_url=url, namespace=namespace, embedded=False))
    await store.start()
    try:
        from micro.readmodel.projector import Projector

        projector = Projector(
            store, commander.models, commander.reducers, commander.types, name="bank"
        )
        projector.models.account.load(
            [{"id": f"a{n}", "balance": deposits_per_account} for n in range(ACCOUNTS)]
        )
        projector.versions.update({f"account-a{n}": deposits_per_account for n in range(ACCOUNTS)})
        projector.position = await store.last_position()
        snapshooter = Snapshooter(client, namespace=namespace, service="bank")
        snapshooter.projector = projector
        return await snapshooter.save()
    finally:
        await store.close()
        await client.close()


async def restart(url: str, namespace: str, app: Path, expected_balance: int) -> dict[str, float]:
    client = await nats.connect(url)
    micro = Micro(nats_url=url, namespace=namespace, service="caller", log_level="warning")
    await micro.open()
    try:
        started = time.perf_counter()
        service, inside = start_process(
            MICRO_SERVICE, url, namespace, str(app), BENCH_SNAPSHOTS="1"
        )
        balance = await micro.act("account balance", {"id": "a0"})
        serving = time.perf_counter() - started
        assert balance == expected_balance, (balance, expected_balance)
        stop_process(service)
    finally:
        await micro.close()
        await client.close()
    return {"until_serving_s": serving, "inside_process_s": inside}


# -- main --------------------------------------------------------------------------------


def profile_to(path: Path | None, run: Callable[[], Any]) -> Any:
    if path is None:
        return run()
    profiler = cProfile.Profile()
    result = profiler.runcall(run)
    profiler.dump_stats(str(path))
    pstats.Stats(str(path)).sort_stats("cumulative").print_stats(35)
    return result


async def run(args: argparse.Namespace, url: str, app: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=True) as progress:
        if "W2" in args.parts:
            task = progress.add_task("W2 deposit (raw, micro)", total=2 * args.rounds)
            for round_ in range(args.rounds):
                for variant in ("raw", "micro"):
                    namespace = f"w2{variant}{round_}"
                    if variant == "raw":
                        figures = await w2_raw(url, args, namespace)
                    else:
                        figures = await w2_micro(url, args, namespace, app)
                    best = results.setdefault(f"W2 {variant}", figures)
                    for key, value in figures.items():  # noise only ever makes it slower
                        best[key] = (max if key == "throughput" else min)(best[key], value)
                    progress.advance(task)
            alone = await pipeline_alone(app, args.total)
            results["W2 pipeline"] = alone
        if "W3" in args.parts:
            per_account = args.rebuild_events // ACCOUNTS
            task = progress.add_task("W3 writing history", total=per_account * ACCOUNTS)
            await fill(url, "w3", per_account, progress, task)
            task = progress.add_task("W3 replay (raw, micro)", total=2 * args.rounds)
            for _ in range(args.rounds):
                raw = await w3_raw(url, "w3")
                progress.advance(task)
                mine = await w3_micro(url, "w3", app)
                progress.advance(task)
                assert raw["checksum"] == mine["checksum"] == per_account * ACCOUNTS
                for name, figures in (("W3 raw", raw), ("W3 micro", mine)):
                    best = results.setdefault(name, figures)
                    for key in ("seconds", "catch_up_seconds"):
                        if key in figures:
                            best[key] = min(best[key], figures[key])
        if "R1M" in args.parts:
            total = args.restart_events
            bulk = (total - ACCOUNTS - args.tail) // ACCOUNTS
            task = progress.add_task(
                f"R1M writing {total:,} events", total=bulk * ACCOUNTS + args.tail
            )
            started = time.perf_counter()
            await fill(url, "r1m", bulk, progress, task)
            await snapshot_at(url, "r1m", app, bulk)
            store = open_event_store(Settings(nats_url=url, namespace="r1m", embedded=False))
            await store.start()
            tail_each = args.tail // ACCOUNTS
            for account in range(ACCOUNTS):
                deposits = [
                    NewEvent("Deposited", {"id": f"a{account}", "amount": 1})
                    for _ in range(tail_each)
                ]
                await store.append(f"account-a{account}", deposits, ANY)
                progress.advance(task, tail_each)
            history = await store.last_position()
            await store.close()
            writing = time.perf_counter() - started
            task = progress.add_task("R1M restarts", total=args.rounds)
            for _ in range(args.rounds):
                figures = await restart(url, "r1m", app, bulk + tail_each)
                best = results.setdefault(
                    "R1M", {**figures, "events": history, "writing_s": writing}
                )
                for key in ("until_serving_s", "inside_process_s"):
                    best[key] = min(best[key], figures[key])
                progress.advance(task)
    return results


def report(results: dict[str, Any]) -> None:
    console = Console(width=None if sys.stdout.isatty() else 120)
    if "W2 raw" in results:
        table = Table(title="W2 deposit over the bus, 100 accounts (sync_interval: always)")
        for column in (
            "variant",
            "p50 ms",
            "p99 ms",
            "calls/s",
            "service CPU",
            "server CPU",
            "caller CPU",
            "p50 ratio",
            "calls/s ratio",
        ):
            table.add_column(column, justify="right")
        raw = results["W2 raw"]
        for variant in ("W2 raw", "W2 micro"):
            figures = results[variant]
            table.add_row(
                variant,
                f"{figures['p50_ms']:.3f}",
                f"{figures['p99_ms']:.3f}",
                f"{figures['throughput']:.0f}",
                f"{figures['cpu_ms']:.3f}",
                f"{figures['server_cpu_ms']:.3f}",
                f"{figures['client_cpu_ms']:.3f}",
                f"{figures['p50_ms'] / raw['p50_ms']:.2f}x",
                f"{figures['throughput'] / raw['throughput']:.2f}x",
            )
        console.print(table)
        console.print(
            "calls/s with 64 in flight; CPU in ms per call (service, nats-server, caller) "
            "while they ran. goal: micro calls/s >= 1.0x raw"
        )
        if "W2 pipeline" in results:
            console.print(
                "micro's command cycle alone (pipeline, projector, models; memory store, no "
                f"bus): {results['W2 pipeline']['us_per_command']:.0f} us CPU per deposit"
            )
    if "W3 raw" in results:
        table = Table(title="W3 rebuild the balance model")
        for column in ("variant", "events", "seconds", "events/s", "speed vs raw"):
            table.add_column(column, justify="right")
        raw = results["W3 raw"]
        for variant in ("W3 raw", "W3 micro"):
            figures = results[variant]
            table.add_row(
                variant,
                f"{figures['events']:,}",
                f"{figures['seconds']:.2f}",
                f"{figures['events'] / figures['seconds']:,.0f}",
                f"{raw['seconds'] / figures['seconds']:.2f}x",
            )
        console.print(table)
        mine = results["W3 micro"]
        console.print(
            f"micro catch-up at start (same replay): {mine['catch_up_seconds']:.2f} s; goal: rebuild >= 1.0x raw"
        )
    if "R1M" in results:
        figures = results["R1M"]
        table = Table(title=f"Restart from a snapshot with {figures['events']:,} events of history")
        for column in (
            "until serving (spawn -> first answer)",
            "inside the process (start -> serving)",
            "writing the history",
        ):
            table.add_column(column, justify="right")
        table.add_row(
            f"{figures['until_serving_s']:.2f} s",
            f"{figures['inside_process_s']:.2f} s",
            f"{figures['writing_s']:.0f} s",
        )
        console.print(table)
        console.print("goal: serving within 2 s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sequential", type=int, default=1000)
    parser.add_argument("--total", type=int, default=10000)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rebuild-events", type=int, default=100_000)
    parser.add_argument("--restart-events", type=int, default=1_000_000)
    parser.add_argument("--tail", type=int, default=1000, help="events after the snapshot")
    parser.add_argument("--parts", default="W2,W3,R1M", help="which parts to run")
    parser.add_argument("--skip-restart", action="store_true")
    parser.add_argument("--quick", action="store_true", help="small sizes, one round")
    parser.add_argument(
        "--profile", type=Path, default=None, help="write a cProfile of this process"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.sequential, args.total, args.rounds = 300, 3000, 1
        args.rebuild_events, args.restart_events = 20_000, 100_000
    args.parts = {part.strip() for part in args.parts.split(",")}
    if args.skip_restart:
        args.parts.discard("R1M")
    os.environ.setdefault("MICRO_LOG_LEVEL", "warning")
    configure_logging("warning")
    with tempfile.TemporaryDirectory() as folder:
        app = write_sheets(Path(folder) / "app")
        server = NatsServer(store_dir=Path(folder) / "nats").start()
        assert server.pid is not None
        args.server_pid = server.pid
        try:
            results = profile_to(args.profile, lambda: asyncio.run(run(args, server.url, app)))
        finally:
            server.stop()
    if args.json:
        print(json.dumps(results, indent=2))
        return
    report(results)


if __name__ == "__main__":
    main()
