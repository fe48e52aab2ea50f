"""structlog, configured once: JSON lines for machines, a readable console for people.

Every line logged while a request is served carries ``service``, ``command`` and
``trace_id`` (read from the request's context), and secrets are redacted wherever they occur:

- a field whose name says it holds a secret (``password``, ``token``, ``authorization``,
  ``secret``, ``api_key``...) at any depth of nested dicts, lists and pydantic models;
- inside any string, the message and formatted tracebacks included: JWT-looking tokens,
  ``Bearer ...`` credentials, user info in URLs, NKey seeds, PEM private keys,
  ``password=...``-style pairs and pydantic's ``input_value=...`` (a validation error must
  not echo the password it refused).

Levels: ``log_level`` for everything, and ``log_levels`` per logger name (a logger and the
loggers below it: ``{"micro.bus": "debug"}`` covers ``micro.bus.caller``).
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import orjson
import structlog
from pydantic import BaseModel, SecretBytes, SecretStr

from micro.context import current_context

__all__ = ["REDACTED", "configure_logging", "redact", "redact_text", "set_levels"]

REDACTED = "[redacted]"
_SECRET_WORDS = (
    "password",
    "passwd",
    "secret",
    "token",
    "authorization",
    "api_key",
    "apikey",
    "credential",
    "private_key",
    "cookie",
)
_WORDS = "|".join(re.escape(word) for word in _SECRET_WORDS)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
_PAIR = re.compile(
    rf"(?i)((?:{_WORDS})[\w-]*[\"']?\s*[=:]\s*[\"']?)(?!\[redacted\])([^\s\"',;&}}\]]+)"
)
# user:password@ in a URL, and NKey seeds (S + the key type + base32), which carry no key name.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")
_SEED = re.compile(r"\bS[UAONCXP][A-Z2-7]{54,}\b")
_PEM_KEY = re.compile(
    r"-----BEGIN ([A-Z ]*PRIVATE KEY|USER NKEY SEED)-----.*?(-----END \1-----|\Z)", re.S
)
_INPUT_VALUE = re.compile(r"input_value=(?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^,\]]+)")
_MAX_DEPTH = 8
_METHOD_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "msg": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}
_configured = False
_level = logging.INFO
_levels: dict[str, int] = {}


def _is_secret(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def redact_text(text: str) -> str:
    """``text`` with tokens, credentials and secret ``key=value`` pairs replaced."""
    if len(text) < 8:
        return text
    text = _JWT.sub(REDACTED, text)
    text = _USERINFO.sub(rf"\1{REDACTED}@", text)
    text = _SEED.sub(REDACTED, text)
    text = _PEM_KEY.sub(REDACTED, text)
    text = _BEARER.sub(rf"\1 {REDACTED}", text)
    text = _PAIR.sub(rf"\1{REDACTED}", text)
    return _INPUT_VALUE.sub(f"input_value={REDACTED}", text)


def redact(value: Any, depth: int = 0) -> Any:
    """A copy of ``value`` with every secret-named field and secret-looking text replaced."""
    if isinstance(value, str):
        return redact_text(value)
    if depth > _MAX_DEPTH:
        return value
    if isinstance(value, SecretStr | SecretBytes):
        return REDACTED
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if isinstance(value, Mapping):
        return {
            key: REDACTED if isinstance(key, str) and _is_secret(key) else redact(item, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(item, depth + 1) for item in value]
    if isinstance(value, BaseException):
        return redact_text(f"{type(value).__name__}: {value}")
    return value


def _redact_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        if key == "exc_info":
            continue  # formatted (and redacted) by the renderer's exception formatter
        if key not in ("event", "exception") and _is_secret(key):
            event_dict[key] = REDACTED
        elif isinstance(value, str | Mapping | list | tuple | set | BaseModel | SecretStr):
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
        event_dict.setdefault("span_id", ctx.span_id)
    return event_dict


def _threshold(name: str | None) -> int:
    if name and _levels:
        best = ""
        for prefix in _levels:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > len(best):
                best = prefix
        if best:
            return _levels[best]
    return _level


def _filter_levels(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    name = getattr(logger, "name", None)
    if _METHOD_LEVELS.get(method, logging.INFO) < _threshold(name):
        raise structlog.DropEvent
    if name:
        event_dict.setdefault("logger", name)
    return event_dict


class _NamedPrintLogger(structlog.PrintLogger):
    """A PrintLogger that remembers the name it was asked for (levels are per name)."""

    def __init__(self, file: TextIO, name: str | None) -> None:
        super().__init__(file)
        self.name = name


class _NamedPrintLoggerFactory:
    def __init__(self, file: TextIO) -> None:
        self._file = file

    def __call__(self, *args: Any) -> _NamedPrintLogger:
        name = args[0] if args and isinstance(args[0], str) else None
        return _NamedPrintLogger(self._file, name)


def _redacting_traceback(sio: TextIO, exc_info: Any) -> None:
    """Console tracebacks: plain (no local variables shown) and redacted."""
    sio.write("\n" + redact_text("".join(traceback.format_exception(*exc_info))))


def _dumps(value: Any, **_: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def _level_number(level: str) -> int:
    return logging.getLevelNamesMapping()[level.upper()]


def set_levels(levels: Mapping[str, str] | None = None, level: str | None = None) -> None:
    """Change the global level and the per-logger levels of a configured process."""
    global _level
    if level is not None:
        _level = _level_number(level)
    _levels.clear()
    for name, name_level in (levels or {}).items():
        _levels[name] = _level_number(name_level)
    lowest = min([_level, *_levels.values()])
    # The bound loggers drop lines below every configured level before any processing.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(lowest))


def configure_logging(
    level: str = "info",
    fmt: str = "auto",
    stream: TextIO | None = None,
    *,
    force: bool = False,
    levels: Mapping[str, str] | None = None,
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
        structlog.dev.ConsoleRenderer(colors=out.isatty(), exception_formatter=_redacting_traceback)
        if console
        else structlog.processors.JSONRenderer(serializer=_dumps)
    )
    structlog.configure(
        processors=[
            _filter_levels,
            structlog.contextvars.merge_contextvars,
            _request_context,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info if not console else structlog.dev.set_exc_info,
            _redact_processor,
            renderer,
        ],
        logger_factory=_NamedPrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    set_levels(levels, level)
    _configured = True
