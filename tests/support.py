"""Helpers shared by test folders: npm packages installed once per test session."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest


def npm_install(
    folder: Path,
    packages: dict[str, str],
    *,
    purpose: str,
    tools: tuple[str, ...] = ("node", "npm"),
) -> None:
    """Install ``packages`` (name -> version) into ``folder``; skip, naming ``purpose``, when
    one of ``tools`` is missing, and fail with npm's own words when the install fails."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{purpose} needs {' and '.join(missing)}, not installed here")
    (folder / "package.json").write_text(
        json.dumps({"name": folder.name, "private": True, "dependencies": packages})
    )
    result = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, f"npm install failed: {result.stderr[-2000:]}"
