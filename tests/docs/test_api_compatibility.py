"""The public API against the last release: a breaking change fails here (griffe).

What is public is said in docs/compatibility.md: the names in ``micro.__all__`` and the
modules the API reference documents. A deliberate break is listed in ``ACCEPTED`` with the
release that makes it, and in CHANGELOG.md.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import griffe
import pytest

ROOT = Path(__file__).resolve().parents[2]
RELEASE_TAG = "v0.1.0"
# The tag's commit, for a clone that did not fetch tags.
RELEASE_COMMIT = "1b0a78d7c3f7e98bd23dc40f692d3a7a3f907c31"
ACCEPTED: dict[str, str] = {  # "object.path": "why, and in which release"
    "micro.eventstore.base.NewEvent.__init__": "the id's default is still a random version-4 "
    "UUID, drawn without a system call (micro._ids.random_uuid) instead of uuid.uuid4 (0.2.0)",
    "micro.bus.endpoint.Middleware": "a callback Protocol instead of a Callable alias, so that "
    "micro exports and documents it; the same functions fit it (0.2.0)",
    "micro.errors.error_class": "unused: MicroError.from_wire rebuilds errors (0.2.0)",
    "micro.command.pipeline.CommandPipeline.handler": "unused: the commander makes the "
    "handlers of its commands (0.2.0)",
    # The projector knows no command concepts: they moved to micro.command.idempotency, and
    # the projector feeds them through its ledger (0.2.0).
    "micro.readmodel.projector.REFUSALS_STREAM": "now micro.command.idempotency's (0.2.0)",
    "micro.readmodel.projector.CommandRefused": "now micro.command.idempotency's (0.2.0)",
    "micro.readmodel.projector.SeenCommand": "now micro.command.idempotency's (0.2.0)",
    "micro.readmodel.projector.Projector.seen_keys": "now Projector.ledger, a SeenCommands "
    "in a commander's projector (0.2.0)",
    # Discovery gathers until the answers stop (a quiet gap, bounded by a deadline) instead
    # of for a fixed window, which cut answers short at thousands of instances (0.2.0).
    "micro.app.Micro.services": "window became gap and deadline (0.2.0)",
    "micro.discovery.DEFAULT_WINDOW": "replaced by DEFAULT_GAP and DEFAULT_DEADLINE (0.2.0)",
    "micro.discovery.list_services": "window became gap and deadline; enough went (0.2.0)",
    "micro.discovery.discover": "moved to micro.directory, which it follows (0.2.0)",
}


def git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def release() -> griffe.Object:
    """The public API as the last release had it, read from git."""
    if shutil.which("git") is None or git("rev-parse", "--git-dir").returncode != 0:
        pytest.skip("the API check reads the last release from git: not a git checkout")
    if git("rev-parse", "--is-shallow-repository").stdout.strip() == "true":
        pytest.skip("the API check needs the history: this is a shallow clone")
    tagged = git("rev-parse", "--verify", "--quiet", f"{RELEASE_TAG}^{{commit}}")
    ref = RELEASE_TAG if tagged.returncode == 0 else RELEASE_COMMIT
    return griffe.load_git("micro", ref=ref, repo=ROOT)


def breaking(old: griffe.Object, search_path: Path) -> list[str]:
    new = griffe.load("micro", search_paths=[str(search_path)], try_relative_path=False)
    return [
        f"{change.obj.path}: {change.explain()}"
        for change in griffe.find_breaking_changes(old, new)
        if change.obj.path not in ACCEPTED
    ]


def test_the_public_api_keeps_what_the_last_release_had(release: griffe.Object) -> None:
    assert breaking(release, ROOT) == []


def test_the_check_flags_a_public_name_that_disappears(
    release: griffe.Object, tmp_path: Path
) -> None:
    shutil.copytree(ROOT / "micro", tmp_path / "micro")
    errors = tmp_path / "micro" / "errors.py"
    errors.write_text(errors.read_text().replace("class RuleViolation(", "class RuleRefusal("))
    assert any(
        line.startswith("micro.errors.RuleViolation") for line in breaking(release, tmp_path)
    )
