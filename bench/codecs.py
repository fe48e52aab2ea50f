"""msgpack against JSON on the W1 shape: a service in its own process echoes the payload
back; the client here is a ``Micro`` calling ``act``.

Two payloads: about 1 KB of mixed fields (strings, integers, floats, booleans, a nested
list of objects) and about 100 KB (the same record many times). For each codec and
payload: sequential p50 over ``--sequential`` calls and throughput with ``--in-flight``
calls in flight over ``--total`` calls, plus the CPU the client and the service spent per
call. The codecs alternate (json, msgpack, json, msgpack...) for ``--rounds`` rounds and
the table gives the median of the rounds. Run: ``python bench/codecs.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from micro import Micro
from micro.testing import NatsServer

NAMESPACE = "bench"

SERVICE = f"""
import sys, threading
from micro import Micro
micro = Micro(nats_url=sys.argv[1], namespace={NAMESPACE!r}, service="echo", log_level="warning")
micro.add("echo", lambda request: request)
async def ready(_micro):
    print("ready", flush=True)
    def wait():
        sys.stdin.read()
        micro.stop()
    threading.Thread(target=wait, daemon=True).start()
micro.hook("on_start", ready)
micro.start()
"""


def record(index: int) -> dict[str, Any]:
    return {
        "id": f"order-{index:06d}",
        "customer": {"name": "Ann Example", "email": "ann@example.org", "vip": index % 2 == 0},
        "lines": [
            {"sku": f"sku-{index}-{line}", "quantity": line + 1, "price": 9.99 + line}
            for line in range(5)
        ],
        "total": 123.45 + index,
        "paid": True,
        "notes": "leave at the door, ring twice" * 3,
        "tags": ["express", "gift", "fragile"],
    }


def payload(size: int) -> dict[str, Any]:
    records = [record(0)]
    while len(str(records)) < size:
        records.append(record(len(records)))
    return {"records": records}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    micro: Micro, body: Any, args: argparse.Namespace, service: int
) -> dict[str, float]:
    async def call() -> None:
        await micro.act("echo", body)

    for _ in range(args.warmup):
        await call()
    latencies = []
    for _ in range(args.sequential):
        started = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - started)
    remaining = args.total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    client_cpu, service_cpu = time.process_time(), cpu_seconds(service)
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(args.in_flight)))
    elapsed = time.perf_counter() - started
    return {
        "p50_ms": statistics.median(latencies) * 1000,
        "throughput": args.total / elapsed,
        "client_cpu_us": (time.process_time() - client_cpu) / args.total * 1e6,
        "service_cpu_us": (cpu_seconds(service) - service_cpu) / args.total * 1e6,
    }


def start_service(url: str) -> subprocess.Popen[str]:
    service = subprocess.Popen(
        [sys.executable, "-c", SERVICE, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert service.stdout is not None
    assert service.stdout.readline().strip() == "ready"
    return service


async def run(args: argparse.Namespace, url: str) -> dict[tuple[str, str], list[dict[str, float]]]:
    bodies = {"1 KB": payload(1_000), "100 KB": payload(100_000)}
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    service = start_service(url)
    assert service.stdin is not None
    try:
        with Progress(transient=True) as progress:
            task = progress.add_task("codecs", total=args.rounds * len(bodies) * 2)
            for _round in range(args.rounds):
                for size, body in bodies.items():
                    for codec in ("json", "msgpack"):
                        async with Micro(
                            nats_url=url,
                            namespace=NAMESPACE,
                            service="caller",
                            log_level="warning",
                            codec=codec,
                        ) as micro:
                            assert await micro.act("echo", body) == body
                            figures = await measure(micro, body, args, service.pid)
                        results.setdefault((size, codec), []).append(figures)
                        progress.advance(task)
    finally:
        service.stdin.close()
        service.wait(15)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sequential", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--total", type=int, default=5000)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as store:
        server = NatsServer(store_dir=Path(store)).start()
        try:
            results = asyncio.run(run(args, server.url))
        finally:
            server.stop()
    table = Table(title=f"W1 echo, json vs msgpack (median of {args.rounds} alternated rounds)")
    for column in (
        "payload",
        "codec",
        "p50 ms",
        "calls/s",
        "÷ json",
        "client CPU µs/call",
        "service CPU µs/call",
    ):
        table.add_column(column, justify="right")
    for (size, codec), rounds in results.items():
        median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        json_rounds = results[(size, "json")]
        ratios = [
            m["throughput"] / j["throughput"] for m, j in zip(rounds, json_rounds, strict=True)
        ]
        table.add_row(
            size,
            codec,
            f"{median['p50_ms']:.3f}",
            f"{median['throughput']:,.0f}",
            f"{statistics.median(ratios):.2f}x",
            f"{median['client_cpu_us']:.0f}",
            f"{median['service_cpu_us']:.0f}",
        )
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
