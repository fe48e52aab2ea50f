"""Discovery at thousands of instances: complete answers, their cost, and the gateway's routes.

N ``Micro`` instances (each its own NATS connection, two typed commands, so
their ``INFO`` carries JSON Schemas) run over P worker processes against one nats-server
started here; instance ``i`` serves service ``svc<i mod S>``. For each N:

- **rounds**: 20 looks with ``list_services`` (default gap 0.3 s, deadline 5 s, lean INFO as
  the directory asks): seconds until the look returned, instances seen, partial or not;
  the CPU per round of the nats-server and of the worker processes (from /proc), and the
  machine's load average (the figures depend on what else runs); and for contrast one
  look with the old fixed quarter-second window.
- **bytes**: one raw ``$SRV.PING``, lean ``INFO`` and full ``INFO`` request, every reply
  counted: replies, bytes per reply, bytes per round.
- **gateway** (``--gateway-seconds``, at the largest N): a ``Gateway`` follows discovery
  (refresh every 5 s); every 0.5 s the bench checks that every live instance is in its
  directory and every service has its routes, and counts each miss.

Run: ``python bench/discovery.py`` (500, 1,000, 2,000, 5,000 over 10 processes, gateway 60 s);
``--instances 2000 --gateway-seconds 300`` for the five-minute gateway run; ``--announce
2000`` for how fast a gateway that polls once a minute sees 2,000 instances start and stop
(their announcements); ``--quick`` for a small smoke run. Every loop is bounded in count and time; everything binds 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
import orjson
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from micro import Micro, Settings
from micro.discovery import LEAN_INFO_REQUEST, list_services
from micro.log import configure_logging
from micro.testing import NatsServer, wait_until

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "bench"
OPENING_AT_ONCE = 25


class Deposit(BaseModel):
    account: str
    amount: int


class Balance(BaseModel):
    account: str


def deposit(request: Deposit) -> int:
    return request.amount


def balance(request: Balance) -> int:
    return 0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- the worker processes --------------------------------------------------------------------


async def worker(url: str, first: int, count: int, services: int) -> None:
    """Open ``count`` instances, say ``ready``, serve until stdin closes, close them."""
    configure_logging(level="warning")
    settings = Settings(nats_url=url, namespace=NAMESPACE, embedded=False, log_level="warning")
    instances = []
    for index in range(first, first + count):
        micro = Micro(settings, service=f"svc{index % services}")
        micro.add(f"svc{index % services} deposit", deposit)
        micro.add(f"svc{index % services} balance", balance)
        instances.append(micro)
    for start in range(0, count, OPENING_AT_ONCE):
        await asyncio.gather(*(m.open() for m in instances[start : start + OPENING_AT_ONCE]))
    sys.stdout.write(f"ready {os.getpid()}\n")
    sys.stdout.flush()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for start in range(0, count, OPENING_AT_ONCE * 4):
        await asyncio.gather(*(m.close() for m in instances[start : start + OPENING_AT_ONCE * 4]))


class Workers:
    """P worker processes holding N instances between them."""

    def __init__(self, url: str, instances: int, processes: int, services: int) -> None:
        self.processes: list[subprocess.Popen[str]] = []
        share, extra = divmod(instances, processes)
        first = 0
        for number in range(processes):
            count = share + (1 if number < extra else 0)
            self.processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--worker",
                        f"{url},{first},{count},{services}",
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    cwd=ROOT,
                )
            )
            first += count

    def wait_ready(self, timeout: float) -> float:
        started = time.monotonic()
        for process in self.processes:
            assert process.stdout is not None
            line = process.stdout.readline()  # bounded: a worker that dies ends its stdout
            if not line.startswith("ready"):
                raise RuntimeError(f"a worker failed to start (exit {process.poll()})")
            if time.monotonic() - started > timeout:
                raise RuntimeError("workers took too long to start")
        return time.monotonic() - started

    def rss_mb(self) -> float:
        return sum(rss_mb(process.pid) for process in self.processes)

    def stop(self) -> None:
        for process in self.processes:
            if process.stdin is not None:
                process.stdin.close()
        for process in self.processes:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()


# -- measuring -------------------------------------------------------------------------------


async def wire_bytes(url: str, subject: str, body: bytes, settle: float = 1.0) -> dict[str, Any]:
    """Replies and bytes for one raw request, gathered until ``settle`` quiet seconds."""
    client = await nats.connect(url)
    sizes: list[int] = []
    inbox = client.new_inbox()
    subscription = await client.subscribe(inbox)
    await client.publish(subject, body, reply=inbox)
    end = time.monotonic() + 30
    while time.monotonic() < end:
        try:
            # The first reply may take a while at thousands of instances; then settle.
            msg = await subscription.next_msg(timeout=settle if sizes else 10)
        except (nats.errors.TimeoutError, TimeoutError):
            break
        sizes.append(len(msg.data))
    await client.close()
    return {
        "replies": len(sizes),
        "bytes_per_reply": statistics.mean(sizes) if sizes else 0,
        "bytes_per_round": sum(sizes),
    }


async def rounds(
    url: str, server_pid: int, worker_pids: list[int], expected: int, count: int
) -> dict[str, Any]:
    client = await nats.connect(url)
    times: list[float] = []
    seen: list[int] = []
    partial = 0
    load = os.getloadavg()[0]
    cpu = cpu_seconds(server_pid)
    workers_cpu = sum(cpu_seconds(pid) for pid in worker_pids)
    for _ in range(count):
        started = time.monotonic()
        found = await list_services(client, namespace=NAMESPACE, schemas=False)
        times.append(time.monotonic() - started)
        seen.append(len(found))
        partial += found.partial
    server_cpu = (cpu_seconds(server_pid) - cpu) / count
    workers_cpu = (sum(cpu_seconds(pid) for pid in worker_pids) - workers_cpu) / count
    load = max(load, os.getloadavg()[0])
    old = await list_services(client, namespace=NAMESPACE, gap=0.25, deadline=0.25)
    await client.close()
    return {
        "complete": sum(1 for n in seen if n == expected),
        "rounds": count,
        "min_seen": min(seen),
        "partial": partial,
        "p50_s": statistics.median(times),
        "max_s": max(times),
        "server_cpu_ms": server_cpu * 1000,
        "workers_cpu_ms": workers_cpu * 1000,
        "load_average": load,
        "old_window_seen": len(old),
    }


async def follow_with_gateway(
    url: str, instances: int, services: int, seconds: float
) -> dict[str, Any]:
    from micro.gateway import Gateway, GatewaySettings

    settings = Settings(nats_url=url, namespace=NAMESPACE, embedded=False, log_level="warning")
    micro = Micro(settings, service="gateway")
    await micro.open()
    gateway = Gateway(micro, GatewaySettings(host="127.0.0.1", port=0, refresh_interval=5.0))
    await gateway.start()
    checks = instance_misses = route_misses = 0
    least = instances
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            await asyncio.sleep(0.5)
            checks += 1
            have = len(gateway.records)
            least = min(least, have)
            instance_misses += have < instances
            routed = {operation.service for operation in gateway.table.operations}
            route_misses += len(routed) < services
        directory = gateway.directory
        looks = directory.rounds if directory is not None else 0
    finally:
        await gateway.stop()
        await micro.close()
    return {
        "seconds": seconds,
        "checks": checks,
        "looks": looks,
        "least_instances": least,
        "checks_missing_an_instance": instance_misses,
        "checks_missing_a_route": route_misses,
    }


async def announced(url: str, instances: int, processes: int) -> dict[str, Any]:
    """A gateway that polls only once a minute sees N instances start and stop: the
    announcements, not its looks, bring them in and take them out."""
    from micro.gateway import Gateway, GatewaySettings

    services = max(100, instances // 10)
    settings = Settings(nats_url=url, namespace=NAMESPACE, embedded=False, log_level="warning")
    micro = Micro(settings, service="gateway")
    await micro.open()
    gateway = Gateway(micro, GatewaySettings(host="127.0.0.1", port=0, refresh_interval=60.0))
    await gateway.start()
    figures: dict[str, Any] = {"instances": instances}
    try:
        looks = gateway.directory.rounds if gateway.directory is not None else 0
        started = time.monotonic()
        workers = Workers(url, instances, processes, services)
        try:
            await asyncio.to_thread(workers.wait_ready, 900)
            ready = time.monotonic()
            with contextlib.suppress(AssertionError):
                await wait_until(lambda: len(gateway.records) >= instances, 60, interval=0.05)
            figures["shown"] = len(gateway.records)
            figures["all_shown_after_ready_s"] = time.monotonic() - ready
            figures["start_s"] = ready - started
        finally:
            stopping = time.monotonic()
            await asyncio.to_thread(workers.stop)
            figures["workers_closed_s"] = time.monotonic() - stopping
        with contextlib.suppress(AssertionError):
            await wait_until(lambda: not gateway.records, 60, interval=0.05)
        figures["left"] = len(gateway.records)
        figures["all_gone_after_stop_s"] = time.monotonic() - stopping
        directory = gateway.directory
        figures["looks"] = (directory.rounds if directory is not None else 0) - looks
    finally:
        await gateway.stop()
        await micro.close()
    return figures


async def measure(
    server: NatsServer, instances: int, processes: int, gateway_seconds: float, count: int
) -> dict[str, Any]:
    services = max(100, instances // 10)
    workers = Workers(server.url, instances, processes, services)
    try:
        started = await asyncio.to_thread(workers.wait_ready, 900)
        assert server.pid is not None
        figures: dict[str, Any] = {
            "instances": instances,
            "services": services,
            "processes": processes,
            "start_s": started,
            "workers_rss_mb": workers.rss_mb(),
            "server_rss_mb": rss_mb(server.pid),
        }
        pids = [process.pid for process in workers.processes]
        figures["rounds"] = await rounds(server.url, server.pid, pids, instances, count)
        figures["ping"] = await wire_bytes(server.url, "$SRV.PING", b"")
        figures["lean_info"] = await wire_bytes(server.url, "$SRV.INFO", LEAN_INFO_REQUEST)
        figures["full_info"] = await wire_bytes(server.url, "$SRV.INFO", b"")
        if gateway_seconds > 0:
            figures["gateway"] = await follow_with_gateway(
                server.url, instances, services, gateway_seconds
            )
        return figures
    finally:
        await asyncio.to_thread(workers.stop)


def report(results: list[dict[str, Any]]) -> None:
    console = Console(width=200)
    table = Table(title="discovery: 20 looks per size (gap 0.3 s, deadline 5 s)")
    for column in (
        "instances (services) / procs",
        "complete looks",
        "look p50 / max s",
        "partial",
        "old 0.25 s window saw",
        "CPU ms/look: server, instances",
        "load avg",
        "ping B/reply",
        "lean INFO B/reply (round)",
        "full INFO B/reply (round)",
        "workers RSS MB",
    ):
        table.add_column(column)
    for figures in results:
        r = figures["rounds"]
        table.add_row(
            f"{figures['instances']:,} ({figures['services']}) / {figures['processes']}",
            f"{r['complete']}/{r['rounds']} (least {r['min_seen']:,})",
            f"{r['p50_s']:.2f} / {r['max_s']:.2f}",
            str(r["partial"]),
            f"{r['old_window_seen']:,}",
            f"{r['server_cpu_ms']:.0f}, {r['workers_cpu_ms']:.0f}",
            f"{r['load_average']:.1f}",
            f"{figures['ping']['bytes_per_reply']:.0f}",
            f"{figures['lean_info']['bytes_per_reply']:.0f} "
            f"({figures['lean_info']['bytes_per_round'] / 1e6:.2f} MB)",
            f"{figures['full_info']['bytes_per_reply']:.0f} "
            f"({figures['full_info']['bytes_per_round'] / 1e6:.2f} MB)",
            f"{figures['workers_rss_mb']:.0f}",
        )
    console.print(table)
    for figures in results:
        if "gateway" in figures:
            g = figures["gateway"]
            console.print(
                f"gateway at {figures['instances']:,} instances for {g['seconds']:.0f} s: "
                f"{g['looks']} looks, {g['checks']} checks, least instances seen "
                f"{g['least_instances']:,}, checks missing an instance "
                f"{g['checks_missing_an_instance']}, missing a route "
                f"{g['checks_missing_a_route']}"
            )


async def main(arguments: argparse.Namespace) -> None:
    configure_logging(level="warning")
    sizes = [int(size) for size in arguments.instances.split(",")]
    results = []
    with tempfile.TemporaryDirectory() as folder:
        server = NatsServer(store_dir=Path(folder) / "nats").start()
        try:
            if arguments.announce:
                figures = await announced(server.url, arguments.announce, arguments.processes)
                print(orjson.dumps(figures).decode(), flush=True)
                return
            for size in sizes:
                gateway = arguments.gateway_seconds if size == max(sizes) else 0
                figures = await measure(
                    server, size, arguments.processes, gateway, arguments.rounds
                )
                results.append(figures)
                print(orjson.dumps(figures).decode(), flush=True)
        finally:
            server.stop()
    report(results)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", default="500,1000,2000,5000")
    parser.add_argument("--processes", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--gateway-seconds", type=float, default=60.0)
    parser.add_argument("--quick", action="store_true", help="100 and 300 instances, 10 s")
    parser.add_argument(
        "--announce",
        type=int,
        default=0,
        help="only this: N instances start and stop under a gateway that polls once a minute",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        url, first, count, services = options.worker.split(",")
        asyncio.run(worker(url, int(first), int(count), int(services)))
    else:
        if options.quick:
            options.instances, options.gateway_seconds, options.rounds = "100,300", 10.0, 5
        asyncio.run(main(options))
