"""Shared helpers for micro's own tests (the nats-server fixtures come from micro.testing)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from micro.settings import Settings

ROOT = Path(__file__).resolve().parent.parent

# Randomized tests are the same on every run, so CI cannot go red by chance: examples come
# from a fixed derivation, and no example database carries one run's finds into the next.
# MICRO_FUZZ_EXPLORE=1 (or --hypothesis-profile=explore) draws new random examples instead;
# every failure it finds becomes an explicit example in the test that found it.
# No per-example deadline: on a loaded machine one slow example is not a failure.
hypothesis_settings.register_profile(
    "ci", derandomize=True, database=None, print_blob=True, deadline=None
)
hypothesis_settings.register_profile("explore", database=None, max_examples=200)
hypothesis_settings.load_profile("explore" if os.environ.get("MICRO_FUZZ_EXPLORE") else "ci")


class ServiceProcess:
    """A Python service in its own process; it prints ``ready`` once serving."""

    def __init__(self, source: str, settings: Settings, **env: str) -> None:
        environment = {
            **os.environ,
            "NATS_URL": settings.nats_url or "",
            "MICRO_NAMESPACE": settings.namespace,
            "MICRO_EMBEDDED": "false",
            "MICRO_LOG_FORMAT": "json",
            "PYTHONPATH": str(ROOT),
            **env,
        }
        self.process = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(source)],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if "ready" not in line:
            self.process.kill()
            _, errors = self.process.communicate(timeout=10)
            raise RuntimeError(f"service did not start: {line!r} {errors[-2000:]}")

    @property
    def pid(self) -> int:
        return self.process.pid

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 20) -> int:
        return self.process.wait(timeout)

    def stop(self) -> tuple[str, str]:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            out, err = self.process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, err = self.process.communicate()
        return out, err


SERVE_PRELUDE = """
import asyncio, os, sys
from micro import Micro

async def announce(micro):
    print("ready", flush=True)
"""


@pytest.fixture
def spawn(micro_settings: Settings) -> Iterator[type[ServiceProcess]]:
    """Start service processes on this test's server and namespace; stopped at teardown."""
    started: list[ServiceProcess] = []

    class Spawned(ServiceProcess):
        def __init__(self, source: str, **env: str) -> None:
            super().__init__(SERVE_PRELUDE + textwrap.dedent(source), micro_settings, **env)
            started.append(self)

    yield Spawned  # type: ignore[misc]
    for process in started:
        process.stop()
