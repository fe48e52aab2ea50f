"""The embedded broker: a nats-server micro starts for itself when none is configured.

Every micro process that uses the embedded broker on a port takes part in keeping it up,
and the broker outlives the process that started it while any of them still runs:

- The *owner* is the process holding an exclusive ``flock`` on the port's lock file
  (``<tmp>/micro-<uid>/nats-<port>.lock``). Only the owner starts the server, in a session
  of its own, and the server dies with it (``PR_SET_PDEATHSIG``, so even on kill -9).
- Every other user stands by, blocked on that lock in a thread. The kernel releases a flock
  when its holder exits however it exits, so the first one to get the lock becomes the new
  owner: it waits until the old server process has ended (its pid is in the record beside
  the lock), then starts a server on the same port and the same store directory (also in
  the record, so a user started from another folder restarts the owner's store, not its
  own). Clients reconnect by themselves (they retry every half second).
- Nothing acknowledged is lost in a handover: the server writes with
  ``sync_interval: always`` and the next one opens the same store only once the old process
  is gone.

A server that listens on the port while no micro process owns the lock is someone else's
(a nats-server the user runs): it is used as it is and nobody restarts it.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

import orjson
import structlog

from micro._nats_server import NatsServer, NatsServerError
from micro.errors import UnavailableError

__all__ = ["ensure_embedded_server", "is_listening", "lock_dir"]

_log = structlog.get_logger("micro.embedded")
_brokers: dict[int, _Broker] = {}
_guard = threading.Lock()
_START_TIMEOUT = 15.0
_OLD_SERVER_WAIT = 10.0


def is_listening(host: str, port: int, timeout: float = 0.25) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def lock_dir() -> Path:
    """Where the embedded brokers' locks and records live (one pair per port)."""
    # Keyed by port, not by data directory: processes started from different folders share
    # the server on the port, so they must share its lock too.
    return Path(tempfile.gettempdir()) / f"micro-{os.getuid()}"


def ensure_embedded_server(data_dir: Path, port: int) -> str:
    """URL of the embedded nats-server on ``port``, starting one under ``data_dir`` if needed.

    Blocks until a server answers there. The calling process then stands by to take the
    server over should the process that runs it end.
    """
    with _guard:
        broker = _brokers.get(port)
        if broker is None:
            broker = _brokers[port] = _Broker(data_dir, port)
            broker.start()
    broker.wait_ready()
    return broker.url


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a nats-server still running (a zombie or another program is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X") and b"nats-server" in command


class _Broker:
    """This process's part in the embedded broker on one port: running it, or standing by."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.port = port
        self.url = f"nats://127.0.0.1:{port}"
        self.store_dir = (data_dir / "nats").resolve()
        folder = lock_dir()
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.lock_path = folder / f"nats-{port}.lock"
        self.record_path = folder / f"nats-{port}.json"
        self.server: NatsServer | None = None
        self._lock_file: IO[bytes] | None = None
        self._ready = threading.Event()
        self._error: UnavailableError | None = None
        self._exiting = False
        self._owned = False
        """Whether this process has run the server (a later start is a restart)."""
        self._state = threading.Lock()
        # The thread lives as long as the process: the servers it starts die with it.
        self._thread = threading.Thread(
            target=self._run, daemon=True, name=f"micro-embedded-broker-{port}"
        )

    def start(self) -> None:
        self._thread.start()
        atexit.register(self.close)

    def wait_ready(self) -> None:
        if not self._ready.wait(_START_TIMEOUT + _OLD_SERVER_WAIT + 5):
            raise UnavailableError(f"the embedded nats-server on {self.url} did not start")
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Stop the server this process runs, then let a standing-by process take over."""
        with self._state:
            self._exiting = True
            server, self.server = self.server, None
        if server is not None:
            server.stop()
        if self._lock_file is not None:
            # Released only now: a successor must not open the store before it is closed.
            self._lock_file.close()

    # -- the broker thread -----------------------------------------------------------------

    def _run(self) -> None:
        try:
            owner = self._join()
        except UnavailableError as error:
            self._error = error
            self._ready.set()
            return
        except Exception as error:  # the waiter reports it: this thread only ends
            self._error = UnavailableError(f"embedded nats-server on {self.url}: {error}")
            self._ready.set()
            return
        if owner is None:
            return  # someone else's server: nothing to keep up
        if owner and not self._serve():
            return
        while not self._exiting:
            try:
                self._take_over()
            except UnavailableError as error:
                # Let another process that stands by try; this one queues up again.
                _log.error("could not take over the embedded nats-server", error=str(error))
                assert self._lock_file is not None
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
                time.sleep(1)
                continue
            if not self._serve():
                return

    def _join(self) -> bool | None:
        """Become the owner (True), a stand-by (False), or a plain user (None); then ready."""
        self._lock_file = self.lock_path.open("ab")
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            if self._try_lock():
                if is_listening("127.0.0.1", self.port) and not self._previous_server_alive():
                    self._lock_file.close()
                    self._lock_file = None
                    self._ready.set()
                    return None
                self._wait_for_previous_server()
                self._start_server(taking_over=False)
                return True
            if is_listening("127.0.0.1", self.port):
                self._ready.set()
                return False
            if time.monotonic() > deadline:
                raise UnavailableError(
                    f"the embedded nats-server on {self.url} is owned by another process "
                    f"that has not started it in {_START_TIMEOUT:.0f}s (lock: {self.lock_path})"
                )
            time.sleep(0.05)

    def _try_lock(self) -> bool:
        assert self._lock_file is not None
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _take_over(self) -> None:
        """Block until the owner process ends, then run the server in its place."""
        assert self._lock_file is not None
        fcntl.flock(self._lock_file, fcntl.LOCK_EX)
        self._wait_for_previous_server()
        self._start_server(taking_over=True)

    def _serve(self) -> bool:
        """Wait while our server runs; False once this process is leaving."""
        server = self.server
        if server is not None:
            server.wait()
        with self._state:
            if self._exiting:
                return False
        _log.warning("embedded nats-server stopped; starting it again", url=self.url)
        return True

    def _read_record(self) -> dict[str, object]:
        try:
            record = orjson.loads(self.record_path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return {}
        return record if isinstance(record, dict) else {}

    def _previous_server_alive(self) -> bool:
        pid = self._read_record().get("pid")
        return isinstance(pid, int) and _alive(pid)

    def _wait_for_previous_server(self) -> None:
        # The old owner's server gets SIGTERM when its owner dies; it must have closed the
        # store before another server opens it.
        pid = self._read_record().get("pid")
        deadline = time.monotonic() + _OLD_SERVER_WAIT
        while isinstance(pid, int) and _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)

    def _start_server(self, *, taking_over: bool) -> None:
        record = self._read_record()
        store = record.get("store_dir") if taking_over else None
        store_dir = Path(store) if isinstance(store, str) else self.store_dir
        with self._state:
            if self._exiting:
                return
            server = NatsServer(
                store_dir=store_dir,
                port=self.port,
                die_with_parent=True,
                own_session=True,
            )
            # A successor may find the port held for a moment after the old server's process
            # ended, so it tries a few times; at the first start the error is the answer.
            attempts = 6 if taking_over else 1
            for attempt in range(attempts):
                try:
                    server.start(_START_TIMEOUT)
                    break
                except NatsServerError as error:
                    if attempt == attempts - 1:
                        raise UnavailableError(
                            f"could not start the embedded nats-server on {self.url}: {error}"
                        ) from error
                    time.sleep(0.1 * 2**attempt)
            restarted = self._owned
            self._owned = True
            self.server = server
            self._write_record(server)
        self._ready.set()
        if restarted:
            _log.warning("embedded nats-server started again", url=self.url, store=str(store_dir))
        elif taking_over:
            _log.warning(
                "took over the embedded nats-server: the process that ran it ended",
                url=self.url,
                store=str(store_dir),
            )
        else:
            _log.info(
                "started embedded nats-server with JetStream",
                url=self.url,
                store=str(store_dir),
                hint="set NATS_URL to use your own NATS",
            )

    def _write_record(self, server: NatsServer) -> None:
        staged = self.record_path.with_suffix(".tmp")
        staged.write_bytes(
            orjson.dumps(
                {"pid": server.pid, "owner": os.getpid(), "store_dir": str(server.store_dir)}
            )
        )
        staged.replace(self.record_path)
