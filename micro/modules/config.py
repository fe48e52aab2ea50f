"""The ``config`` module: configuration on a NATS KV bucket, with a typed client.

One bucket per namespace (``<namespace>_config``), keeping ``config_history`` values per key.
A key is global (``global.<key>``: every service sees it) or belongs to one service
(``service.<service>.<key>``, which overrides the global one for that service). Values are
JSON.

A service declares its configuration as a pydantic model; at start the client registers
the model's JSON Schema in the bucket (``schema.<service>``), loads the values, and then
follows the bucket live, calling the registered callbacks on each change::

    class BankConfig(BaseModel):
        max_transfer: int = 1000

    config = micro.modules.get("config").use(BankConfig)
    config.on_change(lambda new, old: log.info("limit", limit=new.max_transfer))
    micro.modules.want(["config"])
    ...
    config.value.max_transfer

``ConfigStore.set`` (and ``micro config set``) refuses a value that fails a registered
schema. A value that still reaches a client invalid (set before the schema existed, or
written to the bucket directly) is refused by the client: it keeps its previous
configuration and logs why.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

import jsonschema
import orjson
import pydantic
import structlog
from nats.aio.client import Client
from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NoKeysError
from nats.js.kv import KeyValue
from pydantic import BaseModel

from micro._tasks import stop_task
from micro.bus.endpoint import field_errors
from micro.errors import ConfigError, NotFoundError, UnavailableError, ValidationError

if TYPE_CHECKING:
    from micro.app import Micro

__all__ = ["ConfigChange", "ConfigClient", "ConfigEntry", "ConfigStore", "bucket_name"]

_log = structlog.get_logger("micro.config")

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_SERVICE = re.compile(r"^[A-Za-z0-9_-]+$")
_DELETED = ("DEL", "PURGE")

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


def _parse_kv_key(kv_key: str) -> tuple[str | None, str] | None:
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
        if entry is None or entry.value is None or entry.operation in _DELETED:
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
                entry.operation in _DELETED,
            )
            for entry in entries
        ]

    async def entries(self, service: str | None = None) -> list[ConfigEntry]:
        """The global values and, with ``service``, that service's own, sorted."""
        kv = await self.open()
        found = []
        for kv_key in await self._keys(">"):
            parsed = _parse_kv_key(kv_key)
            if parsed is None or (parsed[0] is not None and parsed[0] != service):
                continue
            with contextlib.suppress(KeyNotFoundError):
                entry = await kv.get(kv_key)
                if entry.value is not None and entry.operation not in _DELETED:
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
                parsed = _parse_kv_key(entry.key)
                if parsed is None or (parsed[0] is not None and parsed[0] != service):
                    continue
                deleted = entry.operation in _DELETED
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


class ConfigClient:
    """A service's typed, live configuration (the ``config`` module)."""

    def __init__(self, micro: Micro) -> None:
        self.micro = micro
        self.model: type[BaseModel] | None = None
        self.value: Any = None
        """The current configuration: a ``model`` instance, or a dict without a model."""
        self.store: ConfigStore | None = None
        self._callbacks: list[Callback] = []
        self._global: dict[str, Any] = {}
        self._own: dict[str, Any] = {}
        self._task: asyncio.Task[None] | None = None
        self._watcher: Any = None
        self.applied = 0
        """Changes received since start (applied or refused): tests wait on it."""
        self._changed = asyncio.Condition()

    def use(self, model: type[BaseModel]) -> Self:
        """Type the configuration with a pydantic model (its schema is registered at start)."""
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError("config.use() takes a pydantic model class")
        self.model = model
        return self

    def on_change(self, callback: Callback) -> Callback:
        """Call ``callback(new, old)`` (sync or async) after each accepted change."""
        if not callable(callback):
            raise TypeError("on_change takes a function of (new, old)")
        self._callbacks.append(callback)
        return callback

    def _build(self, global_values: dict[str, Any], own: dict[str, Any]) -> Any:
        merged = {**global_values, **own}
        if self.model is None:
            return merged
        known = self.model.model_fields
        # Global keys meant for other services are not this model's business.
        relevant = {k: v for k, v in global_values.items() if k in known} | own
        return self.model.model_validate(relevant)

    async def start(self) -> None:
        client = self.micro.client
        if client is None:
            raise UnavailableError("the config client needs a connected Micro")
        settings = self.micro.settings
        self.store = ConfigStore(client, settings.namespace, history=settings.config_history)
        kv = await self.store.open()
        if self.model is not None:
            await self.store.register_schema(settings.service, self.model.model_json_schema())
        # The watch starts with the newest value of every key; the one it sends with nothing
        # left pending ends the initial load. (nats-py's own "no more values" marker can
        # come before a value still on its way, so it ends the load only of an empty bucket.)
        empty = await self.store.is_empty()
        self._watcher = await kv.watch(">")
        while True:
            entry = await self._watcher.updates(timeout=settings.request_timeout)
            if entry is None:
                if empty:
                    break
                continue
            self._take(entry, self._global, self._own)
            if not entry.delta:
                break
        try:
            self.value = self._build(self._global, self._own)
        except pydantic.ValidationError as error:
            await self._watcher.stop()
            problems = "; ".join(f"{f['field']}: {f['reason']}" for f in field_errors(error))
            raise ConfigError(f"the stored configuration is invalid: {problems}") from None
        self._task = asyncio.create_task(self._follow(), name="micro: config watch")

    def _take(self, entry: Any, global_values: dict[str, Any], own: dict[str, Any]) -> bool:
        """Apply one KV entry to the two maps; False when it is not ours."""
        parsed = _parse_kv_key(entry.key)
        if parsed is None:
            return False
        service, key = parsed
        if service is not None and service != self.micro.settings.service:
            return False
        target = global_values if service is None else own
        if entry.operation in _DELETED or entry.value is None:
            target.pop(key, None)
        else:
            try:
                target[key] = orjson.loads(entry.value)
            except orjson.JSONDecodeError:
                _log.warning("config value is not JSON: ignored", key=key, service=service)
                return False
        return True

    async def _follow(self) -> None:
        try:
            async for entry in self._watcher:
                if entry is None:
                    continue
                await self._apply(entry)
        except asyncio.CancelledError:
            raise
        except Exception:
            _log.exception("config watch stopped")

    async def _apply(self, entry: Any) -> None:
        global_values, own = dict(self._global), dict(self._own)
        try:
            if not self._take(entry, global_values, own):
                return
            try:
                new = self._build(global_values, own)
            except pydantic.ValidationError as error:
                _log.warning(
                    "config change refused: keeping the previous configuration",
                    key=entry.key,
                    revision=entry.revision,
                    problems=[f"{f['field']}: {f['reason']}" for f in field_errors(error)],
                )
                return
            old, self.value = self.value, new
            self._global, self._own = global_values, own
            _log.info("config changed", key=entry.key, revision=entry.revision)
            for callback in self._callbacks:
                try:
                    result = callback(new, old)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    _log.exception("config callback failed", key=entry.key)
        finally:
            async with self._changed:
                self.applied += 1
                self._changed.notify_all()

    async def wait_for_changes(self, count: int, timeout: float = 5.0) -> None:
        """Wait until ``count`` changes were received since start (``TimeoutError`` after)."""
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: self.applied >= count), timeout=timeout
            )

    def get(self, key: str, default: Any = None) -> Any:
        """One value of the current configuration."""
        if isinstance(self.value, BaseModel):
            return getattr(self.value, key, default)
        if isinstance(self.value, dict):
            return self.value.get(key, default)
        return default

    async def set(self, key: str, value: Any, *, scope: str = "service") -> int:
        """Store a value for this service (``scope="service"``) or for all (``"global"``)."""
        if self.store is None:
            raise UnavailableError("the config client has not started")
        service = self.micro.settings.service if scope == "service" else None
        return await self.store.set(key, value, service)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await self._watcher.stop()
            self._watcher = None
