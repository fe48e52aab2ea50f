"""micro: an event-sourced microservice framework for Python over NATS."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from micro.app import Micro
from micro.blocking import BlockingClient, connect
from micro.bus.caller import Reply, RetryPolicy
from micro.bus.endpoint import Middleware
from micro.context import Context
from micro.directory import Directory
from micro.discovery import ServiceList, ServiceRecord
from micro.errors import (
    BadRequestError,
    ConcurrencyError,
    ConfigError,
    ConflictError,
    DiscoveryTimeoutError,
    EventStoreUnavailableError,
    ForbiddenError,
    InternalError,
    LoopDetectedError,
    MicroError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    RemoteError,
    RuleViolation,
    ServiceNotFoundError,
    TimeoutError,
    UnauthorizedError,
    UnavailableError,
    ValidationError,
)
from micro.loop import run
from micro.session import Session
from micro.settings import Settings

try:
    __version__ = version("micro-es")
except PackageNotFoundError:  # a source tree used without installing it
    __version__ = "0.0.0+unknown"

__all__ = [
    "BadRequestError",
    "BlockingClient",
    "ConcurrencyError",
    "ConfigError",
    "ConflictError",
    "Context",
    "Directory",
    "DiscoveryTimeoutError",
    "EventStoreUnavailableError",
    "ForbiddenError",
    "InternalError",
    "LoopDetectedError",
    "Micro",
    "MicroError",
    "Middleware",
    "NotFoundError",
    "OverloadedError",
    "PayloadTooLargeError",
    "RemoteError",
    "Reply",
    "RetryPolicy",
    "RuleViolation",
    "ServiceList",
    "ServiceNotFoundError",
    "ServiceRecord",
    "Session",
    "Settings",
    "TimeoutError",
    "UnauthorizedError",
    "UnavailableError",
    "ValidationError",
    "__version__",
    "connect",
    "run",
]
