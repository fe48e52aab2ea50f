"""The gateway's settings, read from ``MICRO_GATEWAY_*`` or given in code."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["GatewaySettings"]


def _split(value: Any) -> Any:
    # Lists come from the environment as comma-separated text.
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class GatewaySettings(BaseSettings):
    """How the HTTP gateway listens, limits and finds its routes."""

    model_config = SettingsConfigDict(
        env_prefix="MICRO_GATEWAY_", extra="forbid", validate_assignment=True
    )

    host: str = "127.0.0.1"
    """Address uvicorn binds (loopback unless told otherwise)."""

    port: int = Field(default=8080, ge=0, le=65535)
    """Port uvicorn binds; 0 picks a free one (``Gateway.url`` tells which)."""

    prefix: str = "/api"
    """Where the routes generated from discovery live: ``<prefix>/<service>/<command>``."""

    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Origins allowed by CORS (``*`` for any); empty: no CORS headers at all."""

    max_body: int = Field(default=1_000_000, ge=1)
    """Largest request body accepted, in bytes; larger ones get 413."""

    request_timeout: float = Field(default=10.0, gt=0)
    """Seconds a call through the gateway may take before 504."""

    max_in_flight: int = Field(default=1000, ge=1)
    """Calls the gateway forwards at once; beyond it callers get 429 with Retry-After."""

    refresh_interval: float = Field(default=5.0, gt=0)
    """Seconds between two looks at discovery (a miss looks at once, at most every 0.5s).
    An instance loses its routes once it misses two looks in a row."""

    required_services: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Services that must be discovered before ``/readyz`` says ready."""

    required_wait: float = Field(default=10.0, ge=0)
    """Seconds ``start()`` keeps looking at discovery for the required services before it
    listens anyway (``/readyz`` then names the ones missing); 0: one look only."""

    verify_command: str | None = None
    """Command that checks a bearer token for the event feed (``auth whoami``); ``None``:
    any bearer token is taken at its word (development only)."""

    hidden_stream_prefixes: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["user-", "session-", "auth-", "micro-"]
    )
    """Streams the event feed never shows: credentials live in the first three, and
    ``micro-refusals`` holds other callers' refused commands."""

    exclude: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Commands never served over HTTP, by name or shell-style pattern (``rebuild *``)."""

    ws_max_frame: int = Field(default=1_000_000, ge=1)
    """Largest WebSocket frame accepted on ``/ws``, in bytes; larger ones get an error frame
    (``payload_too_large``), and frames over four times this close the socket."""

    ws_max_in_flight: int = Field(default=32, ge=1)
    """Calls one WebSocket may have in flight at once; beyond it ``too_many_requests``."""

    ws_idle_timeout: float = Field(default=300.0, gt=0)
    """Seconds a WebSocket may stay silent, with no call in flight and no subscription,
    before the gateway closes it."""

    retry_after: int = Field(default=1, ge=1)
    """Seconds announced in ``Retry-After`` on 429 and 503."""

    @field_validator(
        "cors_origins",
        "required_services",
        "hidden_stream_prefixes",
        "exclude",
        mode="before",
    )
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        value = "/" + value.strip("/")
        if value == "/":
            raise ValueError("the prefix must not be '/': the console and docs live there")
        return value
