"""``micro dev``: the service restarts when one of its Python files changes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from micro import Settings

ROOT = Path(__file__).resolve().parents[2]

APP = """
import os
from pathlib import Path
from micro import Micro

GENERATION = {generation}

async def started(micro):
    with Path(os.environ["STARTS"]).open("a") as starts:
        starts.write(f"{{GENERATION}} {{os.getpid()}}\\n")

micro = Micro(service="devtest")
micro.add("generation", lambda request: GENERATION)
micro.hook("on_start", started)
"""


def _starts(path: Path, count: int, deadline: float) -> list[list[str]]:
    while time.monotonic() < deadline:
        lines = path.read_text().split("\n") if path.exists() else []
        found = [line.split() for line in lines if line.strip()]
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(
        f"{count} starts expected, saw: {path.read_text() if path.exists() else ''}"
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_change_to_a_python_file_restarts_the_service(
    micro_settings: Settings, tmp_path: Path
) -> None:
    service = tmp_path / "service"
    service.mkdir()
    (service / "app.py").write_text(APP.format(generation=1))
    starts = tmp_path / "starts"
    environment = {
        **os.environ,
        "NATS_URL": micro_settings.nats_url or "",
        "MICRO_NAMESPACE": micro_settings.namespace,
        "MICRO_EMBEDDED": "false",
        "MICRO_LOG_LEVEL": "warning",
        "MICRO_DATA_DIR": str(tmp_path / "data"),
        "STARTS": str(starts),
        "PYTHONPATH": str(ROOT),
    }
    dev = subprocess.Popen(
        [sys.executable, "-m", "micro.cli", "dev", str(service)],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a group of its own, which the cleanup below can end
    )
    try:
        first = _starts(starts, 1, time.monotonic() + 30)
        (service / "notes.txt").write_text("not Python: no restart")
        (service / "app.py").write_text(APP.format(generation=2))
        second = _starts(starts, 2, time.monotonic() + 30)
        assert [line[0] for line in second] == ["1", "2"]
        assert second[1][1] != first[0][1]
        # The first run was stopped, not left behind.
        deadline = time.monotonic() + 10
        while _alive(int(first[0][1])) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(int(first[0][1]))
    finally:
        dev.send_signal(signal.SIGINT)
        try:
            _, errors = dev.communicate(timeout=20)
        except subprocess.TimeoutExpired as slow:
            # The service holds the stderr pipe too: end it with micro dev, or reading the
            # pipe to its end would wait as long as the service lives.
            os.killpg(dev.pid, signal.SIGKILL)
            _, errors = dev.communicate(timeout=10)
            raise AssertionError(f"micro dev outlived SIGINT by 20 s: {errors}") from slow
    assert "restarting" in errors
    assert "notes.txt" not in errors
    last = int(second[1][1])
    deadline = time.monotonic() + 10
    while _alive(last) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(last)
