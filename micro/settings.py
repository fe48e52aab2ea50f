"""Settings, read from the environment (``MICRO_*``, and ``NATS_URL``) or given in code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["Settings"]

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_INBOX = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
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

    discovery_gap: float = Field(default=0.3, gt=0)
    """Quiet seconds after the last answer that end a look at discovery."""

    discovery_deadline: float = Field(default=5.0, gt=0)
    """Seconds a look at discovery lasts at most; a look cut short says it is partial."""

    discovery_missed_rounds: int = Field(default=3, ge=1)
    """Looks in a row a running instance may miss before a directory lets it go."""
    nats_user: str | None = None
    """User name for NATS (with ``nats_password``)."""

    nats_password: SecretStr | None = None
    """Password for NATS (with ``nats_user``)."""

    nats_token: SecretStr | None = None
    """Authentication token for NATS."""

    nats_creds: Path | None = None
    """A ``.creds`` file (user JWT and NKey seed): operator-mode deployments, hosted NATS."""

    nats_nkey_seed: Path | None = None
    """A file holding the NKey seed of a user (``SU...``) that the server knows by public key."""

    nats_tls_ca: Path | None = None
    """PEM file of the certificate authorities that sign the server's certificate."""

    nats_tls_cert: Path | None = None
    """PEM client certificate, for servers that verify clients (with ``nats_tls_key``)."""

    nats_tls_key: Path | None = None
    """PEM private key of ``nats_tls_cert``."""

    nats_tls_handshake_first: bool = False
    """Start TLS before the server's INFO (servers with ``handshake_first``)."""

    nats_inbox_prefix: str | None = None
    """Prefix of this connection's reply subjects; default ``_INBOX_<service>``, so that
    permissions can confine every identity to its own replies."""

    connect_timeout: float = Field(default=2.0, gt=0)
    """Seconds to wait for the NATS connection before failing."""

    ping_interval: float = Field(default=5.0, gt=0)
    """Seconds between the client's pings to its NATS server. Two left unanswered and the
    connection counts as dead: the client reconnects, to another node of ``nats_url`` if
    one answers. A silent network cut (no reset, packets lost) is noticed only this way;
    nats-py's own default of two minutes left an instance deaf for up to six."""

    request_timeout: float = Field(default=5.0, gt=0)
    """Default seconds ``act`` waits for a reply."""

    drain_timeout: float = Field(default=10.0, gt=0)
    """Seconds a stopping service waits for requests in flight."""

    max_hops: int = Field(default=16, ge=1, le=1000)
    """Longest chain of nested calls before ``LoopDetectedError``."""

    max_in_flight: int = Field(default=1000, ge=1)
    """Requests one instance handles at once; beyond it callers get ``OverloadedError``."""

    shed_loop_lag: float = Field(default=0.0, ge=0)
    """Seconds of event-loop lag beyond which new requests get ``OverloadedError``
    (retryable) until the loop catches up; 0 turns it off."""

    shed_rss_mib: int = Field(default=0, ge=0)
    """Resident memory, in MiB, beyond which new requests get ``OverloadedError``; 0 off."""

    codec: Literal["json", "msgpack"] = "json"
    """The body codec this Micro's calls use; a service answers in the codec it was asked in.
    JSON is what NATS tooling and other languages' clients speak."""

    event_store_group_commit: Literal["auto", "on", "off"] = "auto"
    """Send appends that meet in time as one atomic batch (JetStream). It pays on a server
    with ``sync_interval: always`` (one disk sync per batch, not per event) and costs on
    one with the default sync, where nats-server syncs every atomic batch anyway (about
    1 ms of its time each) while single appends in flight cost it some 25 µs. ``auto``: on
    without a ``nats_url`` (micro's embedded server syncs always), off with one."""

    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    """The event loop where micro owns it (``start()``, ``micro run``, the blocking client):
    ``auto`` takes uvloop when it is installed (not on Windows), else asyncio's own."""

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

    event_store_start_timeout: float = Field(default=30.0, ge=0)
    """Seconds a starting service waits for a JetStream cluster that does not answer yet."""

    command_retries: int = Field(default=10, ge=0, le=100)
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

    log_levels: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    """Level per logger, overriding ``log_level`` for it and the loggers below it.

    ``MICRO_LOG_LEVELS`` is ``micro.bus=debug,micro.auth=warning`` or a JSON object.
    """

    # -- auth module ---------------------------------------------------------------------

    auth_commands: bool = True
    """Serve the auth commands (signup, login, ...) here; False in services that only
    check tokens issued by another service (they still follow the auth models)."""

    auth_algorithm: Literal["HS256", "HS384", "HS512", "EdDSA", "ES256", "RS256"] = "HS256"
    """The only JWT algorithm signed and accepted (pinned: ``alg`` in a token is not trusted)."""

    auth_secret: SecretStr | None = None
    """Shared secret for the HS* algorithms (at least 32 bytes)."""

    auth_private_key: SecretStr | None = None
    """PEM private key (or a path to one) for EdDSA/ES256/RS256: only issuers need it."""

    auth_public_key: str | None = None
    """PEM public key (or a path to one): enough to verify tokens, not to sign them."""

    auth_issuer: str = "micro"
    """The ``iss`` claim written and required."""

    auth_token_ttl: float = Field(default=900.0, gt=0)
    """Seconds a token is valid; ``auth refresh`` issues a new one."""

    auth_sliding_sessions: bool = False
    """Slide sessions: a call made with a token past half its lifetime is answered with a
    fresh one (reply header ``Micro-Token``; ``X-Micro-Token`` through the gateway). A
    revoked or expired session never slides, and no token outlives its session."""

    auth_session_ttl: float = Field(default=30 * 86400.0, gt=0)
    """Seconds a login session lives without a refresh."""

    auth_service_token_ttl: float = Field(default=300.0, gt=0)
    """Seconds a service token (a service acting as itself) is valid."""

    auth_leeway: float = Field(default=5.0, ge=0, le=300)
    """Clock skew tolerated when checking ``exp``/``iat``, in seconds."""

    auth_secret_claims_key: SecretStr | None = None
    """Base64 of 32 random bytes: the AES-GCM key of secret claims (services only)."""

    auth_lockout_attempts: int = Field(default=5, ge=1, le=1000)
    """Failed logins in a row before a login is locked."""

    auth_lockout_seconds: float = Field(default=60.0, gt=0)
    """Length of the first lockout."""

    auth_lockout_factor: float = Field(default=2.0, ge=1)
    """Each further lockout lasts this many times longer..."""

    auth_lockout_max_seconds: float = Field(default=3600.0, gt=0)
    """...up to this many seconds."""

    auth_password_min_length: int = Field(default=12, ge=8, le=128)
    """Shortest password accepted at signup or change."""

    auth_password_max_length: int = Field(default=256, ge=16, le=1024)
    """Longest password accepted, in UTF-8 bytes (bounded before hashing)."""

    auth_hash_time_cost: int = Field(default=3, ge=1)
    """argon2id passes (RFC 9106 second recommendation: 3)."""

    auth_hash_memory_kib: int = Field(default=65536, ge=8)
    """argon2id memory in KiB (64 MiB by default)."""

    auth_hash_parallelism: int = Field(default=4, ge=1)
    """argon2id lanes."""

    auth_hash_concurrency: int = Field(default=4, ge=1)
    """Hashes computed at once per instance: bounds the memory a login flood can take."""

    auth_admin_login: str | None = None
    """Login of the first admin, created at start when it does not exist yet."""

    auth_admin_password: SecretStr | None = None
    """Password of that first admin (it must pass the strength rules)."""

    # -- config module -------------------------------------------------------------------

    config_history: int = Field(default=16, ge=1, le=64)
    """Values kept per config key in the KV bucket."""

    @field_validator("service")
    @classmethod
    def _check_service(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("service names use only letters, digits, '-' and '_'")
        return value

    @field_validator("nats_inbox_prefix")
    @classmethod
    def _check_inbox_prefix(cls, value: str | None) -> str | None:
        if value is not None and not _INBOX.match(value):
            raise ValueError("an inbox prefix is subject tokens of letters, digits, '-' and '_'")
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

    @field_validator("log_levels", mode="before")
    @classmethod
    def _check_log_levels(cls, value: Any) -> Any:
        if isinstance(value, str | bytes):
            text = value.decode() if isinstance(value, bytes) else value
            if text.strip().startswith("{"):
                try:
                    value = orjson.loads(text)
                except orjson.JSONDecodeError as error:
                    raise ValueError(f"log_levels is not a JSON object: {error}") from None
            else:
                pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
                if any(len(pair) != 2 for pair in pairs):
                    raise ValueError("log_levels is 'logger=level,...' or a JSON object")
                value = {name.strip(): level.strip() for name, level in pairs}
        if not isinstance(value, dict):
            raise ValueError("log_levels maps logger names to levels")
        levels = {}
        for name, level in value.items():
            if not isinstance(name, str) or not isinstance(level, str):
                raise ValueError("log_levels maps logger names to levels")
            if level.lower() not in {"debug", "info", "warning", "error", "critical"}:
                raise ValueError(f"log_levels: {level!r} for {name!r} is not a level")
            levels[name] = level.lower()
        return levels

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        level = value.lower()
        if level not in {"debug", "info", "warning", "error", "critical"}:
            raise ValueError("log_level is one of debug, info, warning, error, critical")
        return level
