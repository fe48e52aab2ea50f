"""The snapshooter: models plus checkpoint saved to a JetStream object store.

Every ``snapshot_every_events`` applied events (or ``snapshot_every_seconds``, whichever comes
first, when anything changed) the models are dumped together with the projector's position,
stream versions and the idempotency keys it applied, each refused one with its refusal (so a
retry after a restart still finds its key). A restart loads the newest snapshot that is valid
(a format it reads, same model shapes) and replays only the events after it. A corrupt or
incompatible snapshot is skipped with a warning; with none left, the models replay from the
start.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from nats.js.errors import NotFoundError as NatsNotFoundError
from nats.js.object_store import ObjectStore

from micro._tasks import stop_task
from micro.telemetry import tracing

if TYPE_CHECKING:
    from micro.readmodel.projector import Projector

__all__ = ["SNAPSHOT_FORMAT", "Snapshooter"]

_log = structlog.get_logger("micro.snapshots")
SNAPSHOT_FORMAT = 3
"""3: each idempotency key with its refusal, if it was refused. 2: keys only (still read).
1 had no keys (not read: replaying rebuilds them)."""
_READABLE_FORMATS = (2, SNAPSHOT_FORMAT)
_KEEP = 3
_RESTORE_TIMEOUT = 10.0


class Snapshooter:
    """Saves and restores one service's models (the ``snapshooter`` module)."""

    def __init__(
        self,
        client: Any,
        *,
        namespace: str,
        service: str,
        every_events: int = 1000,
        every_seconds: float = 60.0,
    ) -> None:
        self.client = client
        self.bucket = f"{namespace}_snapshots"
        self.service = service
        self.every_events = every_events
        self.every_seconds = every_seconds
        self.projector: Projector | None = None
        self.saved_position = 0
        self.saves = 0
        self._store: ObjectStore | None = None
        self._task: asyncio.Task[None] | None = None

    async def _objects(self) -> ObjectStore:
        if self._store is None:
            jetstream = self.client.jetstream()
            try:
                self._store = await jetstream.object_store(self.bucket)
            except NatsNotFoundError:
                self._store = await jetstream.create_object_store(self.bucket)
        return self._store

    def _name(self, position: int) -> str:
        return f"{self.service}.{position:020d}"

    async def _names(self) -> list[str]:
        store = await self._objects()
        try:
            infos = await store.list()
        except NatsNotFoundError:
            return []
        prefix = f"{self.service}."
        return sorted(
            (info.name for info in infos if info.name.startswith(prefix) and not info.deleted),
            reverse=True,
        )

    # -- restoring ----------------------------------------------------------------------

    async def restore(self, projector: Projector) -> int:
        """Load the newest valid snapshot into the projector's models; its position."""
        with tracing.span("snapshot restore", **{"micro.service": self.service}) as span:
            position = await self._restore(projector)
            if span is not None:
                span.set_attribute("micro.position", position)
            return position

    async def _restore(self, projector: Projector) -> int:
        self.projector = projector
        store = await self._objects()
        for name in await self._names():
            try:
                # Bounded: a stuck read must cost a replay, never a service that won't start.
                result = await asyncio.wait_for(store.get(name), _RESTORE_TIMEOUT)
                snapshot = orjson.loads(result.data or b"")
                position = self._load(snapshot, projector)
            except Exception as error:
                _log.warning("snapshot skipped", snapshot=name, reason=str(error)[:300])
                for model in projector.models:
                    model.reset()
                projector.versions.clear()
                if projector.ledger is not None:
                    projector.ledger.clear()
                continue
            self.saved_position = position
            saved_at = snapshot.get("saved_at")
            projector.snapshot_at = saved_at if isinstance(saved_at, int | float) else None
            _log.info("snapshot loaded", snapshot=name, position=position)
            return position
        return 0

    def _load(self, snapshot: Any, projector: Projector) -> int:
        if not isinstance(snapshot, dict) or snapshot.get("format") not in _READABLE_FORMATS:
            raise ValueError("unknown snapshot format")
        if snapshot.get("service") != self.service:
            raise ValueError("snapshot of another service")
        stored = snapshot.get("models")
        if not isinstance(stored, dict) or set(stored) != set(projector.models.names()):
            raise ValueError("the snapshot's models are not this service's models")
        for model in projector.models:
            entry = stored[model.name]
            if entry.get("fingerprint") != model.schema_fingerprint():
                raise ValueError(f"model {model.name} changed shape since the snapshot")
            model.load(entry["records"])
        versions = snapshot.get("versions")
        position = snapshot.get("position")
        if not isinstance(versions, dict) or not isinstance(position, int) or position < 0:
            raise ValueError("snapshot has no valid checkpoint")
        keys = snapshot.get("keys")
        if not isinstance(keys, list):
            raise ValueError("snapshot has no idempotency keys")
        projector.versions.clear()
        projector.versions.update({str(k): int(v) for k, v in versions.items()})
        if projector.ledger is not None:
            projector.ledger.clear()
            projector.ledger.load(keys, snapshot_format=int(snapshot["format"]))
        projector.position = position
        return position

    # -- saving -------------------------------------------------------------------------

    def _dump(self, projector: Projector) -> tuple[int, bytes]:
        # No await in here: the projector applies events between awaits only, so this dump
        # is one consistent cut of all models at one position.
        snapshot = {
            "format": SNAPSHOT_FORMAT,
            "service": self.service,
            "position": projector.position,
            "versions": projector.versions,
            # Retries of commands before the snapshot must still find their keys after it.
            "keys": projector.ledger.dump() if projector.ledger is not None else [],
            "saved_at": time.time(),
            "models": {
                model.name: {"fingerprint": model.schema_fingerprint(), "records": model.dump()}
                for model in projector.models
            },
        }
        return projector.position, orjson.dumps(snapshot)

    async def save(self) -> int:
        """Save a snapshot now; returns its position."""
        with tracing.span("snapshot save", **{"micro.service": self.service}) as span:
            position = await self._save()
            if span is not None:
                span.set_attribute("micro.position", position)
            return position

    async def _save(self) -> int:
        if self.projector is None:
            raise RuntimeError("the snapshooter is not attached to a projector")
        position, data = self._dump(self.projector)
        store = await self._objects()
        await store.put(self._name(position), data)
        self.saved_position = position
        self.projector.snapshot_at = time.time()
        self.saves += 1
        for old in (await self._names())[_KEEP:]:
            with contextlib.suppress(Exception):
                await store.delete(old)
        _log.info("snapshot saved", position=position, bytes=len(data))
        return position

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="snapshooter")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)

    async def _loop(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(min(1.0, self.every_seconds))
            projector = self.projector
            if projector is None or projector.failure is not None:
                continue
            behind = projector.position - self.saved_position
            due = behind >= self.every_events or (
                behind > 0 and time.monotonic() - last >= self.every_seconds
            )
            if not due:
                continue
            try:
                await self.save()
            except Exception as error:
                _log.warning("snapshot save failed", reason=str(error))
            last = time.monotonic()
