"""No module of micro is over 600 lines without saying why at its top."""

from __future__ import annotations

from pathlib import Path

MICRO = Path(__file__).resolve().parents[2] / "micro"
LIMIT = 600


def test_every_long_module_says_why_it_is_long() -> None:
    unexplained = []
    for path in sorted(MICRO.rglob("*.py")):
        lines = path.read_text().splitlines()
        # The top: the docstring and comments, up to the first import.
        top = next(
            (i for i, line in enumerate(lines) if line.startswith(("import ", "from "))),
            len(lines),
        )
        if len(lines) > LIMIT and not any("600 lines" in line for line in lines[:top]):
            unexplained.append(f"{path.relative_to(MICRO.parent)}: {len(lines)} lines")
    assert unexplained == []
