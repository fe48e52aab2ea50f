"""What the portal tests share: where artifacts go, the browser's flags, a running portal."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

__all__ = ["ARTIFACTS", "CHROMIUM", "CHROMIUM_ARGS", "ROOT", "URL_LINE", "Portal"]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
URL_LINE = re.compile(r"REST portal: (http://\S+)")


class Portal:
    """A running portal process and the URL it printed."""

    def __init__(self, url: str, process: subprocess.Popen[str], log: Path) -> None:
        self.url = url
        self.process = process
        self.log = log
