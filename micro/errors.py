"""The errors micro raises, and how they travel over the wire.

Every error micro raises is a ``MicroError``. Errors that mean the same thing as a builtin
also inherit from it, so ``except TimeoutError`` and ``except ValueError`` keep working.

    MicroError
    ├── BadRequestError (ValueError)           400 the request could not be read at all
    │   └── ValidationError                    400 the payload failed its schema (field errors)
    ├── UnauthorizedError                      401 no valid credentials
    │   └── LockedOutError                     429 too many failed logins (auth module)
    ├── ForbiddenError                         403 credentials lack a role
    ├── NotFoundError (LookupError)            404 the thing asked for does not exist
    ├── MethodNotAllowedError                  405 the route exists, not for this method
    ├── ConflictError                          409 the request conflicts with current state
    │   └── ConcurrencyError                   409 an append lost an optimistic-concurrency race
    ├── PayloadTooLargeError (ValueError)      413 a message over the server's limit
    ├── UnsupportedMediaTypeError              415 a body that is not JSON
    ├── RuleViolation                          422 a rule refused the command
    ├── TooManyRequestsError                   429 the gateway forwards too many calls (retryable)
    ├── LoopDetectedError                      508 the call chain went around too many hops
    ├── OverloadedError                        503 too many requests in flight (retryable)
    ├── ServiceNotFoundError (LookupError)     503 nobody serves the command (retryable)
    ├── UnavailableError (ConnectionError)     503 a backing system cannot be reached
    │   └── EventStoreUnavailableError         503 the event store cannot be reached
    ├── TimeoutError (builtins.TimeoutError)   504 no reply before the deadline (retryable)
    │   └── DiscoveryTimeoutError              504 awaited services never appeared
    ├── ConfigError (ValueError)               500 settings or sheets are wrong
    ├── InternalError                          500 a handler failed unexpectedly
    │   └── FatalError                         500 the service cannot carry on (error module)
    └── RemoteError                            500 an error code this process does not know

On the wire an error reply carries the NATS service-error headers (``Nats-Service-Error`` and
``Nats-Service-Error-Code``) and the JSON body ``{"error": {...}}`` built by ``to_wire``.
``from_wire`` rebuilds the registered class from ``code``; an unknown code becomes
``RemoteError`` so a caller never loses the information that came back.
"""

from __future__ import annotations

import builtins
from typing import Any, ClassVar

__all__ = [
    "BadRequestError",
    "ConcurrencyError",
    "ConfigError",
    "ConflictError",
    "DiscoveryTimeoutError",
    "EventStoreUnavailableError",
    "FatalError",
    "ForbiddenError",
    "InternalError",
    "LockedOutError",
    "LoopDetectedError",
    "MethodNotAllowedError",
    "MicroError",
    "NotFoundError",
    "OverloadedError",
    "PayloadTooLargeError",
    "RemoteError",
    "RuleViolation",
    "ServiceNotFoundError",
    "TimeoutError",
    "TooManyRequestsError",
    "UnauthorizedError",
    "UnavailableError",
    "UnsupportedMediaTypeError",
    "ValidationError",
]

_REGISTRY: dict[str, type[MicroError]] = {}


class MicroError(Exception):
    """The root of every error micro raises.

    ``code`` is stable and travels over the wire, ``status`` is an HTTP-like number,
    ``retryable`` says whether sending the same request again may succeed.
    """

    code: ClassVar[str] = "micro_error"
    status: ClassVar[int] = 500
    default_retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str = "",
        *,
        details: dict[str, Any] | None = None,
        retryable: bool | None = None,
        service: str | None = None,
        trace_id: str | None = None,
        hops: int = 0,
    ) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code
        self.details: dict[str, Any] = details or {}
        self.retryable = self.default_retryable if retryable is None else retryable
        self.service = service
        self.trace_id = trace_id
        self.hops = hops

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Only classes that name their own code join the registry; a user subclass that
        # keeps its parent's code must not shadow the parent when rebuilt from the wire.
        if "code" in cls.__dict__:
            _REGISTRY[cls.code] = cls

    def __str__(self) -> str:
        return self.message

    def to_wire(self) -> dict[str, Any]:
        """The JSON body of an error reply."""
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "details": self.details,
                "retryable": self.retryable,
                "service": self.service,
                "trace_id": self.trace_id,
                "hops": self.hops,
            }
        }

    @staticmethod
    def from_wire(body: Any, *, status: int | None = None) -> MicroError:
        """Rebuild an error from a reply body; unknown codes become ``RemoteError``."""
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            return RemoteError(f"malformed error reply: {body!r:.200}", details={"status": status})
        code = str(error.get("code") or "remote_error")
        details = error.get("details")
        kwargs: dict[str, Any] = {
            "details": details if isinstance(details, dict) else {},
            "retryable": bool(error.get("retryable", False)),
            "service": error.get("service"),
            "trace_id": error.get("trace_id"),
            "hops": int(error.get("hops") or 0),
        }
        message = str(error.get("message") or code)
        cls = _REGISTRY.get(code)
        if cls is None:
            remote = RemoteError(message, **kwargs)
            remote.remote_code = code
            remote.remote_status = status
            return remote
        instance = cls.__new__(cls)
        MicroError.__init__(instance, message, **kwargs)
        return instance


class BadRequestError(MicroError, ValueError):
    """The request could not be read: not JSON, wrong content, malformed headers."""

    code = "bad_request"
    status = 400


class ValidationError(BadRequestError):
    """The payload failed its schema. ``details["fields"]`` lists each bad field."""

    code = "validation"
    status = 400

    @property
    def fields(self) -> list[dict[str, Any]]:
        fields = self.details.get("fields", [])
        return fields if isinstance(fields, list) else []

    @classmethod
    def from_pydantic(cls, error: Any, *, what: str = "payload") -> ValidationError:
        """A pydantic ``ValidationError`` as ours: one ``{field, reason, type}`` per problem.

        The message names up to five of them: ``invalid <what>: amount: Input should be...``.
        """
        fields = [
            {
                "field": ".".join(str(part) for part in item["loc"]) or "payload",
                "reason": item["msg"],
                "type": item["type"],
            }
            for item in error.errors(include_url=False, include_input=False)
        ]
        summary = "; ".join(f"{item['field']}: {item['reason']}" for item in fields[:5])
        return cls(f"invalid {what}: {summary}", details={"fields": fields})


class UnauthorizedError(MicroError):
    code = "unauthorized"
    status = 401


class LockedOutError(UnauthorizedError):
    """Too many failed logins: this login is refused until ``details["retry_after"]`` passes.

    It is an ``UnauthorizedError`` so ``except UnauthorizedError`` still catches it.
    """

    code = "locked_out"
    status = 429


class ForbiddenError(MicroError):
    code = "forbidden"
    status = 403


class NotFoundError(MicroError, LookupError):
    code = "not_found"
    status = 404


class MethodNotAllowedError(MicroError):
    """The path exists, but not for this HTTP method."""

    code = "method_not_allowed"
    status = 405


class ConflictError(MicroError):
    code = "conflict"
    status = 409


class ConcurrencyError(ConflictError):
    """An append expected one stream version and found another."""

    code = "concurrency"
    status = 409
    default_retryable = True

    @classmethod
    def for_stream(cls, stream: str, expected: object, actual: int | None) -> ConcurrencyError:
        shown = "no stream" if actual is None else str(actual)
        return cls(
            f"stream {stream!r}: expected version {expected}, found {shown}",
            details={"stream": stream, "expected": str(expected), "actual": actual},
        )

    @property
    def expected(self) -> object:
        return self.details.get("expected")

    @property
    def actual(self) -> int | None:
        actual = self.details.get("actual")
        return actual if isinstance(actual, int) else None


class PayloadTooLargeError(MicroError, ValueError):
    code = "payload_too_large"
    status = 413


class UnsupportedMediaTypeError(MicroError):
    """A request body in a media type the gateway does not read (only JSON)."""

    code = "unsupported_media_type"
    status = 415


class TooManyRequestsError(MicroError):
    """The gateway is forwarding as many calls as it may; retry shortly."""

    code = "too_many_requests"
    status = 429
    default_retryable = True


class RuleViolation(MicroError):
    """A rule refused the command against the current state."""

    code = "rule_violation"
    status = 422


class LoopDetectedError(MicroError):
    code = "loop_detected"
    status = 508


class OverloadedError(MicroError):
    code = "overloaded"
    status = 503
    default_retryable = True


class ServiceNotFoundError(MicroError, LookupError):
    code = "service_not_found"
    status = 503
    default_retryable = True


class UnavailableError(MicroError, ConnectionError):
    code = "unavailable"
    status = 503
    default_retryable = True


class EventStoreUnavailableError(UnavailableError):
    code = "event_store_unavailable"
    status = 503


class TimeoutError(MicroError, builtins.TimeoutError):
    code = "timeout"
    status = 504
    default_retryable = True


class DiscoveryTimeoutError(TimeoutError):
    code = "discovery_timeout"
    status = 504


class ConfigError(MicroError, ValueError):
    code = "config"
    status = 500


class InternalError(MicroError):
    code = "internal"
    status = 500


class FatalError(InternalError):
    """The service cannot carry on: raising it stops the service (with the error module)."""

    code = "fatal"
    status = 500


class RemoteError(MicroError):
    """An error whose code this process has no class for; ``remote_code`` keeps it."""

    code = "remote_error"
    status = 500
    remote_code: str = "remote_error"
    remote_status: int | None = None
