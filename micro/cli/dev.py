"""``micro dev``: run a service and restart it whenever one of its Python files changes.

Changes are watched with watchfiles (the Rust notify watcher uvicorn uses), not by polling
modification times: a save is seen at once, a burst of saves is one restart, and a folder of
any size costs nothing while nothing changes.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from watchfiles import Change, PythonFilter, run_process

__all__ = ["dev"]

_err = Console(stderr=True, highlight=False)


def dev(
    target: Annotated[Path, typer.Argument(help="A Python file, or a folder with an app.py.")],
) -> None:
    """Run a service with readable logs, restarting it when a Python file in its folder changes."""
    from micro.cli.commands import _target_file

    path = _target_file(target).resolve()
    folder = path.parent
    # The child inherits the environment: readable logs, everything shown.
    os.environ["MICRO_LOG_FORMAT"] = "console"
    os.environ.setdefault("MICRO_LOG_LEVEL", "debug")
    command = shlex.join([sys.executable, "-m", "micro.cli", "run", str(path)])

    def changed(changes: set[tuple[Change, str]]) -> None:
        names = sorted({Path(name).name for _, name in changes})
        _err.print(f"[yellow]changed: {', '.join(names)}; restarting[/]")

    # Data folders (.micro) hold no Python, so PythonFilter leaves them out too.
    run_process(
        folder,
        target=command,
        target_type="command",
        callback=changed,
        watch_filter=PythonFilter(),
        debounce=400,
    )
