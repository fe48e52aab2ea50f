"""The HTTP gateway versus ``act``: the same command, measured in the same run.

A service serving ``math.add`` ({a, b} -> a + b, typed, so both paths validate) runs in its
own process, the gateway in another, the client here, all on loopback against one
nats-server. For each path: sequential p50/p99 over ``--calls`` calls after a warm-up, and
throughput with ``--concurrency`` calls in flight over ``--load`` calls.

The HTTP client is a minimal HTTP/1.1 client on asyncio streams, one keep-alive connection
per worker (a pool of ``--concurrency``): httpx's async pool costs the client more CPU than
the gateway costs the server, which would measure httpx rather than the gateway
(``--httpx`` measures with it anyway).

Run: ``python bench/gateway.py`` (``--json`` for machine-readable output).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from micro import Micro
from micro.testing import NatsServer

NAMESPACE = "benchgw"
ROOT = Path(__file__).resolve().parent.parent

SERVICE = f"""
import sys
from pydantic import BaseModel
from micro import Micro

class Numbers(BaseModel):
    a: int
    b: int

def add(request: Numbers) -> int:
    return request.a + request.b

micro = Micro(nats_url=sys.argv[1], namespace={NAMESPACE!r}, service="math", log_level="warning")
micro.add("math.add", add)
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
    gateway = Gateway(micro, GatewaySettings(port=0, required_services=["math"]))
    await micro.open()
    await micro.discover(wait_for=["math"], timeout=10)
    await gateway.start()
    print("ready", gateway.url, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await gateway.stop()
    await micro.close()
asyncio.run(main())
"""


def _spawn(source: str, url: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-c", source, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "MICRO_LOG_FORMAT": "json"},
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("ready"):
        process.kill()
        raise RuntimeError(f"a bench process did not start: {line!r}")
    return process, line


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


async def _measure(
    call: Callable[[int], Awaitable[None]], calls: int, load: int, concurrency: int
) -> dict[str, float]:
    for number in range(min(200, calls)):  # warm-up: connections, caches, JIT-less paths
        await call(number)
    latencies = []
    for number in range(calls):
        started = time.perf_counter()
        await call(number)
        latencies.append(time.perf_counter() - started)
    latencies.sort()
    next_call = 0

    async def worker() -> None:
        nonlocal next_call
        while next_call < load:
            next_call += 1
            await call(next_call)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "requests_per_s": load / elapsed,
    }


class _Connection:
    """One keep-alive HTTP/1.1 connection: JSON POSTs, replies read by Content-Length."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, url: str) -> _Connection:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        return cls(reader, writer)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def run(args: argparse.Namespace, url: str, gateway_url: str) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    async with Micro(
        nats_url=url, namespace=NAMESPACE, service="client", log_level="warning"
    ) as micro:

        async def direct(number: int) -> None:
            assert await micro.act("math.add", {"a": number, "b": 1}) == number + 1

        results["act"] = await _measure(direct, args.calls, args.load, args.concurrency)
    if args.httpx:
        limits = httpx.Limits(
            max_connections=args.concurrency, max_keepalive_connections=args.concurrency
        )
        async with httpx.AsyncClient(base_url=gateway_url, limits=limits, timeout=10) as client:

            async def with_httpx(number: int) -> None:
                response = await client.post("/api/math/add", json={"a": number, "b": 1})
                assert response.status_code == 200, response.text
                assert response.json() == number + 1

            results["gateway (httpx)"] = await _measure(
                with_httpx, args.calls, args.load, args.concurrency
            )
    pool: asyncio.Queue[_Connection] = asyncio.Queue()
    for _ in range(args.concurrency):
        pool.put_nowait(await _Connection.open(gateway_url))

    async def over_http(number: int) -> None:
        connection = await pool.get()
        try:
            status, body = await connection.post(
                "/api/math/add", json.dumps({"a": number, "b": 1}).encode()
            )
        finally:
            pool.put_nowait(connection)
        assert status == 200, body
        assert json.loads(body) == number + 1

    results["gateway"] = await _measure(over_http, args.calls, args.load, args.concurrency)
    while not pool.empty():
        pool.get_nowait().close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1000, help="sequential calls for latency")
    parser.add_argument("--load", type=int, default=5000, help="calls for throughput")
    parser.add_argument("--concurrency", type=int, default=32, help="calls in flight")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--httpx", action="store_true", help="also measure with httpx")
    args = parser.parse_args()
    for name in ("calls", "load", "concurrency"):
        if not 1 <= getattr(args, name) <= 100_000:  # a bounded load, always
            parser.error(f"--{name} must be between 1 and 100000")
    with tempfile.TemporaryDirectory() as store:
        server = NatsServer(store_dir=Path(store)).start()
        service = gateway = None
        try:
            service, _ = _spawn(SERVICE, server.url)
            gateway, line = _spawn(GATEWAY, server.url)
            found = re.search(r"http://\S+", line)
            assert found is not None
            results = asyncio.run(run(args, server.url, found.group(0)))
        finally:
            for process in (gateway, service):
                if process is not None:
                    _stop(process)
            server.stop()
    ratio = {
        "throughput": results["gateway"]["requests_per_s"] / results["act"]["requests_per_s"],
        "p50": results["gateway"]["p50_ms"] / results["act"]["p50_ms"],
        "p99": results["gateway"]["p99_ms"] / results["act"]["p99_ms"],
    }
    if args.json:
        print(json.dumps({"results": results, "gateway_over_act": ratio}, indent=2))
        return
    table = Table(title=f"math.add: gateway (HTTP) vs act, {args.concurrency} in flight")
    for column in ("path", "requests/s", "p50 ms", "p99 ms"):
        table.add_column(column, justify="right" if column != "path" else "left")
    for name, figures in results.items():
        table.add_row(
            name,
            f"{figures['requests_per_s']:.0f}",
            f"{figures['p50_ms']:.3f}",
            f"{figures['p99_ms']:.3f}",
        )
    table.add_row(
        "gateway / act",
        f"{ratio['throughput']:.2f}x",
        f"{ratio['p50']:.2f}x",
        f"{ratio['p99']:.2f}x",
    )
    Console().print(table)


if __name__ == "__main__":
    main()
