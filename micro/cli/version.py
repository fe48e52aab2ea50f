"""``micro --version``: what a bug report needs to say about the installation."""

from __future__ import annotations

import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version

from micro import __version__

__all__ = ["version_report"]


def _package(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _nats_server() -> str:
    # Imported here: finding the binary is only needed for this one command.
    from micro._nats_server import find_nats_server

    try:
        binary = find_nats_server()
        output = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError) as error:
        return f"unavailable ({error})"
    # nats-server prints "nats-server: v2.12.1"
    return output.strip().rpartition(" ")[2].lstrip("v") or "unavailable"


def version_report() -> str:
    """micro's version, then those of nats-server, nats-py and Python, one per line."""
    return "\n".join(
        [
            f"micro {__version__}",
            f"nats-server {_nats_server()}",
            f"nats-py {_package('nats-py')}",
            f"Python {platform.python_version()} ({platform.python_implementation()})",
        ]
    )
