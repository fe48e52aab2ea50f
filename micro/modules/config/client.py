"""The typed, live configuration of one service (the ``config`` module's client)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from typing import TYPE_CHECKING, Any, Self

import orjson
import pydantic
import structlog
from pydantic import BaseModel

from micro._tasks import stop_task
from micro.errors import ConfigError, UnavailableError, ValidationError
from micro.modules.config.store import DELETED, Callback, ConfigStore, parse_kv_key

if TYPE_CHECKING:
    from micro.host import Host

__all__ = ["ConfigClient"]

_log = structlog.get_logger("micro.config")


class ConfigClient:
    """A service's typed, live configuration (the ``config`` module)."""

    def __init__(self, micro: Host) -> None:
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
            problems = "; ".join(
                f"{f['field']}: {f['reason']}" for f in ValidationError.from_pydantic(error).fields
            )
            raise ConfigError(f"the stored configuration is invalid: {problems}") from None
        self._task = asyncio.create_task(self._follow(), name="micro: config watch")

    def _take(self, entry: Any, global_values: dict[str, Any], own: dict[str, Any]) -> bool:
        """Apply one KV entry to the two maps; False when it is not ours."""
        parsed = parse_kv_key(entry.key)
        if parsed is None:
            return False
        service, key = parsed
        if service is not None and service != self.micro.settings.service:
            return False
        target = global_values if service is None else own
        if entry.operation in DELETED or entry.value is None:
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
                    problems=[
                        f"{f['field']}: {f['reason']}"
                        for f in ValidationError.from_pydantic(error).fields
                    ],
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
