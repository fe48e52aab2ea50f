"""Fixtures of the fault suite, and the table of its figures printed at the end of the run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from micro.testing import NatsServer
from micro.testing.cluster import NatsCluster
from tests.faults.support import FIGURES, Scenario, table

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
def scenarios() -> Iterator[list[Scenario]]:
    """Scenarios of a test; their bank processes are stopped at teardown, whatever happened.

    Ask for it after the server or cluster fixture: the banks then stop before NATS does.
    """
    started: list[Scenario] = []
    yield started
    for scenario in started:
        scenario.stop_banks()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server of this test alone (the test kills it)."""
    server = NatsServer(store_dir=tmp_path / "nats").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """Three routed nodes with JetStream, ``sync_interval: always``."""
    with NatsCluster(tmp_path / "cluster") as nodes:
        yield nodes


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FIGURES:
        return
    text = table(FIGURES)
    terminalreporter.write_sep("=", "fault injection figures")
    terminalreporter.write_line(text)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "faults.md").write_text(f"# Fault injection figures\n\n{text}\n")
