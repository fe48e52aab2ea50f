"""micro: an event-sourced microservice framework for Python over NATS."""

from __future__ import annotations

from micro.app import Micro
from micro.bus.caller import Reply, RetryPolicy
from micro.context import Context
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
from micro.session import Session
from micro.settings import Settings

__version__ = "0.1.0"

__all__ = [
    "BadRequestError",
    "ConcurrencyError",
    "ConfigError",
    "ConflictError",
    "Context",
    "DiscoveryTimeoutError",
    "EventStoreUnavailableError",
    "ForbiddenError",
    "InternalError",
    "LoopDetectedError",
    "Micro",
    "MicroError",
    "NotFoundError",
    "OverloadedError",
    "PayloadTooLargeError",
    "RemoteError",
    "Reply",
    "RetryPolicy",
    "RuleViolation",
    "ServiceNotFoundError",
    "Session",
    "Settings",
    "TimeoutError",
    "UnauthorizedError",
    "UnavailableError",
    "ValidationError",
    "__version__",
]
