"""``python -m micro.cli``: the ``micro`` command."""

from __future__ import annotations

from micro.cli.commands import main

main()
