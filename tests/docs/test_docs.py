"""The documentation site: it builds strictly, its API reference covers the public API, and
the tutorial's code runs and prints what the tutorial says it prints."""

from __future__ import annotations

import asyncio
import os
import re
import runpy
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

import micro
from micro import Micro
from micro.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "docs" / "tutorial.md"
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built with ``mkdocs build --strict`` (a broken link or reference fails)."""
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return out


def inventory(site: Path) -> set[str]:
    """The identifiers the API reference documents (from the site's Sphinx inventory)."""
    raw = (site / "objects.inv").read_bytes()
    header_end = 0
    for _ in range(4):  # four plain-text header lines, then zlib-compressed entries
        header_end = raw.index(b"\n", header_end) + 1
    body = zlib.decompress(raw[header_end:]).decode()
    return {line.split(" ", 1)[0] for line in body.splitlines() if line}


def test_the_site_builds_strictly_with_nothing_from_a_cdn(site: Path) -> None:
    pages = list(site.rglob("*.html"))
    assert len(pages) > 10
    for page in pages:
        text = page.read_text()
        for host in ("fonts.googleapis", "fonts.gstatic", "cdn.jsdelivr", "unpkg.com"):
            assert host not in text, f"{page.relative_to(site)} loads from {host}"


def test_the_api_reference_covers_every_public_name(site: Path) -> None:
    documented = inventory(site)
    missing = []
    for name in micro.__all__:
        if name == "__version__":
            continue
        target = getattr(micro, name)
        canonical = f"{target.__module__}.{target.__qualname__}"
        if f"micro.{name}" not in documented and canonical not in documented:
            missing.append(name)
    assert missing == [], f"not in the API reference: {missing}"


def fences(path: Path) -> list[tuple[str, str, str]]:
    """The fenced code blocks of a page: (language, attributes, code)."""
    return [(m[1], m[2], m[3]) for m in FENCE.finditer(path.read_text())]


def test_every_python_block_of_the_tutorial_is_a_tested_file_or_runs_here() -> None:
    blocks = [(attrs, code) for language, attrs, code in fences(TUTORIAL) if language == "python"]
    inline = [code for _, code in blocks if not code.startswith("--8<--")]
    included = [code.split('"')[1] for _, code in blocks if code.startswith("--8<--")]
    # Each included file is a sample the suite runs (tests/command/test_bank.py runs the bank,
    # tests/gateway the portal); the one inline block is run below.
    assert all(path.startswith("samples/") for path in included), included
    assert len(inline) == 1


BANK_ENVIRONMENT = {
    "MICRO_AUTH_SECRET": "a-secret-only-the-tutorial-test-uses-0123456789abcdef",
    "MICRO_AUTH_HASH_TIME_COST": "1",
    "MICRO_AUTH_HASH_MEMORY_KIB": "8",
    "MICRO_AUTH_HASH_PARALLELISM": "1",
}


async def test_the_tutorial_calls_print_what_the_tutorial_shows(
    micro_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = fences(TUTORIAL)
    script = next(
        code for language, _, code in blocks if language == "python" and "asyncio.run" in code
    )
    expected = next(
        code for language, attrs, code in blocks if language == "text" and "output" in attrs
    )
    environment = {
        "NATS_URL": micro_settings.nats_url or "",
        "MICRO_NAMESPACE": micro_settings.namespace,
        "MICRO_EMBEDDED": "false",
        **BANK_ENVIRONMENT,
    }
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    bank: Micro = runpy.run_path(str(ROOT / "samples" / "bank" / "app.py"), run_name="bank")[
        "micro"
    ]
    async with bank:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()[-3000:]
    assert out.decode() == expected
