"""Fixtures for the module tests: logs captured as JSON lines, configuration restored after."""

from __future__ import annotations

import io
from collections.abc import Iterator

import orjson
import pytest

from micro.log import configure_logging


class LogLines(io.StringIO):
    """Everything logged while the fixture is active, one JSON object per line."""

    def records(self) -> list[dict[str, object]]:
        return [orjson.loads(line) for line in self.getvalue().splitlines() if line.strip()]


@pytest.fixture
def log_lines() -> Iterator[LogLines]:
    lines = LogLines()
    configure_logging("debug", "json", lines, force=True)
    yield lines
    configure_logging(force=True)  # back to micro's default: info, stderr
