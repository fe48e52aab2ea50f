"""W1 in CPU time: microseconds of CPU that one call costs the caller and the service.

Wall-clock figures swing widely on a shared machine; the CPU a process spends per call does
not, so this is the figure to compare two versions of micro by (run each alternately and
take medians). The service is bench/rpc.py's, in its own process; its CPU time is read from
``/proc`` (Linux). ``--otel`` runs the OpenTelemetry SDK with an in-memory span exporter in
both processes. Run: ``python bench/rpc_cpu.py [--calls N] [--otel]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import rpc  # the W1 service and its start/stop helpers

from micro import Micro
from micro.testing import NatsServer

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


async def measure(url: str, calls: int, in_flight: int) -> dict[str, float]:
    service = rpc.start_service(rpc.MICRO_SERVICE, url)
    micro = Micro(nats_url=url, namespace=rpc.NAMESPACE, service="caller", log_level="warning")
    await micro.open()
    payload = {"a": 2, "b": 3}
    try:
        for _ in range(1000):
            assert await micro.act("math.add", payload) == 5
        remaining = calls

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await micro.act("math.add", payload)

        client, served = time.process_time(), cpu_seconds(service.pid)
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        client, served = time.process_time() - client, cpu_seconds(service.pid) - served
    finally:
        await micro.close()
        rpc.stop_service(service)
    return {
        "caller_us": client / calls * 1e6,
        "service_us": served / calls * 1e6,
        "total_us": (client + served) / calls * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--otel", action="store_true", help="trace with the OTel SDK")
    args = parser.parse_args()
    os.environ.setdefault("MICRO_LOG_LEVEL", "warning")
    if args.otel:
        os.environ["BENCH_OTEL"] = "1"
        exec(rpc.OTEL_SDK)
    with tempfile.TemporaryDirectory() as store:
        server = NatsServer(store_dir=Path(store)).start()
        try:
            figures = asyncio.run(measure(server.url, args.calls, args.in_flight))
        finally:
            server.stop()
    print(json.dumps({key: round(value, 2) for key, value in figures.items()}))


if __name__ == "__main__":
    main()
