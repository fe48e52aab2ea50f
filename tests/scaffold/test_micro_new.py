"""``micro new``: the generated project passes ruff, mypy and its own tests as generated."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from micro.scaffold import ScaffoldError, event_name, new_command, new_service, new_view

ROOT = Path(__file__).resolve().parents[2]


def _run(*command: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "MICRO_LOG_LEVEL": "warning"}
    return subprocess.run(
        list(command), cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout
    )


def _micro(*arguments: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return _run(sys.executable, "-m", "micro.cli", *arguments, cwd=cwd)


def test_a_new_service_with_a_command_and_a_view_passes_its_own_checks(tmp_path: Path) -> None:
    made = _micro("new", "service", "shop", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    shop = tmp_path / "shop"
    for folder in ("rules", "reducers", "models", "tests"):
        assert (shop / folder).is_dir()
    assert (shop / "tests" / "test_shop.py").is_file()
    assert ".micro/" in (shop / ".gitignore").read_text().split()
    added = _micro("new", "command", "add item", cwd=shop)
    assert added.returncode == 0, added.stderr
    assert (shop / "rules" / "add_item_rule.py").is_file()
    assert (shop / "reducers" / "add_item_reducer.py").is_file()
    assert "class ItemAdded(Event)" in (shop / "rules" / "add_item_rule.py").read_text()
    viewed = _micro("new", "view", "item", cwd=shop)
    assert viewed.returncode == 0, viewed.stderr

    lint = _run(sys.executable, "-m", "ruff", "check", ".", cwd=shop)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    formatted = _run(sys.executable, "-m", "ruff", "format", "--check", ".", cwd=shop)
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr
    typed = _run(
        sys.executable, "-m", "mypy", ".", "--cache-dir", str(tmp_path / "mypy-cache"), cwd=shop
    )
    assert typed.returncode == 0, typed.stdout + typed.stderr
    tests = _run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=shop)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert "5 passed" in tests.stdout


def test_a_name_already_taken_is_refused_and_nothing_is_overwritten(tmp_path: Path) -> None:
    new_service("shop", tmp_path)
    shop = tmp_path / "shop"
    app = (shop / "app.py").read_text()
    with pytest.raises(ScaffoldError, match="already exists"):
        new_service("shop", tmp_path)
    assert (shop / "app.py").read_text() == app

    new_command("add item", shop)
    rule = shop / "rules" / "add_item_rule.py"
    rule.write_text("# my own work\n")
    reducer = (shop / "reducers" / "add_item_reducer.py").read_text()
    app = (shop / "app.py").read_text()
    with pytest.raises(ScaffoldError, match="already in"):
        new_command("add item", shop)
    (shop / "app.py").write_text(app.replace('    commander.add_command("add item")\n', ""))
    with pytest.raises(ScaffoldError, match="already exists"):
        new_command("add item", shop)
    assert rule.read_text() == "# my own work\n"
    assert (shop / "reducers" / "add_item_reducer.py").read_text() == reducer


@pytest.mark.parametrize(
    "name", ["Add Item", "add  item", "add-item", "", "1st item", "add item!", "class"]
)
def test_a_name_that_is_not_a_command_name_is_refused(tmp_path: Path, name: str) -> None:
    new_service("shop", tmp_path)
    before = sorted(p.name for p in (tmp_path / "shop").rglob("*"))
    with pytest.raises(ScaffoldError, match="name") as refused:
        new_command(name, tmp_path / "shop")
    assert refused.value.details["fields"][0]["field"] == "name"
    with pytest.raises(ScaffoldError, match="name"):
        new_view(name, tmp_path / "shop")
    assert sorted(p.name for p in (tmp_path / "shop").rglob("*")) == before


def test_the_cli_prints_one_line_for_a_bad_name_and_exits_2(tmp_path: Path) -> None:
    result = _micro("new", "service", "Bad Name", cwd=tmp_path)
    assert result.returncode == 2
    assert "not a valid service name" in result.stderr
    assert list(tmp_path.iterdir()) == []
    outside = _micro("new", "command", "add item", cwd=tmp_path)
    assert outside.returncode == 2
    assert "has no app.py" in outside.stderr


def test_events_are_named_in_the_past_tense() -> None:
    assert event_name("add item") == "ItemAdded"
    assert event_name("deposit") == "Deposited"
    assert event_name("place order") == "OrderPlaced"
    assert event_name("ship order") == "OrderShipped"
    assert event_name("copy file") == "FileCopied"
