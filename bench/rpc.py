"""W1: request/reply, micro beside raw nats-py (and Moleculer when Node is here), same run.

The shape of issue 15: a service serving ``math.add`` ({a, b} -> a + b) runs in its own
process, the client in another. The client first keeps 64 calls in flight, 20,000 calls after
640 warm-up calls (calls/s), then calls one at a time, 2,000 calls after 200 warm-up (p50,
p99). Systems:

* ``micro/<loop>``: a ``Micro`` service (its loop chosen by ``MICRO_EVENT_LOOP``) and a
  ``Micro`` client calling ``act``;
* ``raw/<loop>``: nats-py ``subscribe`` with a queue group, ``json.loads``, ``msg.respond``;
  the client a nats-py ``request`` (+ ``json.loads`` of the reply);
* ``moleculer``: Moleculer 0.14 (Node) with its NATS transporter, a ``math.add`` action and a
  client doing the same loops; installed with npm into ``~/.cache/micro-bench/moleculer`` on
  first use, skipped (with the reason) when node or npm is missing or the install fails.

``<loop>`` is ``asyncio`` or ``uvloop``: every process of a column runs that loop, so each
ratio compares like with like; ``micro/uvloop ÷ raw/asyncio`` is what a user who writes a
plain ``asyncio.run`` client and service gets from micro's default.

Every system gets a fresh nats-server and fresh processes in every round; the systems take
turns in an order rotated each round, and the figures are medians over the rounds, the ratios
medians of the per-round ratios. Beside each figure: CPU µs per call of the client, the
service and the nats-server over that phase.

``--all`` adds ``micro+hook`` (a no-op ``on_request`` hook) and times ``act_stream`` of 10
messages in the micro clients; ``--otel`` adds ``micro+otel``: both micro processes run the
OpenTelemetry SDK with an in-memory span exporter (tracing switched on). ``--quick``: tiny sizes, one round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import harness
from harness import Child, Figures, Meter, Ratio, Section

SCRIPT = str(Path(__file__).resolve())
NAMESPACE = "bench"
PAYLOAD = {"a": 2, "b": 3}
MOLECULER = {"moleculer": "0.14.35", "nats": "2.29.3"}
MOLECULER_DIR = Path(
    os.environ.get("MICRO_BENCH_CACHE", Path.home() / ".cache" / "micro-bench")
) / ("moleculer")

OTEL_SDK = """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
trace.set_tracer_provider(provider)
"""


def subject() -> str:
    from micro.bus.subjects import command_subject

    return command_subject(NAMESPACE, "math.add")


# -- the client's two phases (Python clients) ---------------------------------------------------


async def phases(
    call: Callable[[], Awaitable[Any]], params: dict[str, Any], meter: Meter
) -> Figures:
    """64 in flight (warm-up, then measured), then sequential (warm-up, then measured)."""
    assert await call() == 5
    figures: Figures = {}

    async def in_flight(total: int) -> None:
        left = total

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await call()

        await asyncio.gather(*(worker() for _ in range(params["in_flight"])))

    await in_flight(params["warmup_in_flight"])
    meter.start()
    await in_flight(params["total"])
    figures |= meter.stop("tput", params["total"])
    figures["tput"] = params["total"] / figures["tput.seconds"]

    for _ in range(params["warmup"]):
        await call()
    latencies = []
    meter.start()
    for _ in range(params["sequential"]):
        started = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - started)
    figures |= meter.stop("seq", params["sequential"])
    latencies.sort()
    figures["p50_us"] = harness.percentile(latencies, 0.5) * 1e6
    figures["p99_us"] = harness.percentile(latencies, 0.99) * 1e6
    return figures


def meter_for(params: dict[str, Any]) -> Meter:
    return Meter({"service": params["service_pid"], "server": params["server_pid"]})


# -- roles: the child processes -----------------------------------------------------------------


def raw_service(params: dict[str, Any]) -> None:
    import nats
    from nats.aio.msg import Msg

    name = subject()

    async def main() -> None:
        client = await nats.connect(params["url"])

        async def handle(msg: Msg) -> None:
            request = json.loads(msg.data)
            await msg.respond(json.dumps(request["a"] + request["b"]).encode())

        await client.subscribe(name, queue="raw", cb=handle)
        await client.flush()
        await client.flush()  # nats-py's first PING can overtake the SUB: the second follows it
        harness.say("ready")
        await harness.stdin_closed()
        await client.close()

    harness.run_on(params["loop"], main)


def raw_client(params: dict[str, Any]) -> None:
    import nats

    name = subject()

    async def main() -> None:
        client = await nats.connect(params["url"])
        body = json.dumps(PAYLOAD).encode()

        async def call() -> Any:
            reply = await client.request(name, body, timeout=10)
            return json.loads(reply.data)

        figures = await phases(call, params, meter_for(params))
        await client.close()
        harness.say("result", figures)

    harness.run_on(params["loop"], main)


def micro_service(params: dict[str, Any]) -> None:
    harness.ignore_interrupts()
    if params["otel"]:
        exec(OTEL_SDK)
    from micro import Micro

    micro = Micro(nats_url=params["url"], namespace=NAMESPACE, service="bench", log_level="warning")
    micro.add("math.add", lambda req: req["a"] + req["b"])
    if params["hook"]:
        micro.hook("on_request", lambda payload, ctx: None)

    async def count(req: dict[str, int], ctx: Any) -> int:
        for index in range(req["n"]):
            await ctx.send(index)
        return req["n"]

    micro.add("count", count)

    async def ready(_micro: Micro) -> None:
        def wait() -> None:
            sys.stdin.buffer.read()
            micro.stop()

        threading.Thread(target=wait, daemon=True).start()
        harness.say("ready", {"loop": harness.loop_name()})

    micro.hook("on_start", ready)
    micro.start()  # the loop: MICRO_EVENT_LOOP, set by the parent


def micro_client(params: dict[str, Any]) -> None:
    if params["otel"]:
        exec(OTEL_SDK)
    from micro import Micro

    async def main() -> None:
        micro = Micro(
            nats_url=params["url"], namespace=NAMESPACE, service="caller", log_level="warning"
        )
        await micro.open()

        async def call() -> Any:
            return await micro.act("math.add", PAYLOAD)

        figures = await phases(call, params, meter_for(params))
        if params["streams"]:
            started = time.perf_counter()
            for _ in range(params["streams"]):
                messages = [m async for m in micro.act_stream("count", {"n": 10})]
                assert len(messages) == 11
            figures["streams"] = params["streams"] / (time.perf_counter() - started)
        await micro.close()
        harness.say("result", figures)

    harness.run_on(params["loop"], main)


ROLES = {
    "raw-service": raw_service,
    "raw-client": raw_client,
    "micro-service": micro_service,
    "micro-client": micro_client,
}


# -- Moleculer ----------------------------------------------------------------------------------

MOLECULER_COMMON = r"""
const fs = require("fs");
const { ServiceBroker } = require("moleculer");
const url = process.argv[2];
function broker(name) {
  return new ServiceBroker({ nodeID: name + "-" + process.pid, transporter: url, logger: false });
}
let tick = 100;  // clock ticks per second of /proc/<pid>/stat; the client is told the real one
function cpuOf(pid) {
  const fields = fs.readFileSync("/proc/" + pid + "/stat", "utf8").split(")").pop().trim().split(/\s+/);
  return (Number(fields[11]) + Number(fields[12])) / tick;
}
"""

MOLECULER_SERVICE = (
    MOLECULER_COMMON
    + r"""
const service = broker("service");
service.createService({ name: "math", actions: { add(ctx) { return ctx.params.a + ctx.params.b; } } });
service.start().then(() => console.log("ready"));
process.stdin.on("end", () => service.stop().then(() => process.exit(0)));
process.stdin.resume();
"""
)

MOLECULER_CLIENT = (
    MOLECULER_COMMON
    + r"""
const params = JSON.parse(process.argv[3]);
tick = params.clk_tck;
const client = broker("client");
const call = () => client.call("math.add", { a: 2, b: 3 });
function meter() {
  const own = process.cpuUsage();
  const service = cpuOf(params.service_pid), server = cpuOf(params.server_pid);
  const started = process.hrtime.bigint();
  return (prefix, n, figures) => {
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    const used = process.cpuUsage(own);
    figures[prefix + ".seconds"] = seconds;
    figures[prefix + ".client_us"] = (used.user + used.system) / n;
    figures[prefix + ".service_us"] = (cpuOf(params.service_pid) - service) / n * 1e6;
    figures[prefix + ".server_us"] = (cpuOf(params.server_pid) - server) / n * 1e6;
  };
}
async function inFlight(total) {
  let left = total;
  const worker = async () => { while (left > 0) { left -= 1; await call(); } };
  await Promise.all(Array.from({ length: params.in_flight }, worker));
}
function pick(sorted, fraction) {
  return sorted[Math.max(0, Math.min(sorted.length - 1, Math.round(fraction * sorted.length) - 1))];
}
(async () => {
  await client.start();
  await client.waitForServices("math");
  if ((await call()) !== 5) throw new Error("wrong sum");
  const figures = {};
  await inFlight(params.warmup_in_flight);
  let stop = meter();
  await inFlight(params.total);
  stop("tput", params.total, figures);
  figures.tput = params.total / figures["tput.seconds"];
  for (let i = 0; i < params.warmup; i++) await call();
  const latencies = [];
  stop = meter();
  for (let i = 0; i < params.sequential; i++) {
    const started = process.hrtime.bigint();
    await call();
    latencies.push(Number(process.hrtime.bigint() - started) / 1e3);
  }
  stop("seq", params.sequential, figures);
  latencies.sort((a, b) => a - b);
  figures.p50_us = pick(latencies, 0.5);
  figures.p99_us = pick(latencies, 0.99);
  await client.stop();
  console.log("result " + JSON.stringify(figures));
  process.exit(0);
})().catch((error) => { console.error(error); process.exit(1); });
"""
)


def prepare_moleculer() -> str | None:
    """Install Moleculer once into the cache folder; the reason it cannot run, or None."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not on PATH"
    MOLECULER_DIR.mkdir(parents=True, exist_ok=True)
    manifest = json.dumps({"name": "moleculer-bench", "private": True, "dependencies": MOLECULER})
    package = MOLECULER_DIR / "package.json"
    installed = all((MOLECULER_DIR / "node_modules" / name).is_dir() for name in MOLECULER)
    if not installed or package.read_text() != manifest:
        package.write_text(manifest)
        try:
            done = subprocess.run(
                ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=MOLECULER_DIR,
                capture_output=True,
                text=True,
                timeout=240,
            )
        except subprocess.TimeoutExpired:
            return "npm install took over 240 s"
        if done.returncode != 0:
            return f"npm install failed: {done.stderr.strip()[-300:]}"
    (MOLECULER_DIR / "service.js").write_text(MOLECULER_SERVICE)
    (MOLECULER_DIR / "client.js").write_text(MOLECULER_CLIENT)
    return None


# -- orchestration ------------------------------------------------------------------------------


def run_one(args: argparse.Namespace, system: str) -> Figures:
    kind, _, loop = system.partition("/")
    params = {
        "sequential": args.sequential,
        "warmup": args.warmup,
        "total": args.total,
        "warmup_in_flight": args.warmup_in_flight,
        "in_flight": args.in_flight,
    }
    with harness.fresh_server() as server:
        assert server.pid is not None
        if kind == "moleculer":
            service = Child(
                ["node", str(MOLECULER_DIR / "service.js"), server.url], cwd_env(MOLECULER_DIR)
            )
        elif kind == "raw":
            service = Child(harness.role_command(SCRIPT, "raw-service", url=server.url, loop=loop))
        else:
            service = Child(
                harness.role_command(
                    SCRIPT,
                    "micro-service",
                    url=server.url,
                    otel=kind == "micro+otel",
                    hook=kind == "micro+hook",
                ),
                {"MICRO_EVENT_LOOP": loop},
            )
        try:
            ready = service.expect("ready", 60)
            if kind.startswith("micro"):
                harness.check_loop(system, loop, ready)
            params |= {"url": server.url, "service_pid": service.pid, "server_pid": server.pid}
            params["clk_tck"] = os.sysconf("SC_CLK_TCK")
            if kind == "moleculer":
                client = Child(
                    ["node", str(MOLECULER_DIR / "client.js"), server.url, json.dumps(params)],
                    cwd_env(MOLECULER_DIR),
                )
            else:
                role = "raw-client" if kind == "raw" else "micro-client"
                streams = args.streams if kind == "micro" else 0
                client = Child(
                    harness.role_command(
                        SCRIPT,
                        role,
                        loop=loop,
                        otel=kind == "micro+otel",
                        streams=streams,
                        **params,
                    )
                )
            try:
                return client.result(timeout=600)
            finally:
                client.stop()
        finally:
            service.stop()


def cwd_env(folder: Path) -> dict[str, str]:
    return {"NODE_PATH": str(folder / "node_modules")}


def systems_and_ratios(
    args: argparse.Namespace, loops: list[str], moleculer: bool
) -> tuple[list[str], list[Ratio], list[Ratio]]:
    micro = "micro"
    extras = (["micro+otel"] if args.otel else []) + (["micro+hook"] if args.all else [])
    systems = [f"{kind}/{loop}" for loop in loops for kind in ("raw", micro, *extras)]
    if moleculer:
        systems.append("moleculer")
    tput: list[Ratio] = []
    seq: list[Ratio] = []
    for loop in loops:
        me, raw = f"{micro}/{loop}", f"raw/{loop}"
        tput.append(Ratio(me, raw, "tput", f"{me} ÷ {raw}, calls/s", 1.1))
        seq.append(Ratio(me, raw, "p50_us", f"{me} ÷ {raw}, p50", 1.0, at_most=True))
        seq.append(Ratio(me, raw, "p99_us", f"{me} ÷ {raw}, p99", 1.5, at_most=True))
        for extra in extras:
            other = f"{extra}/{loop}"
            tput.append(Ratio(other, me, "tput", f"{other} ÷ {me}, calls/s"))
            seq.append(Ratio(other, me, "p50_us", f"{other} ÷ {me}, p50"))
    if "uvloop" in loops and "asyncio" in loops:
        me, raw = f"{micro}/uvloop", "raw/asyncio"
        tput.append(Ratio(me, raw, "tput", f"{me} ÷ {raw}, calls/s (a plain asyncio.run user)"))
        seq.append(Ratio(me, raw, "p50_us", f"{me} ÷ {raw}, p50"))
    if moleculer:
        for loop in loops:
            me = f"{micro}/{loop}"
            goal = 1.0 if loop == loops[-1] else None  # the goal is for micro's default loop
            tput.append(Ratio(me, "moleculer", "tput", f"{me} ÷ moleculer, calls/s", goal))
            seq.append(Ratio(me, "moleculer", "p50_us", f"{me} ÷ moleculer, p50", at_most=True))
    return systems, tput, seq


def main() -> None:
    if harness.dispatch(ROLES):
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sequential", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200, help="sequential warm-up calls")
    parser.add_argument("--total", type=int, default=20000, help="calls with 64 in flight")
    parser.add_argument("--warmup-in-flight", type=int, default=640)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--loops", default="asyncio,uvloop", help="event loops to compare")
    parser.add_argument("--no-moleculer", action="store_true", help="leave Moleculer out")
    parser.add_argument("--all", action="store_true", help="also hooks and act_stream")
    parser.add_argument("--otel", action="store_true", help="trace with the OTel SDK")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round")
    parser.add_argument("--json", action="store_true", help="print every figure as JSON")
    args = parser.parse_args()
    if args.quick:
        args.sequential, args.warmup, args.total, args.warmup_in_flight = 300, 50, 2000, 128
        args.rounds = 1
    args.streams = (50 if args.quick else 500) if args.all else 0
    console = harness.console_for(args)
    loops = harness.available_loops(args.loops.split(","))
    moleculer = False
    if not args.no_moleculer:
        reason = prepare_moleculer()
        if reason is None:
            moleculer = True
        else:
            console.print(f"Moleculer skipped: {reason}")
    systems, tput, seq = systems_and_ratios(args, loops, moleculer)
    failures: list[str] = []

    def one(system: str, _round: int) -> Figures:
        if system != "moleculer":
            return run_one(args, system)
        try:  # a peer that fails to run is reported, and the comparison goes on without it
            return run_one(args, system)
        except harness.ChildError as error:
            failures.append(str(error))
            return {}

    with harness.progress_bar(console) as progress:
        results = harness.alternate(systems, args.rounds, one, progress, "W1")
    if failures:
        console.print(f"Moleculer skipped in {len(failures)} round(s): {failures[0]}")
    sections = [
        Section(
            f"W1 math.add, {args.in_flight} in flight, {args.total:,} calls",
            "tput",
            [("tput", "calls/s", ",.0f")],
            ratios=tput,
        ),
        Section(
            f"W1 math.add, sequential, {args.sequential:,} calls",
            "seq",
            [("p50_us", "p50 µs", ".0f"), ("p99_us", "p99 µs", ".0f")],
            ratios=seq,
        ),
    ]
    lines = harness.report(
        console,
        sections,
        results,
        "CPU µs/op: CPU time of each process over the measured phase ÷ calls (client, "
        "service, nats-server). spread: lowest to highest round of the first figure.",
    )
    if args.streams:
        for system in systems:
            values = [r["streams"] for r in results[system] if "streams" in r]
            if values:
                median = statistics.median(values)
                console.print(f"{system}: act_stream, 10 messages per call: {median:,.0f} calls/s")
    harness.goals(console, lines)
    if args.json:
        harness.dump({"W1": results}, lines)


if __name__ == "__main__":
    main()
