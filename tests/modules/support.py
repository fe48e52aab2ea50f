"""What the module tests share: logs captured as JSON lines."""

from __future__ import annotations

import io

import orjson

__all__ = ["LogLines"]


class LogLines(io.StringIO):
    """Everything logged while the fixture is active, one JSON object per line."""

    def records(self) -> list[dict[str, object]]:
        return [orjson.loads(line) for line in self.getvalue().splitlines() if line.strip()]
