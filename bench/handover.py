"""The embedded broker's handover: how long a service is cut off when the owner goes.

Each round starts two services with no NATS_URL on a free port in a fresh folder (the first
starts the embedded nats-server, the second stands by), stops the first with SIGTERM or
kill -9, and measures from the signal until the second service answers a call again. The
caller is this process, connected with NATS_URL, so it takes no part in the handover.

Run: ``python bench/handover.py`` (``--rounds N``, ``--json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from micro import Micro, Settings

ROOT = Path(__file__).resolve().parent.parent
SECOND = (
    "from micro import Micro\nMicro(service='second').add('add one', lambda n: n + 1).start()\n"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "micro.cli", "run", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_serving(process: subprocess.Popen[str], timeout: float = 30) -> None:
    assert process.stderr is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        if '"serving"' in line:
            return
    raise RuntimeError("the service did not start")


async def answer_again(url: str, timeout: float = 30) -> float:
    """Seconds until ``add one`` answers; polled every 10 ms."""
    began = time.monotonic()
    settings = Settings(nats_url=url, embedded=False, service="bench", connect_timeout=0.5)
    while time.monotonic() - began < timeout:
        try:
            async with Micro(settings) as micro:
                if await micro.act("add one", 1, timeout=0.5) == 2:
                    return time.monotonic() - began
        except Exception:  # not back yet: ask again
            await asyncio.sleep(0.01)
    raise RuntimeError(f"no answer within {timeout}s")


def one_round(stop: signal.Signals) -> float:
    with tempfile.TemporaryDirectory() as folder:
        cwd = Path(folder)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MICRO_", "NATS_"))}
        env.update(
            MICRO_EMBEDDED_PORT=str(port),
            MICRO_LOG_FORMAT="json",
            PYTHONPATH=str(ROOT),
            TMPDIR=str(cwd),
        )
        (cwd / "second.py").write_text(SECOND)
        owner = start([str(ROOT / "samples" / "simplest")], env, cwd)
        second = None
        try:
            wait_serving(owner)
            second = start([str(cwd / "second.py")], env, cwd)
            wait_serving(second)
            url = f"nats://127.0.0.1:{port}"
            signalled = time.monotonic()
            owner.send_signal(stop)
            owner.wait(30)
            # Not answered by the old server still shutting down: wait for the new one.
            record = cwd / f"micro-{os.getuid()}" / f"nats-{port}.json"
            deadline = signalled + 30
            while json.loads(record.read_text())["owner"] == owner.pid:
                if time.monotonic() > deadline:
                    raise RuntimeError("nobody took the broker over")
                time.sleep(0.005)
            asyncio.run(answer_again(url))
            return time.monotonic() - signalled
        finally:
            for process in (owner, second):
                if process is not None and process.poll() is None:
                    process.terminate()
                    process.wait(30)
                if process is not None and process.stderr is not None:
                    process.stderr.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    results: dict[str, list[float]] = {}
    for stop in (signal.SIGTERM, signal.SIGKILL):
        results[stop.name] = [one_round(stop) for _ in range(max(1, min(options.rounds, 20)))]
    if options.json:
        print(json.dumps(results))
        return
    table = Table(title="embedded broker handover: signal to the second service answering")
    for column in ("owner stopped by", "rounds", "median s", "max s"):
        table.add_column(column)
    for name, seconds in results.items():
        table.add_row(
            name,
            str(len(seconds)),
            f"{statistics.median(seconds):.2f}",
            f"{max(seconds):.2f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
