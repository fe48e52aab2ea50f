"""The ``micro`` command line (the console script ``micro.cli:main``).

- ``commands``: the root app: ``run``, ``act``, ``rebuild``, ``permissions``, ``dev``;
- ``events``, ``services``, ``config``: the command groups of the same names;
- ``_common``: settings from the environment and the one-line failure.
"""

from __future__ import annotations

from micro.cli.commands import app, main, run_async

__all__ = ["app", "main", "run_async"]
