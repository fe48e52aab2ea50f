"""Fixtures for the module tests: logs captured as JSON lines, configuration restored after."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from micro.log import configure_logging
from tests.modules.support import LogLines


@pytest.fixture
def log_lines() -> Iterator[LogLines]:
    lines = LogLines()
    configure_logging("debug", "json", lines, force=True)
    yield lines
    configure_logging(force=True)  # back to micro's default: info, stderr
