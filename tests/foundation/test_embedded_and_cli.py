"""The embedded broker and the ``micro`` command, run as a user runs them: as processes."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import micro
from micro.bus.embedded import is_listening

ROOT = Path(__file__).resolve().parents[2]
MICRO = [sys.executable, "-m", "micro.cli"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def user_env(tmp_path: Path) -> dict[str, str]:
    """An environment with no NATS_URL and an embedded port nobody else uses."""
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("MICRO_", "NATS_"))
    }
    env.update(
        MICRO_EMBEDDED_PORT=str(free_port()),
        MICRO_LOG_FORMAT="json",
        PYTHONPATH=str(ROOT),
    )
    return env


def start(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(process: subprocess.Popen[str]) -> int:
    """Wait for the process (killing it after 20 s) and close its pipes."""
    try:
        process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
    return process.returncode


def wait_for_line(process: subprocess.Popen[str], needle: str, timeout: float = 20) -> list[str]:
    """Read stderr lines until one contains ``needle``; all lines read so far."""
    assert process.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"never saw {needle!r}; got {lines}")


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        MICRO + args, env=env, cwd=cwd, capture_output=True, text=True, timeout=30
    )


def test_embedded_broker_starts_is_shared_and_stops_with_its_owner(user_env, tmp_path) -> None:
    port = int(user_env["MICRO_EMBEDDED_PORT"])
    owner = start(MICRO + ["run", str(ROOT / "samples" / "simplest")], user_env, tmp_path)
    second = None
    try:
        lines = wait_for_line(owner, '"serving"')
        started = [line for line in lines if "started embedded nats-server" in line]
        assert len(started) == 1
        assert f"127.0.0.1:{port}" in started[0]
        assert (tmp_path / ".micro" / "nats" / "jetstream").is_dir()

        second_app = tmp_path / "second.py"
        second_app.write_text(
            "from micro import Micro\n"
            "Micro(service='second').add('add one', lambda n: n + 1).start()\n"
        )
        second = start(MICRO + ["run", str(second_app)], user_env, tmp_path)
        lines = wait_for_line(second, '"serving"')
        assert not any("started embedded" in line for line in lines)

        product = run_cli(
            ["act", "multiply two numbers", '{"first": 5, "second": 3}'], user_env, tmp_path
        )
        assert (product.returncode, product.stdout.strip()) == (0, "15")
        assert run_cli(["act", "add one", "41"], user_env, tmp_path).stdout.strip() == "42"
    finally:
        owner.send_signal(signal.SIGTERM)
        assert finish(owner) == 0
        if second is not None:
            second.kill()
            finish(second)
    assert not is_listening("127.0.0.1", port)


def test_the_embedded_broker_dies_with_an_owner_killed_hard(user_env, tmp_path) -> None:
    port = int(user_env["MICRO_EMBEDDED_PORT"])
    owner = start(MICRO + ["run", str(ROOT / "samples" / "simplest")], user_env, tmp_path)
    wait_for_line(owner, '"serving"')
    assert is_listening("127.0.0.1", port)
    owner.kill()
    finish(owner)
    deadline = time.monotonic() + 10
    while is_listening("127.0.0.1", port) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not is_listening("127.0.0.1", port)


class TestCli:
    def test_version_names_micro_nats_server_nats_py_and_python(self, user_env, tmp_path) -> None:
        result = run_cli(["--version"], user_env, tmp_path)
        assert result.returncode == 0
        lines = result.stdout.splitlines()
        assert [line.split(" ", 1)[0] for line in lines] == [
            "micro",
            "nats-server",
            "nats-py",
            "Python",
        ]
        assert lines[0] == f"micro {micro.__version__}"
        assert re.fullmatch(r"nats-server \d+\.\d+\.\d+\S*", lines[1]), lines[1]
        assert lines[2] == f"nats-py {importlib.metadata.version('nats-py')}"
        assert lines[3].startswith(f"Python {platform.python_version()}")

    def test_act_with_nobody_serving_prints_one_line_and_exits_1(
        self, user_env, tmp_path, nats_server, micro_namespace
    ) -> None:
        env = {**user_env, "NATS_URL": nats_server.url, "MICRO_NAMESPACE": micro_namespace}
        result = run_cli(["act", "nobody serves this", "{}"], env, tmp_path)
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [
            "error: service_not_found: no service serves 'nobody serves this'"
        ]
        verbose = run_cli(["act", "nobody serves this", "{}", "--verbose"], env, tmp_path)
        assert '"retryable": true' in verbose.stderr

    def test_act_refuses_a_payload_that_is_not_json(self, user_env, tmp_path) -> None:
        result = run_cli(["act", "anything", "{oops"], user_env, tmp_path)
        assert result.returncode == 2
        assert "PAYLOAD is not valid JSON" in result.stderr

    def test_act_without_any_nats_says_so_and_starts_nothing(self, user_env, tmp_path) -> None:
        result = run_cli(["act", "anything"], user_env, tmp_path)
        assert result.returncode == 1
        assert "nothing listens on 127.0.0.1" in result.stderr
        assert not (tmp_path / ".micro").exists()

    def test_run_refuses_a_missing_target(self, user_env, tmp_path) -> None:
        result = run_cli(["run", "no/such/app.py"], user_env, tmp_path)
        assert result.returncode == 1
        assert "does not exist" in result.stderr

    def test_a_bad_setting_is_one_line_naming_it(self, user_env, tmp_path) -> None:
        env = {**user_env, "MICRO_REQUEST_TIMEOUT": "soon"}
        result = run_cli(["act", "anything"], env, tmp_path)
        assert result.returncode == 1
        assert "request_timeout" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
