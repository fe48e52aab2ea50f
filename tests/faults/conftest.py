"""Fixtures of the fault suite; each test's figures go to its report for the end-of-run table."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from micro.testing import NatsServer
from micro.testing.cluster import NatsCluster
from micro.testing.partition import PartitionCluster, partition_unavailable
from tests.faults.support import FIGURES, FIGURES_PROPERTY, Scenario


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


@pytest.fixture
def partition_cluster(tmp_path: Path) -> Iterator[PartitionCluster]:
    """Three nodes, each in a network namespace of its own; skipped where the rig cannot run."""
    reason = partition_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with PartitionCluster(tmp_path / "cluster") as nodes:
        yield nodes


@pytest.fixture(autouse=True)
def _report_figures(request: pytest.FixtureRequest) -> Iterator[None]:
    """Hand the figures a test measured to its report: a parallel run's workers send them to
    the main process, which prints the table (``tests/conftest.py``)."""
    before = len(FIGURES)
    yield
    for row in FIGURES[before:]:
        request.node.user_properties.append((FIGURES_PROPERTY, dataclasses.asdict(row)))
