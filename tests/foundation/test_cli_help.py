"""Every help screen of the ``micro`` command reads as plain text (or rich markup)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
import typer.main

from micro.cli import app

ROOT = Path(__file__).resolve().parents[2]


def command_paths(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    # typer's own click is vendored in recent releases: walk by shape, not by class.
    for name, sub in getattr(command, "commands", {}).items():
        yield from command_paths(sub, (*path, name))


def help_screen(path: tuple[str, ...]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "micro.cli", *path, "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_every_help_screen_is_free_of_restructured_text_markup() -> None:
    paths = list(command_paths(typer.main.get_command(app)))
    # The tree is walked, not listed: a command added later is checked too.
    assert ("run",) in paths
    assert ("events", "tail") in paths
    for path in paths:
        screen = help_screen(path)
        assert "``" not in screen, (path, screen)
        assert ":func:" not in screen, (path, screen)
        assert ":class:" not in screen, (path, screen)


def test_the_run_help_names_what_it_starts() -> None:
    screen = help_screen(("run",))
    assert "start()" in screen
