"""The HTTP gateway versus ``act`` and a hand-written proxy: one command, the same run.

Three systems serve ``math.add`` ({a, b} -> a + b, typed with pydantic, so the service
validates) and each is measured with both event loops (asyncio, uvloop):

- ``act``: a ``Micro`` client process calling ``act``;
- ``gateway``: HTTP POSTs to ``/api/math/add`` through micro's gateway;
- ``proxy``: HTTP POSTs to the same path through a hand-written Starlette + nats-py proxy
  (``proxy_main`` below, about 20 lines as a user writes it): one route, the JSON body
  forwarded with ``nc.request`` to the command's subject, the reply's bytes returned.
  uvicorn runs it with the settings micro's gateway uses: ``http="auto"`` (httptools when
  installed, as it is with micro), ``access_log=False``, ``server_header=False``,
  ``log_level="warning"``, and ``loop="asyncio"`` or ``"uvloop"``.

Every system gets fresh processes in every round: a nats-server, the service, the gateway
or the proxy, and the client, each a process of its own. The systems alternate within a
round, their order rotated from one round to the next. The client measures a sequential
phase (p50/p99) and a phase with ``--concurrency`` calls in flight (throughput), each after
a warm-up, and reads the CPU time of every process (``/proc/<pid>/stat``) at both ends of
each phase: the CPU per call of client, gateway (or proxy), service and nats-server stands
beside every figure. Figures are medians over the rounds; ratios are medians of the ratios
taken within each round, between systems on the same loop.

The HTTP client is a minimal HTTP/1.1 client (an asyncio protocol, one keep-alive
connection per caller): a general-purpose client such as httpx costs more CPU per request
than the server side, which would measure the client rather than the gateway.

The service (``Micro.start()``), the gateway and the clients run on the loop
``MICRO_EVENT_LOOP`` names (``micro.loop``); the proxy on uvicorn's ``loop=`` of the same
name.

Run: ``python bench/gateway.py`` (``--quick`` while developing, ``--json`` for machines).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from pydantic import BaseModel

NAMESPACE = "benchgw"
PATH = "/api/math/add"
ROOT = Path(__file__).resolve().parent.parent
SYSTEMS = ("act", "gateway", "proxy")
LOOPS = ("asyncio", "uvloop")
GOAL_OVER_ACT = 0.8
TICKS = os.sysconf("SC_CLK_TCK")


# -- the processes ----------------------------------------------------------------------


class Numbers(BaseModel):
    a: int
    b: int


def _run(main: Coroutine[Any, Any, None], loop: str) -> None:
    from micro.loop import run

    run(main, loop=loop)


def service_main(url: str, loop: str) -> None:
    from micro import Micro

    def add(request: Numbers) -> int:
        return request.a + request.b

    micro = Micro(nats_url=url, namespace=NAMESPACE, service="math", log_level="warning")
    micro.add("math.add", add)

    async def ready(_micro: Micro) -> None:
        print("ready", flush=True)

    micro.hook("on_start", ready)
    micro.start()  # on the loop MICRO_EVENT_LOOP names


def gateway_main(url: str, loop: str) -> None:
    from micro import Micro
    from micro.gateway import Gateway, GatewaySettings

    async def main() -> None:
        micro = Micro(nats_url=url, namespace=NAMESPACE, service="gateway", log_level="warning")
        gateway = Gateway(micro, GatewaySettings(port=0, required_services=["math"]))
        await micro.open()
        await gateway.start()
        print("ready", gateway.url, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await gateway.stop()
        await micro.close()

    _run(main(), loop)


def proxy_main(url: str, loop: str) -> None:
    """The proxy a user writes with Starlette and nats-py (the subject is the command's)."""
    import nats
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    subject = sys.argv[4]
    connection: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        connection["nc"] = await nats.connect(url)
        print("ready", f"http://127.0.0.1:{listener.getsockname()[1]}", flush=True)
        yield
        await connection["nc"].drain()

    async def add(request: Request) -> Response:
        reply = await connection["nc"].request(subject, await request.body(), timeout=10)
        return Response(reply.data, media_type="application/json")

    app = Starlette(routes=[Route(PATH, add, methods=["POST"])], lifespan=lifespan)
    # As uvicorn binds its own (IPPROTO_TCP named, so asyncio turns Nagle off), on port 0.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app, loop=loop, access_log=False, server_header=False, log_level="warning"
    )
    uvicorn.Server(config).run(sockets=[listener])


# -- the client -------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


class _HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: one JSON POST at a time, replies by length."""

    def __init__(self, host: str) -> None:
        self.host = host.encode()
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"content-length:")
        stop = head.find(b"\r\n", at)
        length = int(head[at + 15 : stop if stop >= 0 else len(head)])
        if len(self.buffer) < end + 4 + length:
            return
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((int(head[9:12]), body))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("the server closed the connection"))

    async def post(self, path: bytes, body: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(
            b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (path, self.host, len(body), body)
        )
        return await self.waiter


async def _phase(
    calls: list[Callable[[int], Awaitable[None]]], count: int, pids: dict[str, int]
) -> dict[str, Any]:
    """``count`` calls spread over the callers; wall time, latencies, CPU of each process."""
    latencies: list[float] = []
    next_call = 0

    async def caller(call: Callable[[int], Awaitable[None]]) -> None:
        nonlocal next_call
        while next_call < count:
            next_call += 1
            started = time.perf_counter()
            await call(next_call)
            latencies.append(time.perf_counter() - started)

    cpu_before = {name: _cpu_seconds(pid) for name, pid in pids.items()}
    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(caller(call) for call in calls)), 300)
    elapsed = time.perf_counter() - started
    cpu = {name: (_cpu_seconds(pid) - cpu_before[name]) / count * 1e6 for name, pid in pids.items()}
    latencies.sort()
    return {
        "calls_per_s": count / elapsed,
        "p50_us": statistics.median(latencies) * 1e6,
        "p99_us": latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1e6,
        "cpu_us": cpu,
    }


async def _measure(
    calls: list[Callable[[int], Awaitable[None]]], args: argparse.Namespace, pids: dict[str, int]
) -> dict[str, Any]:
    await _phase(calls[:1], max(1, args.calls // 10), pids)  # warm-up: connections, caches
    sequential = await _phase(calls[:1], args.calls, pids)
    await _phase(calls, max(1, args.load // 10), pids)
    loaded = await _phase(calls, args.load, pids)
    return {"sequential": sequential, "load": loaded}


async def _client(system: str, target: str, args: argparse.Namespace, pids: dict[str, int]) -> None:
    pids = {"client": os.getpid(), **pids}
    if system == "act":
        from micro import Micro

        async with Micro(
            nats_url=target, namespace=NAMESPACE, service="client", log_level="warning"
        ) as micro:

            async def act(number: int) -> None:
                if await micro.act("math.add", {"a": number, "b": 1}) != number + 1:
                    raise AssertionError("a wrong sum")

            result = await _measure([act] * args.concurrency, args, pids)
    else:
        host, port = target.removeprefix("http://").rsplit(":", 1)
        loop = asyncio.get_running_loop()
        connections = []
        for _ in range(args.concurrency):
            _, connection = await loop.create_connection(
                lambda: _HttpConnection(host), host, int(port)
            )
            connections.append(connection)

        def caller(connection: _HttpConnection) -> Callable[[int], Awaitable[None]]:
            async def post(number: int) -> None:
                status, body = await connection.post(PATH.encode(), b'{"a":%d,"b":1}' % number)
                if status != 200 or int(body) != number + 1:
                    raise AssertionError(f"{status} {body!r}")

            return post

        result = await _measure([caller(c) for c in connections], args, pids)
        for connection in connections:
            assert connection.transport is not None
            connection.transport.close()
    print(json.dumps(result), flush=True)


def client_main(argv: list[str]) -> None:
    system, target, loop, pids, calls, load, concurrency = argv
    args = argparse.Namespace(calls=int(calls), load=int(load), concurrency=int(concurrency))
    _run(_client(system, target, args, json.loads(pids)), loop)


# -- the orchestration ------------------------------------------------------------------


def _pythonpath() -> str:
    """This checkout first, then whatever the caller had."""
    return os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))


def _spawn(role: str, *argv: str, loop: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, __file__, role, *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={
            **os.environ,
            "PYTHONPATH": _pythonpath(),
            "MICRO_LOG_FORMAT": "json",
            "MICRO_EVENT_LOOP": loop,
        },
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("ready"):
        process.kill()
        raise RuntimeError(f"the bench's {role} did not start: {line!r}")
    return process, line.split()[1] if len(line.split()) > 1 else ""


def _stop(process: subprocess.Popen[str]) -> None:
    if process.stdin is not None:
        process.stdin.close()
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)
    if process.stdout is not None:
        process.stdout.close()


def run_system(system: str, loop: str, args: argparse.Namespace) -> dict[str, Any]:
    """One system, one loop, fresh processes: the client's figures."""
    from micro.bus.subjects import command_subject
    from micro.testing import NatsServer

    with tempfile.TemporaryDirectory() as store:
        server = NatsServer(store_dir=Path(store)).start()
        started: list[subprocess.Popen[str]] = []
        try:
            assert server.pid is not None
            pids = {"nats": server.pid}
            service, _ = _spawn("_service", server.url, loop, loop=loop)
            started.append(service)
            pids["service"] = service.pid
            target = server.url
            if system == "gateway":
                front, target = _spawn("_gateway", server.url, loop, loop=loop)
                started.append(front)
                pids["front"] = front.pid
            elif system == "proxy":
                subject = command_subject(NAMESPACE, "math.add")
                front, target = _spawn("_proxy", server.url, loop, subject, loop=loop)
                started.append(front)
                pids["front"] = front.pid
            client = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "_client",
                    system,
                    target,
                    loop,
                    json.dumps(pids),
                    str(args.calls),
                    str(args.load),
                    str(args.concurrency),
                ],
                capture_output=True,
                text=True,
                timeout=600,
                env={**os.environ, "PYTHONPATH": _pythonpath(), "MICRO_EVENT_LOOP": loop},
                check=False,
            )
            if client.returncode != 0:
                raise RuntimeError(f"the {system} client failed: {client.stderr[-2000:]}")
            result: dict[str, Any] = json.loads(client.stdout.strip().splitlines()[-1])
            return result
        finally:
            for process in reversed(started):
                _stop(process)
            server.stop()


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarise(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Medians of each figure and of the per-round ratios, by loop."""
    figures: dict[str, Any] = {}
    for key in rounds[0]:
        runs = [found[key] for found in rounds]
        entry: dict[str, Any] = {}
        for phase in ("sequential", "load"):
            entry[phase] = {
                name: _median([run[phase][name] for run in runs])
                for name in ("calls_per_s", "p50_us", "p99_us")
            }
            entry[phase]["cpu_us"] = {
                name: _median([run[phase]["cpu_us"][name] for run in runs])
                for name in runs[0][phase]["cpu_us"]
            }
            entry[phase]["cpu_us"]["total"] = _median(
                [sum(run[phase]["cpu_us"].values()) for run in runs]
            )
        figures[key] = entry
    ratios: dict[str, Any] = {}
    for loop in LOOPS:
        pairs = {"gateway/act": ("gateway", "act"), "gateway/proxy": ("gateway", "proxy")}
        for label, (top, bottom) in pairs.items():
            a, b = f"{top} {loop}", f"{bottom} {loop}"
            if a not in rounds[0] or b not in rounds[0]:
                continue
            ratios[f"{label} {loop}"] = {
                "throughput": _median(
                    [r[a]["load"]["calls_per_s"] / r[b]["load"]["calls_per_s"] for r in rounds]
                ),
                "p50": _median(
                    [r[a]["sequential"]["p50_us"] / r[b]["sequential"]["p50_us"] for r in rounds]
                ),
                "p99": _median(
                    [r[a]["sequential"]["p99_us"] / r[b]["sequential"]["p99_us"] for r in rounds]
                ),
                "cpu": _median(
                    [
                        sum(r[a]["load"]["cpu_us"].values()) / sum(r[b]["load"]["cpu_us"].values())
                        for r in rounds
                    ]
                ),
            }
    goals = []
    for loop in LOOPS:
        over_act = ratios.get(f"gateway/act {loop}")
        over_proxy = ratios.get(f"gateway/proxy {loop}")
        if over_act is not None:
            goals.append(
                {
                    "goal": f"gateway >= {GOAL_OVER_ACT}x act, {loop}",
                    "measured": over_act["throughput"],
                    "cpu_ratio": over_act["cpu"],
                    "met": over_act["throughput"] >= GOAL_OVER_ACT,
                }
            )
        if over_proxy is not None:
            goals.append(
                {
                    "goal": f"gateway ahead of the Starlette proxy, {loop}",
                    "measured": over_proxy["throughput"],
                    "cpu_ratio": over_proxy["cpu"],
                    "met": over_proxy["throughput"] > 1.0,
                }
            )
    return {"figures": figures, "ratios": ratios, "goals": goals}


def show(summary: dict[str, Any], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(
        title=f"math.add, {args.concurrency} in flight: medians of {args.rounds} round(s)",
        caption="CPU in µs per call during the phase (client / gateway or proxy / service / "
        "nats-server = total)",
    )
    for column in ("system", "calls/s", "CPU/call", "seq p50 µs", "p99 µs", "seq CPU/call"):
        table.add_column(column, justify="left" if column == "system" else "right")

    def cpu(figures: dict[str, float]) -> str:
        parts = [figures.get(name, 0.0) for name in ("client", "front", "service", "nats")]
        return " / ".join(f"{part:.0f}" for part in parts) + f" = {figures['total']:.0f}"

    for name, entry in summary["figures"].items():
        table.add_row(
            name,
            f"{entry['load']['calls_per_s']:.0f}",
            cpu(entry["load"]["cpu_us"]),
            f"{entry['sequential']['p50_us']:.0f}",
            f"{entry['sequential']['p99_us']:.0f}",
            cpu(entry["sequential"]["cpu_us"]),
        )
    console.print(table)
    ratios = Table(title="ratios (median of the per-round ratios, same loop)")
    for column in ("pair", "throughput", "seq p50", "seq p99", "CPU/call"):
        ratios.add_column(column, justify="left" if column == "pair" else "right")
    for name, ratio in summary["ratios"].items():
        ratios.add_row(
            name,
            f"{ratio['throughput']:.2f}x",
            f"{ratio['p50']:.2f}x",
            f"{ratio['p99']:.2f}x",
            f"{ratio['cpu']:.2f}x",
        )
    console.print(ratios)
    for goal in summary["goals"]:
        mark = "met" if goal["met"] else "not met"
        console.print(
            f"{goal['goal']}: {goal['measured']:.2f}x the calls/s, {mark} "
            f"(CPU per call, all processes: {goal['cpu_ratio']:.2f}x)"
        )


def main() -> None:
    roles = {"_service": service_main, "_gateway": gateway_main, "_proxy": proxy_main}
    if len(sys.argv) > 1 and sys.argv[1] in roles:
        roles[sys.argv[1]](sys.argv[2], sys.argv[3])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_client":
        client_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--calls", type=int, default=1000, help="sequential calls (p50/p99)")
    parser.add_argument("--load", type=int, default=10000, help="calls with N in flight")
    parser.add_argument("--concurrency", type=int, default=32, help="calls in flight")
    parser.add_argument("--loops", default=",".join(LOOPS), help="asyncio,uvloop")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="act,gateway,proxy")
    parser.add_argument("--quick", action="store_true", help="1 round, small counts")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.calls, args.load = 1, 300, 2000
    for name in ("rounds", "calls", "load", "concurrency"):
        if not 1 <= getattr(args, name) <= 100_000:  # a bounded load, always
            parser.error(f"--{name} must be between 1 and 100000")
    loops = [loop for loop in args.loops.split(",") if loop]
    systems = [system for system in args.systems.split(",") if system]
    if not set(loops) <= set(LOOPS) or not set(systems) <= set(SYSTEMS):
        parser.error(f"loops are among {LOOPS}, systems among {SYSTEMS}")
    configs = [(system, loop) for loop in loops for system in systems]
    rounds: list[dict[str, dict[str, Any]]] = []
    for number in range(args.rounds):
        shift = number % len(configs)
        found: dict[str, dict[str, Any]] = {}
        for system, loop in configs[shift:] + configs[:shift]:
            found[f"{system} {loop}"] = run_system(system, loop, args)
            if not args.json:
                load = found[f"{system} {loop}"]["load"]
                print(
                    f"round {number + 1}: {system} {loop}: {load['calls_per_s']:.0f}/s, "
                    f"{sum(load['cpu_us'].values()):.0f} µs CPU/call",
                    file=sys.stderr,
                )
        rounds.append({key: found[key] for key in (f"{s} {lp}" for s, lp in configs)})
    summary = summarise(rounds)
    if args.json:
        print(json.dumps({**summary, "rounds": rounds}, indent=2))
    else:
        show(summary, args)


if __name__ == "__main__":
    main()
