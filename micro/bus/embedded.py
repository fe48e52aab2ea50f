"""The embedded broker: a nats-server micro starts for itself when none is configured.

Only one process starts it: the check-then-start runs under a file lock in the data
directory, so a second process started meanwhile finds the first one's server and uses it.
The server lives as long as the process that started it (and dies with it, even on kill -9).
"""

from __future__ import annotations

import atexit
import fcntl
import socket
import threading
from pathlib import Path

import structlog

from micro._nats_server import NatsServer, NatsServerError
from micro.errors import UnavailableError

__all__ = ["ensure_embedded_server", "is_listening"]

_log = structlog.get_logger("micro.embedded")
_servers: dict[int, NatsServer] = {}
_guard = threading.Lock()


def is_listening(host: str, port: int, timeout: float = 0.25) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def ensure_embedded_server(data_dir: Path, port: int) -> str:
    """URL of a local nats-server on ``port``, starting one under ``data_dir`` if needed."""
    url = f"nats://127.0.0.1:{port}"
    with _guard:
        if port in _servers and _servers[port].running:
            return url
        data_dir.mkdir(parents=True, exist_ok=True)
        with (data_dir / "nats-server.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if is_listening("127.0.0.1", port):
                    return url
                server = NatsServer(
                    store_dir=(data_dir / "nats").resolve(),
                    port=port,
                    # PDEATHSIG fires when the starting *thread* ends: only the main
                    # thread lives as long as the process.
                    die_with_parent=threading.current_thread() is threading.main_thread(),
                    own_session=True,
                )
                try:
                    server.start()
                except NatsServerError as error:
                    raise UnavailableError(
                        f"could not start the embedded nats-server on {url}: {error}"
                    ) from error
                _servers[port] = server
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    atexit.register(server.stop)
    _log.info(
        "started embedded nats-server with JetStream",
        url=url,
        store=str(server.store_dir),
        hint="set NATS_URL to use your own NATS",
    )
    return url
