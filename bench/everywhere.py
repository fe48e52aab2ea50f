"""The blocking client and the WebSocket versus ``act``: the same command, in the same run.

A service serving ``math.add`` runs in its own process, a gateway in another, the callers
here, all on loopback against one nats-server started here.

- ``act``: the async client, sequential p50/p99.
- ``connect().act``: the blocking client from one thread (sequential p50/p99), then the
  throughput of 8 threads sharing one client.
- ``/ws``: one WebSocket, sequential p50/p99, then the throughput of ``--concurrency``
  calls in flight on the one socket.

Run: ``python bench/everywhere.py`` (``--calls``, ``--load``, ``--concurrency``).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table
from websockets.asyncio.client import connect as ws_connect

from micro import Micro, connect
from micro.testing import NatsServer

NAMESPACE = "benchevery"
ROOT = Path(__file__).resolve().parent.parent

SERVICE = f"""
import sys
from micro import Micro
micro = Micro(nats_url=sys.argv[1], namespace={NAMESPACE!r}, service="math", log_level="warning")
micro.add("math.add", lambda request: request["a"] + request["b"])
async def ready(_micro):
    print("ready", flush=True)
micro.hook("on_start", ready)
micro.start()
"""

GATEWAY = f"""
import asyncio, sys
from micro import Micro
from micro.gateway import Gateway, GatewaySettings

async def main():
    micro = Micro(nats_url=sys.argv[1], namespace={NAMESPACE!r}, service="gateway",
                  log_level="warning")
    gateway = Gateway(micro, GatewaySettings(port=0, required_services=["math"],
                                             ws_max_in_flight=1000))
    await gateway.start()
    print("ready", gateway.url, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await gateway.stop()
    await micro.close()
asyncio.run(main())
"""


def _start(source: str, url: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-c", source, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("ready"):
        process.kill()
        raise RuntimeError(f"did not start: {line!r}")
    return process, line.split()[-1]


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1e6, ordered[int(len(ordered) * 0.99) - 1] * 1e6


def _timed(call: Callable[[], object], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


async def _act(url: str, calls: int) -> list[float]:
    async with Micro(nats_url=url, namespace=NAMESPACE, log_level="warning") as micro:
        for _ in range(100):
            await micro.act("math.add", {"a": 1, "b": 2})
        samples = []
        for _ in range(calls):
            started = time.perf_counter()
            await micro.act("math.add", {"a": 1, "b": 2})
            samples.append(time.perf_counter() - started)
        return samples


async def _websocket(
    gateway: str, calls: int, load: int, concurrency: int
) -> tuple[list[float], float]:
    ids = itertools.count(1)
    async with ws_connect(gateway.replace("http://", "ws://") + "/ws", max_size=None) as ws:

        async def one() -> None:
            await ws.send(
                orjson.dumps(
                    {"id": next(ids), "act": "math.add", "payload": {"a": 1, "b": 2}}
                ).decode()
            )
            frame = orjson.loads(await ws.recv())
            assert frame["result"] == 3, frame

        for _ in range(100):
            await one()
        samples = []
        for _ in range(calls):
            started = time.perf_counter()
            await one()
            samples.append(time.perf_counter() - started)
        # Throughput: keep `concurrency` calls in flight; replies come in any order.
        started = time.perf_counter()
        sent = received = 0
        while sent < min(concurrency, load):
            await ws.send(
                orjson.dumps(
                    {"id": next(ids), "act": "math.add", "payload": {"a": 1, "b": 2}}
                ).decode()
            )
            sent += 1
        while received < load:
            frame = orjson.loads(await ws.recv())
            assert frame["result"] == 3, frame
            received += 1
            if sent < load:
                await ws.send(
                    orjson.dumps(
                        {"id": next(ids), "act": "math.add", "payload": {"a": 1, "b": 2}}
                    ).decode()
                )
                sent += 1
        return samples, load / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--load", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    options = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as folder:
        server = NatsServer(store_dir=Path(folder)).start()
        service, _ = _start(SERVICE, server.url)
        gateway_process, gateway = _start(GATEWAY, server.url)
        try:
            act = asyncio.run(_act(server.url, options.calls))
            with connect(nats_url=server.url, namespace=NAMESPACE, log_level="warning") as client:
                _timed(lambda: client.act("math.add", {"a": 1, "b": 2}), 100)
                blocking = _timed(lambda: client.act("math.add", {"a": 1, "b": 2}), options.calls)
                per_thread = options.load // 8
                barrier = threading.Barrier(8)

                def work(_: int) -> None:
                    barrier.wait()
                    for _ in range(per_thread):
                        client.act("math.add", {"a": 1, "b": 2})

                started = time.perf_counter()
                with ThreadPoolExecutor(8) as pool:
                    list(pool.map(work, range(8)))
                threads_rate = per_thread * 8 / (time.perf_counter() - started)
            ws, ws_rate = asyncio.run(
                _websocket(gateway, options.calls, options.load, options.concurrency)
            )
        finally:
            for process in (gateway_process, service):
                if process.stdin is not None:
                    process.stdin.close()
                process.terminate()
                process.wait(20)
            server.stop()
    table = Table(title="math.add: the async client, the blocking client, the WebSocket")
    for column in ("path", "p50 µs", "p99 µs", "throughput calls/s"):
        table.add_column(column)
    table.add_row("act (async)", *(f"{v:.0f}" for v in _percentiles(act)), "")
    table.add_row(
        "connect().act (blocking)",
        *(f"{v:.0f}" for v in _percentiles(blocking)),
        f"{threads_rate:.0f} (8 threads, one client)",
    )
    table.add_row(
        "/ws (one socket)",
        *(f"{v:.0f}" for v in _percentiles(ws)),
        f"{ws_rate:.0f} ({options.concurrency} in flight)",
    )
    console.print(table)


if __name__ == "__main__":
    main()
