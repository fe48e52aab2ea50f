"""Settings, read from the environment (``MICRO_*``, and ``NATS_URL``) or given in code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["Settings"]

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)


class Settings(BaseSettings):
    """Everything micro reads from its environment.

    Each field is read from ``MICRO_<FIELD>``; ``nats_url`` also from ``NATS_URL``.
    """

    model_config = SettingsConfigDict(
        env_prefix="MICRO_", extra="forbid", validate_assignment=True, populate_by_name=True
    )

    service: str = "micro"
    """Service name: the queue group its instances share and its name in discovery."""

    version: str = "0.1.0"
    """Semantic version announced in discovery."""

    description: str = ""
    """One line announced in discovery."""

    metadata: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    """Strings announced in discovery (``MICRO_METADATA`` is a JSON object of strings).

    Keys starting with ``micro.`` are micro's own (the namespace travels there).
    """

    namespace: str = "micro"
    """First token of every subject micro uses; separate namespaces never see each other."""

    nats_url: str | None = Field(
        default=None, validation_alias=AliasChoices("nats_url", "MICRO_NATS_URL", "NATS_URL")
    )
    """NATS server URL(s), comma separated. Unset: local server, or an embedded one."""

    connect_timeout: float = Field(default=2.0, gt=0)
    """Seconds to wait for the NATS connection before failing."""

    request_timeout: float = Field(default=5.0, gt=0)
    """Default seconds ``act`` waits for a reply."""

    drain_timeout: float = Field(default=10.0, gt=0)
    """Seconds a stopping service waits for requests in flight."""

    max_hops: int = Field(default=16, ge=1, le=1000)
    """Longest chain of nested calls before ``LoopDetectedError``."""

    max_in_flight: int = Field(default=1000, ge=1)
    """Requests one instance handles at once; beyond it callers get ``OverloadedError``."""

    embedded: bool = True
    """Start a nats-server when no ``nats_url`` is set and nothing listens locally."""

    embedded_port: int = Field(default=4222, ge=1, le=65535)
    """Port the embedded nats-server binds on 127.0.0.1."""

    data_dir: Path = Path(".micro")
    """Where the embedded server keeps JetStream data and micro keeps local state."""

    event_store: Literal["jetstream", "esdb", "memory"] = "jetstream"
    """Event store backend."""

    event_store_url: str | None = None
    """Event store URL, for ``esdb`` (``esdb://host:2113?Tls=false``)."""

    event_store_replicas: int = Field(default=1, ge=1, le=5)
    """JetStream replicas of the event stream (3 on a cluster)."""

    event_store_duplicate_window: float = Field(default=120.0, gt=0)
    """Seconds JetStream remembers event ids to drop duplicates."""

    command_retries: int = Field(default=3, ge=0, le=100)
    """Times a command is decided again after losing an optimistic-concurrency race."""

    snapshot_every_events: int = Field(default=1000, ge=1)
    """Save a snapshot of the models after this many new events (with the snapshooter)."""

    snapshot_every_seconds: float = Field(default=60.0, gt=0)
    """...or after this many seconds, when anything changed."""

    app_dir: Path | None = None
    """Folder holding the app's rules/, reducers/ and models/ (default: the app's own)."""

    log_level: str = "info"
    """Lowest level logged: debug, info, warning, error."""

    log_format: Literal["auto", "json", "console"] = "auto"
    """JSON lines, a readable console, or auto (console on a terminal)."""

    production: bool = False
    """Refuse development shortcuts (generated keys and the like)."""

    @field_validator("service")
    @classmethod
    def _check_service(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("service names use only letters, digits, '-' and '_'")
        return value

    @field_validator("namespace")
    @classmethod
    def _check_namespace(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("namespaces use only letters, digits, '-' and '_'")
        return value

    @field_validator("version")
    @classmethod
    def _check_version(cls, value: str) -> str:
        if not _SEMVER.match(value):
            raise ValueError(f"{value!r} is not a semantic version such as 1.2.3")
        return value

    @field_validator("metadata", mode="before")
    @classmethod
    def _check_metadata(cls, value: Any) -> Any:
        if isinstance(value, str | bytes):
            try:
                value = orjson.loads(value) if value.strip() else {}
            except orjson.JSONDecodeError as error:
                raise ValueError(f"metadata is not a JSON object: {error}") from None
        if not isinstance(value, dict):
            raise ValueError(f"metadata must map strings to strings, not {type(value).__name__}")
        for key, item in value.items():
            if not isinstance(key, str) or not isinstance(item, str):
                raise ValueError(f"metadata must map strings to strings; {key!r} maps to {item!r}")
            if key.startswith("micro."):
                raise ValueError(f"metadata key {key!r}: keys starting with 'micro.' are reserved")
        return value

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        level = value.lower()
        if level not in {"debug", "info", "warning", "error", "critical"}:
            raise ValueError("log_level is one of debug, info, warning, error, critical")
        return level
