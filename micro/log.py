"""structlog, configured once: JSON lines for machines, a readable console for people.

Every line logged while a request is served carries ``service``, ``command`` and
``trace_id`` (read from the request's context), and secrets are redacted wherever they occur.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import orjson
import structlog

from micro.bus.context import current_context

__all__ = ["REDACTED", "configure_logging", "redact"]

REDACTED = "[redacted]"
_SECRET_WORDS = ("password", "passwd", "secret", "token", "authorization", "api_key", "apikey")
_configured = False


def _is_secret(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def redact(value: Any, depth: int = 0) -> Any:
    """A copy of ``value`` with every secret-named field replaced by ``[redacted]``."""
    if depth > 8:
        return value
    if isinstance(value, Mapping):
        return {
            key: REDACTED if isinstance(key, str) and _is_secret(key) else redact(item, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(item, depth + 1) for item in value]
    return value


def _redact_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        if key != "event" and _is_secret(key):
            event_dict[key] = REDACTED
        elif isinstance(value, Mapping | list | tuple):
            event_dict[key] = redact(value)
    return event_dict


def _request_context(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    ctx = current_context.get()
    if ctx is not None:
        event_dict.setdefault("service", ctx.service)
        event_dict.setdefault("command", ctx.command)
        event_dict.setdefault("trace_id", ctx.trace_id)
    return event_dict


def _dumps(value: Any, **_: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def configure_logging(
    level: str = "info", fmt: str = "auto", stream: TextIO | None = None, *, force: bool = False
) -> None:
    """Configure structlog for micro once per process (``force`` to configure again).

    Logs go to stderr so that a command's own output (``micro act``) stays clean on stdout.
    """
    global _configured
    if _configured and not force:
        return
    out = stream or sys.stderr
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if console
        else structlog.processors.JSONRenderer(serializer=_dumps)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _request_context,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info if not console else structlog.dev.set_exc_info,
            _redact_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    _configured = True
