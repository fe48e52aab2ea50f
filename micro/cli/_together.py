"""``micro run`` with several apps, or a portal: one process, one loop, one connection.

Each app file is run as a module named ``__micro_run__`` (so its ``if __name__ ==
"__main__"`` block, which would serve it alone, stays out) and gives its ``micro``; a file
that defines a ``Portal`` named ``portal`` adds a gateway and the apps the portal names.
"""

from __future__ import annotations

import asyncio
import runpy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from micro._signals import stop_on_signals
from micro.app import Micro
from micro.cli._common import fail

if TYPE_CHECKING:
    from micro.gateway.portal import Portal

__all__ = ["Together", "app_file", "load_together", "serve_together"]

RUN_NAME = "__micro_run__"


def app_file(target: Path) -> Path:
    """The file to run for ``target``: itself, or a folder's app.py, main.py or __main__.py."""
    if target.is_dir():
        for candidate in ("app.py", "main.py", "__main__.py"):
            if (target / candidate).is_file():
                return target / candidate
        fail(f"{target} has no app.py, main.py or __main__.py to run")
    if not target.is_file():
        fail(f"{target} does not exist")
    if target.suffix != ".py":
        fail(f"{target} is not a Python file")
    return target


@dataclass
class Together:
    """What one ``micro run`` serves."""

    apps: list[Micro] = field(default_factory=list)
    portal: Portal | None = None


def _run_file(path: Path, run_name: str) -> dict[str, Any]:
    sys.path.insert(0, str(path.parent))
    return runpy.run_path(str(path), run_name=run_name)


def load_together(
    targets: list[Path], *, first: dict[str, Any] | None = None, run_name: str = RUN_NAME
) -> Together:
    """Run each target's file and gather its Micro and portal (``first``: already run)."""
    together = Together()
    loaded: set[Path] = set()
    queue = [app_file(target).resolve() for target in targets]
    while queue:
        path = queue.pop(0)
        if path in loaded:
            continue
        loaded.add(path)
        namespace = first if first is not None and not together.apps else None
        namespace = namespace if namespace is not None else _run_file(path, run_name)
        first = None
        app = namespace.get("micro")
        if isinstance(app, Micro) and not app.has_served and app.endpoints:
            together.apps.append(app)
        portal = namespace.get("portal")
        # A file that made a Portal imported its module: no other run loads the gateway.
        portals = sys.modules.get("micro.gateway.portal")
        if portals is not None and isinstance(portal, portals.Portal):
            if together.portal is not None:
                fail(f"{path} declares a second portal; one process serves one")
            together.portal = portal
            queue.extend(app_file(Path(app)).resolve() for app in portal.apps)
    return together


async def serve_together(together: Together) -> None:
    """Serve everything until SIGINT/SIGTERM, then close it all in order."""
    from micro.gateway.portal import serve_portal

    stop = asyncio.Event()
    with stop_on_signals(stop):
        await serve_portal(together.portal, together.apps, stop)
