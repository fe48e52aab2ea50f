"""W2 and W3 of issue 15 (the command cycle, a model rebuilt from history), micro beside raw.

W2  ``deposit {account, amount}`` over the bus: 100 accounts opened first, then each call
    deposits 1..10 into the next account (round-robin) and gets ``{"balance": new}`` back.
    2,000 sequential calls after 200 warm-up (p50, p99), then 10,000 with 64 in flight
    (calls/s); finally one more deposit per account checks every balance. Run twice: with
    the nats-server's default fsync, and with ``sync_interval: always``.

    micro: a service built from rule sheets: a pydantic ``Request``, a validation that the
    account exists, a ``Deposited`` event, a reducer updating the tinydb model, ``respond``
    reading the model. The caller is a ``Micro`` calling ``act``.

    raw: the plain shape of issue 15: nats-py, a task per request, an ``asyncio.Lock`` per
    account, ``json.loads`` of the request, a JetStream publish with
    ``Nats-Expected-Last-Subject-Sequence`` and ``Nats-Msg-Id``, a dict as the model, the
    reply. It checks that the account exists and the amount is a positive int by hand; it
    has no pydantic (the issue's shape has none). The caller is a nats-py ``request``.

W3  A stored log of 100 ``AccountOpened`` and 99,900 ``Deposited`` events (round-robin over
    the 100 accounts), written once per round through micro's own event store; each system
    then gets a fresh nats-server on a copy of it.

    micro: a fresh service process: the time from ``Micro.start()`` until it serves (its
    catch-up at start), then ``commander.rebuild()`` of the balance model in the same
    process.

    raw: an ordered push consumer (nats-py ``js.subscribe(..., ordered_consumer=True)``),
    ``json.loads`` of each body and a dict update, until the last sequence.

R1M (not in the default parts: writing its history takes over a minute) restart of a service
    with 1,000,000 events of history from a snapshot: time until it serves.

Every system of a part runs in its own processes (service and client each one) against a
fresh nats-server, in every round; the systems take turns in an order rotated each round.
Figures are medians over rounds, ratios the medians of the per-round ratios, and each figure
has the CPU µs per operation of the client, the service and the nats-server beside it.
Each part runs on both event loops (``asyncio``, ``uvloop``): micro processes get
``MICRO_EVENT_LOOP``, raw ones run ``asyncio.run``/``uvloop.run``.

    python bench/commands.py [--parts W2,W3] [--rounds 5] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import harness
from harness import Child, Figures, Meter, Ratio, Section

SCRIPT = str(Path(__file__).resolve())
ACCOUNTS = 100
STARTED = time.perf_counter()

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
            account: str

        class AccountOpened(Event):
            account: str

        def stream(request):
            return f"account-{request.account}"

        def validation(request, models):
            if request.account in models.account:
                raise RuleViolation(f"account {request.account} exists")

        def events(request, models):
            return [AccountOpened(account=request.account)]
        """,
    "reducers/open_account_reducer.py": """
        def opened(event, models):
            models.account.insert({"id": event.data.account})

        reducers = {"AccountOpened": opened}
        """,
    "rules/deposit_rule.py": """
        from pydantic import BaseModel, Field
        from micro import RuleViolation
        from micro.readmodel import Event

        class Request(BaseModel):
            account: str
            amount: int = Field(gt=0, le=1_000_000)

        class Deposited(Event):
            account: str
            amount: int

        def stream(request):
            return f"account-{request.account}"

        def validation(request, models):
            if request.account not in models.account:
                raise RuleViolation(f"account {request.account} does not exist")

        def events(request, models):
            return [Deposited(account=request.account, amount=request.amount)]

        def respond(request, models, events):
            return {"balance": models.account.require(request.account).balance}
        """,
    "reducers/deposit_reducer.py": """
        def deposited(event, models):
            account = models.account.require(event.data.account)
            models.account.update(account.id, balance=account.balance + event.data.amount)

        reducers = {"Deposited": deposited}
        """,
}


def write_sheets(folder: Path) -> Path:
    for name, source in SHEETS.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return folder


def bank(params: dict[str, Any], service: str = "bank") -> Any:
    """The micro bank of the sheets, on ``params``' server and namespace."""
    from micro import Micro

    micro = Micro(
        nats_url=params["url"],
        namespace=params["namespace"],
        service=service,
        app_dir=params["app"],
        log_level="warning",
    )
    micro.commander.add_command("open account")
    micro.commander.add_command("deposit")
    return micro


# -- W2 roles -----------------------------------------------------------------------------------


def w2_micro_service(params: dict[str, Any]) -> None:
    harness.ignore_interrupts()
    micro = bank(params)
    micro.add_view(
        "account balance", lambda query, models: models.account.require(query["id"]).balance
    )
    if params.get("snapshots"):
        micro.modules.want(["snapshooter"])

    async def ready(_micro: Any) -> None:
        def wait() -> None:
            sys.stdin.buffer.read()
            micro.stop()

        threading.Thread(target=wait, daemon=True).start()
        harness.say("ready", {"loop": harness.loop_name(), "inside": time.perf_counter() - STARTED})

    micro.hook("on_start", ready)
    micro.start()  # the loop: MICRO_EVENT_LOOP, set by the parent


def w2_raw_service(params: dict[str, Any]) -> None:
    import nats
    from nats.aio.msg import Msg

    namespace = params["namespace"]

    async def main() -> None:
        client = await nats.connect(params["url"])
        js = client.jetstream()
        await js.add_stream(name="BANK", subjects=[f"{namespace}.bank.>"])
        balances: dict[str, int] = {}
        sequences: dict[str, int] = {}
        locks: dict[str, asyncio.Lock] = {}

        async def deposit(msg: Msg) -> None:
            request = json.loads(msg.data)
            account, amount = request["account"], request["amount"]
            if account not in balances or not isinstance(amount, int) or amount <= 0:
                await msg.respond(b'{"error": "no such account, or not an amount"}')
                return
            async with locks[account]:
                event = {"type": "Deposited", "account": account, "amount": amount}
                ack = await js.publish(
                    f"{namespace}.bank.{account}",
                    json.dumps(event).encode(),
                    headers={
                        "Nats-Expected-Last-Subject-Sequence": str(sequences[account]),
                        "Nats-Msg-Id": str(uuid.uuid4()),
                    },
                )
                sequences[account] = ack.seq
                balances[account] += amount
                balance = balances[account]
            await msg.respond(json.dumps({"balance": balance}).encode())

        async def open_account(msg: Msg) -> None:
            account = json.loads(msg.data)["account"]
            lock = locks.setdefault(account, asyncio.Lock())
            async with lock:
                if account in balances:
                    await msg.respond(b'{"error": "exists"}')
                    return
                event = {"type": "AccountOpened", "account": account}
                ack = await js.publish(
                    f"{namespace}.bank.{account}",
                    json.dumps(event).encode(),
                    headers={
                        "Nats-Expected-Last-Subject-Sequence": "0",
                        "Nats-Msg-Id": str(uuid.uuid4()),
                    },
                )
                sequences[account], balances[account] = ack.seq, 0
            await msg.respond(b"{}")

        tasks: set[asyncio.Task[None]] = set()

        def task_per_request(
            handler: Callable[[Msg], Coroutine[Any, Any, None]],
        ) -> Callable[[Msg], Awaitable[None]]:
            async def on_message(msg: Msg) -> None:
                task = asyncio.create_task(handler(msg))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

            return on_message

        await client.subscribe(f"{namespace}.raw.deposit", "raw", cb=task_per_request(deposit))
        await client.subscribe(f"{namespace}.raw.open", "raw", cb=task_per_request(open_account))
        await client.flush()
        await client.flush()  # nats-py's first PING can overtake the SUBs: the second follows
        harness.say("ready")
        await harness.stdin_closed()
        await client.close()

    harness.run_on(params["loop"], main)


def w2_client(params: dict[str, Any]) -> None:
    async def main() -> None:
        act: Callable[[str, dict[str, Any]], Awaitable[Any]]
        if params["kind"] == "micro":
            from micro import Micro

            micro = Micro(
                nats_url=params["url"],
                namespace=params["namespace"],
                service="caller",
                log_level="warning",
            )
            await micro.open()
            names = {"open": "open account", "deposit": "deposit"}

            async def act_micro(name: str, payload: dict[str, Any]) -> Any:
                return await micro.act(names[name], payload, timeout=30)

            act, close = act_micro, micro.close
        else:
            import nats

            client = await nats.connect(params["url"])
            prefix = f"{params['namespace']}.raw."

            async def act_raw(name: str, payload: dict[str, Any]) -> Any:
                reply = await client.request(prefix + name, json.dumps(payload).encode(), 30)
                return json.loads(reply.data)

            act, close = act_raw, client.close
        for number in range(ACCOUNTS):
            await act("open", {"account": f"a{number}"})
        expected = dict.fromkeys((f"a{n}" for n in range(ACCOUNTS)), 0)
        counter = iter(range(10**9))

        async def deposit() -> None:
            number = next(counter)
            account, amount = f"a{number % ACCOUNTS}", number % 10 + 1
            expected[account] += amount
            reply = await act("deposit", {"account": account, "amount": amount})
            assert "balance" in reply, reply

        meter = Meter({"service": params["service_pid"], "server": params["server_pid"]})
        figures: Figures = {}
        for _ in range(params["warmup"]):
            await deposit()
        latencies = []
        meter.start()
        for _ in range(params["sequential"]):
            started = time.perf_counter()
            await deposit()
            latencies.append(time.perf_counter() - started)
        figures |= meter.stop("seq", params["sequential"])
        latencies.sort()
        figures["p50_us"] = harness.percentile(latencies, 0.5) * 1e6
        figures["p99_us"] = harness.percentile(latencies, 0.99) * 1e6
        left = params["total"]

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await deposit()

        meter.start()
        await asyncio.gather(*(worker() for _ in range(params["in_flight"])))
        figures |= meter.stop("tput", params["total"])
        figures["tput"] = params["total"] / figures["tput.seconds"]
        for account, balance in expected.items():  # every deposit counted, none twice
            reply = await act("deposit", {"account": account, "amount": 1})
            assert reply == {"balance": balance + 1}, (account, reply, balance + 1)
        await close()
        harness.say("result", figures)

    harness.run_on(params["loop"], main)


def w2_one(args: argparse.Namespace, system: str, fsync: str, app: Path) -> Figures:
    kind, _, loop = system.partition("/")
    with harness.fresh_server(fsync) as server:
        params = {"url": server.url, "namespace": "w2", "app": str(app), "loop": loop}
        if kind == "micro":
            service = Child(
                harness.role_command(SCRIPT, "w2-micro-service", **params),
                {"MICRO_EVENT_LOOP": loop, **harness.group_commit_env(args.group_commit, fsync)},
            )
        else:
            service = Child(harness.role_command(SCRIPT, "w2-raw-service", **params))
        try:
            ready = service.expect("ready", 60)
            if kind == "micro":
                harness.check_loop(system, loop, ready)
            client = Child(
                harness.role_command(
                    SCRIPT,
                    "w2-client",
                    kind=kind,
                    service_pid=service.pid,
                    server_pid=server.pid,
                    sequential=args.sequential,
                    warmup=args.warmup,
                    total=args.total,
                    in_flight=args.in_flight,
                    **params,
                )
            )
            try:
                return client.result(timeout=900)
            finally:
                client.stop()
        finally:
            service.stop()


# -- W3 -----------------------------------------------------------------------------------------


async def fill(url: str, namespace: str, per_account: int, batch: int = 1) -> int:
    """Open ACCOUNTS accounts, then ``per_account`` deposits into each, the accounts' writers
    side by side (so the log interleaves them); the last position."""
    from micro import Settings
    from micro.eventstore import ANY, NO_STREAM, NewEvent, open_event_store

    store = open_event_store(Settings(nats_url=url, namespace=namespace, embedded=False))
    await store.start()
    try:
        for account in range(ACCOUNTS):
            opened = NewEvent("AccountOpened", {"account": f"a{account}"})
            await store.append(f"account-a{account}", [opened], NO_STREAM)

        async def writer(account: int) -> None:
            left, number = per_account, 0
            while left:
                size = min(batch, left)
                events = [
                    NewEvent("Deposited", {"account": f"a{account}", "amount": n % 10 + 1})
                    for n in range(number, number + size)
                ]
                await store.append(f"account-a{account}", events, ANY)
                left, number = left - size, number + size

        await asyncio.gather(*(writer(account) for account in range(ACCOUNTS)))
        return await store.last_position()
    finally:
        await store.close()


def expected_total(per_account: int) -> int:
    return ACCOUNTS * sum(n % 10 + 1 for n in range(per_account))


def w3_micro(params: dict[str, Any]) -> None:
    harness.ignore_interrupts()
    micro = bank(params)
    server = params["server_pid"]
    result: Figures = {}
    catch_up = Meter({"server": server})
    tasks: list[asyncio.Task[None]] = []

    async def ready(_micro: Any) -> None:
        result.update(catch_up.stop("catchup", params["events"], own="service"))
        result["uvloop"] = float(harness.loop_name() == "uvloop")
        result["catchup"] = params["events"] / result["catchup.seconds"]

        async def rebuild() -> None:
            meter = Meter({"server": server})
            meter.start()
            applied = await micro.commander.rebuild()
            result.update(meter.stop("rebuild", applied, own="service"))
            result["rebuild"] = applied / result["rebuild.seconds"]
            result["events"] = applied
            accounts = micro.commander.projector.models.account.all()
            result["checksum"] = sum(account.balance for account in accounts)
            harness.say("result", result)
            micro.stop()

        tasks.append(asyncio.create_task(rebuild()))

    micro.hook("on_start", ready)
    catch_up.start()
    micro.start()  # the loop: MICRO_EVENT_LOOP, set by the parent


def w3_raw(params: dict[str, Any]) -> None:
    import nats
    from nats.aio.msg import Msg

    async def main() -> None:
        client = await nats.connect(params["url"])
        js = client.jetstream()
        stream = f"{params['namespace'].upper()}_EVENTS"
        last = (await js.stream_info(stream)).state.last_seq
        balances: dict[str, int] = {}
        applied = 0
        done = asyncio.Event()

        async def on_message(msg: Msg) -> None:
            nonlocal applied
            event = json.loads(msg.data)
            data = event["data"]
            if event["type"] == "Deposited":
                balances[data["account"]] += data["amount"]
            elif event["type"] == "AccountOpened":
                balances[data["account"]] = 0
            applied += 1
            if msg.metadata.sequence.stream >= last:
                done.set()

        meter = Meter({"server": params["server_pid"]})
        meter.start()
        subscription = await js.subscribe(
            f"{params['namespace']}.ev.>", cb=on_message, ordered_consumer=True
        )
        await done.wait()
        figures = meter.stop("replay", applied, own="service")
        await subscription.unsubscribe()
        await client.close()
        figures["replay"] = applied / figures["replay.seconds"]
        figures["events"] = applied
        figures["checksum"] = sum(balances.values())
        harness.say("result", figures)

    harness.run_on(params["loop"], main)


def w3_one(system: str, source: Path, events: int, app: Path, per_account: int) -> Figures:
    kind, _, loop = system.partition("/")
    with harness.fresh_server(copy_of=source) as server:
        params = {
            "url": server.url,
            "namespace": "w3",
            "app": str(app),
            "loop": loop,
            "server_pid": server.pid,
            "events": events,
        }
        if kind == "micro":
            child = Child(
                harness.role_command(SCRIPT, "w3-micro", **params), {"MICRO_EVENT_LOOP": loop}
            )
        else:
            child = Child(harness.role_command(SCRIPT, "w3-raw", **params))
        try:
            figures = child.result(timeout=600)
        finally:
            child.stop()
    if kind == "micro":
        ran = "uvloop" if figures.pop("uvloop") else "asyncio"
        harness.check_loop(system, loop, json.dumps({"loop": ran}))
    if figures["checksum"] != expected_total(per_account):
        raise AssertionError(f"{system} rebuilt {figures['checksum']}, not the stored total")
    return figures


# -- R1M: restart from a snapshot ---------------------------------------------------------------


async def snapshot_at(url: str, namespace: str, app: Path, deposits_per_account: int) -> int:
    """Save the snapshot a running bank would have saved after the bulk of the history.

    The state after the bulk is known without replaying a million events here; it goes
    through the real snapshooter, in its real format.
    """
    import nats

    from micro import Settings
    from micro.eventstore import open_event_store
    from micro.readmodel.projector import Projector
    from micro.readmodel.snapshots import Snapshooter

    commander = bank({"url": url, "namespace": namespace, "app": str(app)}).commander
    client = await nats.connect(url)
    store = open_event_store(Settings(nats_url=url, namespace=namespace, embedded=False))
    await store.start()
    try:
        projector = Projector(
            store, commander.models, commander.reducers, commander.types, name="bank"
        )
        balance = expected_total(deposits_per_account) // ACCOUNTS
        projector.models.account.load(
            [{"id": f"a{n}", "balance": balance} for n in range(ACCOUNTS)]
        )
        projector.versions.update({f"account-a{n}": deposits_per_account for n in range(ACCOUNTS)})
        projector.position = await store.last_position()
        snapshooter = Snapshooter(client, namespace=namespace, service="bank")
        snapshooter.projector = projector
        return await snapshooter.save()
    finally:
        await store.close()
        await client.close()


async def r1m(args: argparse.Namespace, app: Path, console: Any) -> list[Figures]:
    from micro import Micro, Settings
    from micro.eventstore import ANY, NewEvent, open_event_store

    results = []
    with harness.fresh_server() as server:
        bulk = (args.restart_events - ACCOUNTS - args.tail) // ACCOUNTS
        console.print(f"R1M: writing {args.restart_events:,} events")
        started = time.perf_counter()
        await fill(server.url, "r1m", bulk, batch=1000)
        await snapshot_at(server.url, "r1m", app, bulk)
        store = open_event_store(Settings(nats_url=server.url, namespace="r1m", embedded=False))
        await store.start()
        tail_each = args.tail // ACCOUNTS
        for account in range(ACCOUNTS):
            deposits = [
                NewEvent("Deposited", {"account": f"a{account}", "amount": 1})
                for _ in range(tail_each)
            ]
            await store.append(f"account-a{account}", deposits, ANY)
        history = await store.last_position()
        await store.close()
        writing = time.perf_counter() - started
        expected = expected_total(bulk) // ACCOUNTS + tail_each
        micro = Micro(nats_url=server.url, namespace="r1m", service="caller", log_level="warning")
        await micro.open()
        try:
            for _ in range(args.rounds):
                started = time.perf_counter()
                service = Child(
                    harness.role_command(
                        SCRIPT,
                        "w2-micro-service",
                        url=server.url,
                        namespace="r1m",
                        app=str(app),
                        snapshots=True,
                    )
                )
                try:
                    ready = await asyncio.to_thread(service.expect, "ready", 120)
                    inside = json.loads(ready)["inside"]
                    balance = await micro.act("account balance", {"id": "a0"})
                    serving = time.perf_counter() - started
                    assert balance == expected, (balance, expected)
                finally:
                    service.stop()
                results.append(
                    {
                        "restart.seconds": serving,
                        "inside": inside,
                        "events": history,
                        "writing": writing,
                    }
                )
        finally:
            await micro.close()
    return results


# -- main ---------------------------------------------------------------------------------------

ROLES = {
    "w2-micro-service": w2_micro_service,
    "w2-raw-service": w2_raw_service,
    "w2-client": w2_client,
    "w3-micro": w3_micro,
    "w3-raw": w3_raw,
}


def w2_sections(title: str, loops: list[str], in_flight: int) -> list[Section]:
    tput: list[Ratio] = []
    seq: list[Ratio] = []
    short = "W2 sync always" if title.startswith("sync_interval") else "W2 default fsync"
    for loop in loops:
        me, raw = f"micro/{loop}", f"raw/{loop}"
        tput.append(Ratio(me, raw, "tput", f"{short}: {me} ÷ {raw}, calls/s", 1.0))
        seq.append(Ratio(me, raw, "p50_us", f"{short}: {me} ÷ {raw}, p50", at_most=True))
    if len(loops) == 2:
        label = f"{short}: micro/uvloop ÷ raw/asyncio, calls/s"
        tput.append(Ratio("micro/uvloop", "raw/asyncio", "tput", label))
    return [
        Section(
            f"W2 deposit, {title}, sequential",
            "seq",
            [("p50_us", "p50 µs", ".0f"), ("p99_us", "p99 µs", ".0f")],
            ratios=seq,
        ),
        Section(
            f"W2 deposit, {title}, {in_flight} in flight",
            "tput",
            [("tput", "calls/s", ",.0f")],
            ratios=tput,
        ),
    ]


def w3_sections(loops: list[str], events: int) -> list[Section]:
    ratios = []
    for figure in ("rebuild", "catchup"):
        pairs: list[tuple[str, str, float | None]] = [
            (f"micro/{loop}", f"raw/{loop}", 1.5) for loop in loops
        ]
        if len(loops) == 2:
            pairs.append(("micro/uvloop", "raw/asyncio", None))
        for me, raw, goal in pairs:
            label = f"W3 {figure}: {me} ÷ {raw}, events/s"
            ratios.append(
                Ratio(
                    me, raw, figure, label, goal, den_key="replay", num_cpu=figure, den_cpu="replay"
                )
            )
    processes = ("service", "server")
    return [
        Section(
            f"W3 the raw ordered consumer, {events:,} events",
            "replay",
            [("replay", "events/s", ",.0f")],
            processes,
        ),
        Section(
            "W3 micro commander.rebuild()", "rebuild", [("rebuild", "events/s", ",.0f")], processes
        ),
        Section(
            "W3 micro catch-up at start (Micro.start() until serving)",
            "catchup",
            [("catchup", "events/s", ",.0f")],
            processes,
            ratios,
        ),
    ]


def main() -> None:
    if harness.dispatch(ROLES):
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sequential", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--total", type=int, default=10000, help="W2 calls with 64 in flight")
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--events", type=int, default=100_000, help="W3 stored events")
    parser.add_argument("--restart-events", type=int, default=1_000_000)
    parser.add_argument("--tail", type=int, default=1000, help="R1M events after the snapshot")
    parser.add_argument(
        "--parts",
        default="W2,W3",
        help="parts to run, of W2,W3,R1M (R1M writes 1M events first: over a minute)",
    )
    parser.add_argument("--fsync", default="default,always", help="W2's nats-server fsync runs")
    parser.add_argument(
        "--group-commit",
        default="match",
        choices=("match", "auto", "on", "off"),
        help="micro's event_store_group_commit in W2; match: on where the server syncs "
        "always, auto elsewhere (default)",
    )
    parser.add_argument("--loops", default="asyncio,uvloop", help="event loops to compare")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round")
    parser.add_argument("--json", action="store_true", help="print every figure as JSON")
    args = parser.parse_args()
    if args.quick:
        args.sequential, args.warmup, args.total, args.rounds = 200, 20, 1000, 1
        args.events, args.restart_events = 10_000, 100_000
    parts = {part.strip().upper() for part in args.parts.split(",")}
    from micro.log import configure_logging

    configure_logging("warning")  # this process writes W3's log: no line per stream created
    loops = harness.available_loops(args.loops.split(","))
    console = harness.console_for(args)
    results: dict[str, dict[str, list[Figures]]] = {}
    lines: list[dict[str, Any]] = []
    systems = [f"{kind}/{loop}" for loop in loops for kind in ("raw", "micro")]
    with tempfile.TemporaryDirectory(prefix="micro-bench-") as folder:
        app = write_sheets(Path(folder) / "app")
        with harness.progress_bar(console) as progress:
            if "W2" in parts:
                for fsync in args.fsync.split(","):
                    title = "sync_interval: always" if fsync == "always" else "default fsync"
                    title += f", micro {harness.group_commit_label(args.group_commit, fsync)}"

                    def w2(system: str, _round: int, fsync: str = fsync) -> Figures:
                        return w2_one(args, system, fsync, app)

                    results[f"W2 {title}"] = harness.alternate(
                        systems, args.rounds, w2, progress, f"W2 {title}"
                    )
            if "W3" in parts:
                per_account = (args.events - ACCOUNTS) // ACCOUNTS
                source = Path(folder) / "w3-log"
                events = 0

                def write_log(_round: int) -> None:
                    nonlocal events
                    shutil.rmtree(source, ignore_errors=True)
                    with harness.fresh_server(harness.FSYNC_DEFAULT) as server:
                        events = asyncio.run(fill(server.url, "w3", per_account))
                        server.stop()  # a clean stop, then its files are a consistent copy
                        shutil.copytree(server.store_dir, source)

                results["W3"] = harness.alternate(
                    systems,
                    args.rounds,
                    lambda system, _r: w3_one(system, source, events, app, per_account),
                    progress,
                    "W3",
                    before_round=write_log,
                )
        if "R1M" in parts:
            results["R1M"] = {"micro": asyncio.run(r1m(args, app, console))}
    for name, part in results.items():
        if name.startswith("W2"):
            title = name.removeprefix("W2 ")
            lines += harness.report(console, w2_sections(title, loops, args.in_flight), part)
        elif name == "W3":
            lines += harness.report(console, w3_sections(loops, args.events), part)
    if "R1M" in results:
        restarts = results["R1M"]["micro"]
        median = harness.medians({"r1m": restarts})["r1m"]
        console.print(
            f"R1M restart with {median['events']:,.0f} events of history from a snapshot: "
            f"{median['restart.seconds']:.2f} s until serving (spawn to first answer), "
            f"{median['inside']:.2f} s inside the process; writing the history took "
            f"{median['writing']:.0f} s. goal: serving within 2 s"
        )
    harness.goals(console, lines)
    if args.json:
        harness.dump(results, lines)


if __name__ == "__main__":
    main()
