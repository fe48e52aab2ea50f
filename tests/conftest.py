"""Shared helpers for micro's own tests (the nats-server fixtures come from micro.testing)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings

from micro.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
FAULT_FIGURES = "fault figures"
"""``tests.faults.support.FIGURES_PROPERTY``, named here so this conftest imports no test."""

# The esdb tests load gRPC into this process, and the suites fork servers and services from it
# (subprocess with preexec_fn): gRPC's fork handlers, skipped while its threads are busy, left a
# forked child on a broken poller that never reached exec. The children exec at once and need
# none of gRPC's state. Read when gRPC initialises, so set before any test module imports it.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

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

WORKERS = 3
"""Processes a plain ``pytest`` runs the suite in (pytest-xdist). Most tests wait on a server,
a child process or a deadline rather than compute, so three keep CI's two cores busy."""

ONE_WORKER = {
    # The bank loaded through injected faults: minutes of scenarios, run one after another
    # as in a serial run, so no two loads share the CPU. The longest unit: it starts first.
    "fault scenarios": (
        "tests/faults/test_partitions.py",
        "tests/faults/test_soak.py",
        "tests/faults/test_faults.py",
        "tests/faults/test_overload.py",
        "tests/faults/test_esdb_store.py",
    ),
    # One portal (a session fixture) and one browser at a time.
    "portal": ("tests/e2e/",),
}
"""Files whose tests one worker runs, beyond the file itself, the unit of every other test."""


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """``pytest`` alone runs in ``WORKERS`` processes, a file to a worker (its module
    fixtures are set up once). ``-n N`` picks the count, and ``-n 0`` or ``-p no:xdist`` runs
    in this process, as do ``--pdb``, ``--trace`` and ``-s`` (which need this process's
    terminal), a run of tests named one by one (``path::test``) and a pytest started by a
    test."""
    if not config.pluginmanager.hasplugin("xdist") or hasattr(config, "workerinput"):
        return
    option = config.option
    if option.numprocesses is None:
        if option.usepdb or option.trace or option.capture == "no" or option.collectonly:
            return
        if config.args and all("::" in arg for arg in config.args):
            return  # named tests: starting workers would take longer than running them
        if os.environ.get("PYTEST_XDIST_WORKER"):
            return  # a pytest that a test of a parallel run starts: it has its worker's share
        option.numprocesses = WORKERS
    if option.numprocesses and option.dist == "no":
        option.dist = "loadfile"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadfile`` as xdist does it, with the files of ``ONE_WORKER`` as one unit each."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class Scheduling(LoadFileScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            for unit, paths in ONE_WORKER.items():
                if path.startswith(paths):
                    return unit
            return path

        def _assign_work_unit(self, node: Any) -> None:
            if "fault scenarios" in self.workqueue:
                self.workqueue.move_to_end("fault scenarios", last=False)
            super()._assign_work_unit(node)

    return Scheduling(config, log)


_fault_rows: list[dict[str, Any]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # Teardown's report carries what the whole test recorded; with xdist, the main process
    # gets every worker's reports here.
    if report.when == "teardown":
        _fault_rows.extend(value for name, value in report.user_properties if name == FAULT_FIGURES)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    if not _fault_rows or hasattr(config, "workerinput"):
        return
    from tests.faults.support import table

    text = table(_fault_rows)
    terminalreporter.write_sep("=", "fault injection figures")
    terminalreporter.write_line(text)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "faults.md").write_text(f"# Fault injection figures\n\n{text}\n")


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
