"""The ``logger`` module: logging configured from the service's settings.

JSON lines in production (or when not on a terminal), a readable console otherwise; every
line carries the request's service, command and trace id; secrets are redacted (see
``micro.log``); levels are set for everything (``log_level``) and per logger
(``log_levels``, e.g. ``MICRO_LOG_LEVELS=micro.bus=debug,micro.auth=warning``).

    micro.modules.want(["logger"])
    log = micro.modules.get("logger").get("billing")   # "billing" gets its own level
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from micro.log import configure_logging, set_levels

if TYPE_CHECKING:
    from micro.host import Host

__all__ = ["LoggerModule"]


class LoggerModule:
    """Configures logging from settings when loaded; hands out named loggers."""

    def __init__(self, micro: Host) -> None:
        settings = micro.settings
        self.micro = micro
        fmt = settings.log_format
        if fmt == "auto" and settings.production:
            fmt = "json"  # machines read production logs, whatever the terminal
        self.levels = dict(settings.log_levels)
        self.level = settings.log_level
        configure_logging(self.level, fmt, force=True, levels=self.levels)

    def get(self, name: str, **bound: Any) -> Any:
        """A logger named ``name`` (its level follows ``log_levels``), with ``bound`` values."""
        return structlog.get_logger(name).bind(service=self.micro.settings.service, **bound)

    def set_level(self, name: str | None, level: str) -> None:
        """Change the level of one logger (and those below it), or the global one (``None``)."""
        if name is None:
            self.level = level
        else:
            self.levels[name] = level
        set_levels(self.levels, self.level)
