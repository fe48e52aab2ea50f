"""The configuration's KV bucket: keys, schemas, values, history and watches.

One bucket per namespace (``<namespace>_config``), keeping ``config_history`` values per key.
A key is global (``global.<key>``: every service sees it) or belongs to one service
(``service.<service>.<key>``, which overrides the global one for that service). Values are
JSON; ``set`` refuses a value that fails a schema registered under ``schema.<service>``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import jsonschema
import orjson
import structlog
from nats.aio.client import Client
from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NoKeysError
from nats.js.kv import KeyValue

from micro.errors import ConfigError, NotFoundError, UnavailableError, ValidationError

__all__ = [
    "DELETED",
    "Callback",
    "ConfigChange",
    "ConfigEntry",
    "ConfigStore",
    "bucket_name",
    "parse_kv_key",
]

_log = structlog.get_logger("micro.config")

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_SERVICE = re.compile(r"^[A-Za-z0-9_-]+$")
DELETED = ("DEL", "PURGE")

Callback = Callable[[Any, Any], Any]


def bucket_name(namespace: str) -> str:
    """The KV bucket of a namespace's configuration."""
    return f"{namespace}_config"


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not _KEY.match(key):
        raise ValidationError(
            f"config key {key!r}: letters, digits and '_', not starting with a digit",
            details={"fields": [{"field": "key", "reason": "not a valid config key"}]},
        )


def _check_service(service: str) -> None:
    if not _SERVICE.match(service):
        raise ValidationError(
            f"service {service!r}: letters, digits, '-' and '_' only",
            details={"fields": [{"field": "service", "reason": "not a valid service name"}]},
        )


def _kv_key(key: str, service: str | None) -> str:
    _check_key(key)
    if service is None:
        return f"global.{key}"
    _check_service(service)
    return f"service.{service}.{key}"


@dataclass(frozen=True, slots=True)
class ConfigEntry:
    """One stored value: its scope (``None``: global), key, value and revision."""

    service: str | None
    key: str
    value: Any
    revision: int


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """A change seen by ``watch``: ``deleted`` when the key was removed."""

    service: str | None
    key: str
    value: Any
    revision: int
    deleted: bool = False


def parse_kv_key(kv_key: str) -> tuple[str | None, str] | None:
    """(service, key) of a value's KV key; ``None`` for schema and foreign keys."""
    parts = kv_key.split(".")
    if len(parts) == 2 and parts[0] == "global":
        return None, parts[1]
    if len(parts) == 3 and parts[0] == "service":
        return parts[1], parts[2]
    return None  # schema.<service>, and anything written by someone else


class ConfigStore:
    """Reads and writes the config bucket of a namespace (the server side, and the CLI's)."""

    def __init__(self, client: Client, namespace: str, *, history: int = 16) -> None:
        self.client = client
        self.bucket = bucket_name(namespace)
        self.kept = history
        """Values kept per key."""
        self._kv: KeyValue | None = None

    async def open(self) -> KeyValue:
        """The bucket, created (with its history) on first use."""
        if self._kv is not None:
            return self._kv
        jetstream = self.client.jetstream()
        try:
            try:
                self._kv = await jetstream.key_value(self.bucket)
            except BucketNotFoundError:
                self._kv = await jetstream.create_key_value(
                    KeyValueConfig(
                        bucket=self.bucket,
                        history=self.kept,
                        description="micro configuration",
                    )
                )
        except Exception as error:
            if isinstance(error, ConfigError):
                raise
            raise UnavailableError(
                f"the config bucket {self.bucket!r} cannot be opened: {error}"
            ) from error
        return self._kv

    # -- schemas ------------------------------------------------------------------------

    async def register_schema(self, service: str, schema: dict[str, Any]) -> None:
        """Store the JSON Schema of ``service``'s configuration (checked by ``set``)."""
        _check_service(service)
        jsonschema.Draft202012Validator.check_schema(schema)
        kv = await self.open()
        await kv.put(f"schema.{service}", orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))

    async def schemas(self) -> dict[str, dict[str, Any]]:
        """Every registered schema, by service."""
        kv = await self.open()
        found: dict[str, dict[str, Any]] = {}
        for kv_key in await self._keys("schema.*"):
            with contextlib.suppress(KeyNotFoundError):
                entry = await kv.get(kv_key)
                if entry.value:
                    found[kv_key.split(".", 1)[1]] = orjson.loads(entry.value)
        return found

    def _problems(self, schema: dict[str, Any], key: str, value: Any) -> list[str]:
        properties = schema.get("properties") or {}
        if key not in properties:
            return []
        partial = {
            "type": "object",
            "properties": {key: properties[key]},
            "$defs": schema.get("$defs", {}),
        }
        validator = jsonschema.Draft202012Validator(partial)
        return [error.message for error in validator.iter_errors({key: value})]

    async def validate(self, key: str, value: Any, service: str | None = None) -> None:
        """Raise ``ValidationError`` if a registered schema refuses ``key = value``.

        A service's key is checked against that service's schema; a global key against
        every schema that declares it.
        """
        schemas = await self.schemas()
        if service is None:
            targets = schemas
        else:
            targets = {service: schemas[service]} if service in schemas else {}
        fields = [
            {"field": key, "reason": f"{owner}: {problem}", "type": "schema"}
            for owner, schema in sorted(targets.items())
            for problem in self._problems(schema, key, value)
        ]
        if fields:
            raise ValidationError(
                f"config {key!r} refused: {fields[0]['reason']}", details={"fields": fields}
            )

    # -- values -------------------------------------------------------------------------

    async def set(self, key: str, value: Any, service: str | None = None) -> int:
        """Store ``key = value`` (global, or for ``service``); returns its revision."""
        kv_key = _kv_key(key, service)
        await self.validate(key, value, service)
        try:
            data = orjson.dumps(value)
        except TypeError as error:
            raise ValidationError(
                f"config {key!r}: the value is not JSON: {error}",
                details={"fields": [{"field": key, "reason": "not JSON"}]},
            ) from None
        kv = await self.open()
        revision: int = await kv.put(kv_key, data)
        return revision

    async def get(self, key: str, service: str | None = None) -> Any:
        """The value of ``key`` (``NotFoundError`` when unset)."""
        kv = await self.open()
        kv_key = _kv_key(key, service)
        try:
            entry = await kv.get(kv_key)
        except KeyNotFoundError:
            entry = None
        if entry is None or entry.value is None or entry.operation in DELETED:
            scope = f"service {service!r}" if service else "global"
            raise NotFoundError(f"config {key!r} ({scope}) is not set")
        return orjson.loads(entry.value)

    async def delete(self, key: str, service: str | None = None) -> None:
        kv = await self.open()
        await kv.delete(_kv_key(key, service))

    async def history(self, key: str, service: str | None = None) -> list[ConfigChange]:
        """Every kept value of ``key``, oldest first."""
        kv = await self.open()
        try:
            entries = await kv.history(_kv_key(key, service))
        except NoKeysError:
            return []
        return [
            ConfigChange(
                service,
                key,
                orjson.loads(entry.value) if entry.value else None,
                entry.revision or 0,
                entry.operation in DELETED,
            )
            for entry in entries
        ]

    async def entries(self, service: str | None = None) -> list[ConfigEntry]:
        """The global values and, with ``service``, that service's own, sorted."""
        kv = await self.open()
        found = []
        for kv_key in await self._keys(">"):
            parsed = parse_kv_key(kv_key)
            if parsed is None or (parsed[0] is not None and parsed[0] != service):
                continue
            with contextlib.suppress(KeyNotFoundError):
                entry = await kv.get(kv_key)
                if entry.value is not None and entry.operation not in DELETED:
                    found.append(
                        ConfigEntry(
                            parsed[0], parsed[1], orjson.loads(entry.value), entry.revision or 0
                        )
                    )
        return sorted(found, key=lambda e: (e.service or "", e.key))

    async def is_empty(self) -> bool:
        """Whether the bucket holds no value and no delete marker at all."""
        try:
            info = await self.client.jetstream().stream_info(f"KV_{self.bucket}")
        except Exception as error:
            raise UnavailableError(
                f"the config bucket {self.bucket!r} cannot be read: {error}"
            ) from error
        return not info.state.messages

    async def _keys(self, pattern: str) -> list[str]:
        """Keys matching ``pattern`` that have a value or a delete marker.

        Read from the stream's subject counts in one request. A watch would do, but nats-py
        can hand out its "no more values" marker before a value already on its way (the
        consumer's info says nothing is pending once the value is sent, not once it is
        taken in), and a key would be missed.
        """
        prefix = f"$KV.{self.bucket}."
        try:
            info = await self.client.jetstream().stream_info(
                f"KV_{self.bucket}", subjects_filter=prefix + pattern
            )
        except Exception as error:
            raise UnavailableError(
                f"the config bucket {self.bucket!r} cannot be read: {error}"
            ) from error
        return sorted(subject[len(prefix) :] for subject in info.state.subjects or {})

    async def watch(
        self,
        service: str | None = None,
        *,
        include_current: bool = False,
        on_ready: Callable[[], Any] | None = None,
    ) -> AsyncIterator[ConfigChange]:
        """Changes to the global keys and ``service``'s own, as they happen.

        ``on_ready()`` is called once the watch is subscribed: no change after it is missed.
        """
        kv = await self.open()
        # Current values come first, up to the one sent with nothing left pending (see
        # ConfigClient.start for why nats-py's own marker does not tell).
        caught_up = await self.is_empty()
        watcher = await kv.watch(">")
        if on_ready is not None:
            on_ready()
        try:
            async for entry in watcher:
                if entry is None:
                    continue
                current = not caught_up
                if current and not entry.delta:
                    caught_up = True
                if current and not include_current:
                    continue
                parsed = parse_kv_key(entry.key)
                if parsed is None or (parsed[0] is not None and parsed[0] != service):
                    continue
                deleted = entry.operation in DELETED
                yield ConfigChange(
                    parsed[0],
                    parsed[1],
                    None if deleted or entry.value is None else orjson.loads(entry.value),
                    entry.revision or 0,
                    deleted,
                )
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]
