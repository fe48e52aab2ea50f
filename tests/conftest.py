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


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """``pytest`` alone runs in ``WORKERS`` processes. ``-n N`` picks the count, and ``-n 0``
    or ``-p no:xdist`` runs in this process, as do ``--pdb``, ``--trace`` and ``-s`` (which
    need this process's terminal) and a run of tests named one by one (``path::test``)."""
    if not config.pluginmanager.hasplugin("xdist") or hasattr(config, "workerinput"):
        return
    option = config.option
    if option.numprocesses is not None or option.usepdb or option.trace:
        return
    if option.capture == "no" or option.collectonly:
        return
    if config.args and all("::" in arg for arg in config.args):
        return  # named tests: starting workers would take longer than running them
    option.numprocesses = WORKERS
    if option.dist == "no":
        option.dist = "loadgroup"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests sharing a fixture of this suite that outlives one test (a built site, an npm
    install, a running portal) run on one worker, so it is set up once, not once per worker.

    A group is the fixture's folder for a session fixture of a conftest, else the module. A
    test already in an ``xdist_group`` keeps it. Tried first: xdist's worker reads the groups
    in its own hook.
    """
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        group = _shared_fixture_group(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


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


def _shared_fixture_group(item: pytest.Item) -> str | None:
    info = getattr(item, "_fixtureinfo", None)
    if info is None or item.path is None:
        return None
    module = str(item.path.relative_to(ROOT))
    group = None
    for definitions in info.name2fixturedefs.values():
        for definition in definitions:
            where = getattr(definition, "baseid", None)
            if definition.scope not in ("module", "session") or where is None:
                continue
            if where == "":
                continue  # a plugin's (micro.testing's nats-server): per worker and cheap
            if definition.scope == "session" and not where.endswith(".py"):
                return where  # a conftest's folder
            group = module
    return group


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
