"""Where an app's sheets live by default: the folder of the file that made its Micro."""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["app_dir"]


def app_dir(depth: int = 2) -> Path:
    """The folder of the file that made the Micro: where its sheets live by default."""
    frame = sys._getframe(depth)
    package = str(Path(__file__).parent)
    while frame is not None:
        filename = frame.f_globals.get("__file__")
        if filename and not str(filename).startswith(package):
            return Path(filename).resolve().parent
        frame = frame.f_back  # type: ignore[assignment]
    return Path.cwd()
