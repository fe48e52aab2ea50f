"""A directory that follows discovery: the running instances of one namespace, kept stable.

One look at discovery can miss an instance that answers late, and a view rebuilt from each
look would drop it and take it back at the next. The directory keeps an instance until it
missed ``missed_rounds`` looks in a row, or until it announced its stop; an instance that
announces its start (or answers a look) shows at once. Looks cut short by the deadline
count no misses: the instances not heard from were most likely still answering.

Looks ask for the lean ``INFO`` (no JSON Schemas); the schemas of an instance never change,
so they are fetched once, when the instance is new or its endpoints changed. Both the
gateway's route table and ``Micro.discover`` follow a directory.

Usage::

    directory = Directory(micro.client, namespace=micro.settings.namespace)
    await directory.start()                     # follow start and stop announcements
    await directory.look()                      # one round; call it again to follow
    print([record.service for record in directory.records])
    await directory.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable

import orjson
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from micro.bus.subjects import announce_subject
from micro.discovery import (
    DEFAULT_DEADLINE,
    DEFAULT_GAP,
    ServiceList,
    ServiceRecord,
    check_positive,
    list_services,
)
from micro.errors import DiscoveryTimeoutError, ValidationError

__all__ = ["DEFAULT_MISSED_ROUNDS", "Directory", "discover"]

_log = structlog.get_logger("micro.directory")

DEFAULT_MISSED_ROUNDS = 3
"""Looks in a row an instance may miss before the directory lets it go."""
_ONE_BY_ONE = 8
# New instances of one service up to this many are asked one by one; more, all at once.
_FETCHES_AT_ONCE = 32
_NOTIFY_DELAY = 0.05
_MANY_NEW = 64
# More new instances than this in one look (or announced together) are asked all at once.
_STOPPED_MEMORY = 60.0
# Seconds a stopped id is remembered: a look under way may still bring its last answer.


def _shape(record: ServiceRecord) -> tuple[str, tuple[tuple[str, str], ...]]:
    return record.version, tuple(sorted((e.name, e.subject) for e in record.endpoints))


class Directory:
    """The instances of ``namespace`` (every namespace when ``None``) that discovery sees.

    ``schemas=False`` keeps records without JSON Schemas (enough to know who runs).
    ``on_change`` is called after ``records`` changed (once for a burst of changes).
    """

    def __init__(
        self,
        client: Client,
        *,
        namespace: str | None,
        gap: float = DEFAULT_GAP,
        deadline: float = DEFAULT_DEADLINE,
        missed_rounds: int = DEFAULT_MISSED_ROUNDS,
        schemas: bool = True,
        on_change: Callable[[], object] | None = None,
    ) -> None:
        check_positive("gap", gap)
        check_positive("deadline", deadline)
        check_positive("missed_rounds", missed_rounds)
        self.client = client
        self.namespace = namespace
        self.gap = gap
        self.deadline = deadline
        self.missed_rounds = missed_rounds
        self.schemas = schemas
        self.on_change = on_change
        self.partial = False
        """Whether the last look was cut short by the deadline."""
        self.rounds = 0
        self._records: dict[str, ServiceRecord] = {}
        self._missed: dict[str, int] = {}
        self._stopped: dict[str, tuple[float, ServiceRecord | None]] = {}
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._subscription: Subscription | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Thousands of instances starting together must not become thousands of requests
        # in flight at once; the next look finds any still waiting here.
        self._fetching = asyncio.Semaphore(_FETCHES_AT_ONCE)
        self._pending: dict[str, str] = {}
        self._draining: asyncio.Task[None] | None = None
        self._notice: asyncio.TimerHandle | None = None

    @property
    def records(self) -> list[ServiceRecord]:
        """The instances in the directory, by service then id."""
        return sorted(self._records.values(), key=lambda record: (record.service, record.id))

    def services(self) -> set[str]:
        return {record.service for record in self._records.values()}

    def stopped_within(self, seconds: float) -> list[ServiceRecord]:
        """The instances that announced their stop in the last ``seconds``."""
        now = time.monotonic()
        return [
            record
            for at, record in self._stopped.values()
            if record is not None and now - at < seconds
        ]

    # -- announcements -------------------------------------------------------------------

    async def start(self) -> None:
        """Follow the start and stop announcements of the namespace's instances."""
        if self._subscription is not None or self.namespace is None:
            return
        self._subscription = await self.client.subscribe(
            announce_subject(self.namespace, "*"), cb=self._on_announcement
        )

    async def stop(self) -> None:
        if self._notice is not None:
            self._notice.cancel()
            self._notice = None
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        tasks, self._tasks = self._tasks, set()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    async def _on_announcement(self, msg: Msg) -> None:
        try:
            body = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(body, dict):
            return
        name, instance = body.get("name"), body.get("id")
        if not isinstance(name, str) or not isinstance(instance, str):
            return
        if msg.subject.endswith(".stopped"):
            record = self._records.pop(instance, None)
            self._stopped[instance] = (time.monotonic(), record)
            if record is not None:
                self._missed.pop(instance, None)
                self._notify()
        elif msg.subject.endswith(".started") and instance not in self._records:
            self._pending[instance] = name
            if self._draining is None or self._draining.done():
                self._draining = asyncio.create_task(self._drain())
                self._tasks.add(self._draining)
                self._draining.add_done_callback(self._tasks.discard)

    async def _drain(self) -> None:
        # Announcements that arrive together are handled together: a few are asked one by
        # one, many by a look (which asks them all at once).
        while self._pending:
            batch, self._pending = self._pending, {}
            if len(batch) > _ONE_BY_ONE:
                try:
                    await self.look()
                except Exception as error:
                    _log.warning("cannot look at started instances", error=str(error))
                continue
            await asyncio.gather(*(self._fetch(name, i) for i, name in batch.items()))

    async def _fetch(self, name: str, instance: str) -> None:
        try:
            async with self._fetching:
                if instance in self._records or instance in self._stopped:
                    return  # a look found it meanwhile, or it stopped already
                found = await list_services(
                    self.client,
                    namespace=self.namespace,
                    service=name,
                    instance=instance,
                    schemas=self.schemas,
                    gap=self.gap,
                    deadline=self.deadline,
                    expected=[instance],
                )
        except Exception as error:
            _log.warning("cannot look at a started instance", service=name, error=str(error))
            return
        for record in found:
            if record.id == instance and instance not in self._stopped:
                self._records[instance] = record
                self._missed.pop(instance, None)
                self._notify()

    def _notify(self) -> None:
        # on_change runs once per burst, not per change: two thousand stop announcements
        # must not rebuild a route table two thousand times.
        self._changed.set()
        if self.on_change is not None and self._notice is None:
            self._notice = asyncio.get_running_loop().call_later(_NOTIFY_DELAY, self._fire)

    def _fire(self) -> None:
        self._notice = None
        if self.on_change is not None:
            self.on_change()

    # -- looks ---------------------------------------------------------------------------

    async def look(self) -> list[ServiceRecord]:
        """One round: ask every instance, merge the answers, return ``records``."""
        async with self._lock:
            known = dict(self._records)
            lean = self.schemas and bool(known)
            answered = await list_services(
                self.client,
                namespace=self.namespace,
                schemas=self.schemas and not lean,
                gap=self.gap,
                deadline=self.deadline,
                expected=known,
            )
            if lean:
                answered = await self._with_schemas(answered, known)
            self._merge(answered, known)
            self.rounds += 1
            return self.records

    async def _with_schemas(
        self, answered: ServiceList, known: dict[str, ServiceRecord]
    ) -> ServiceList:
        # Known instances keep their records; new or changed ones are asked again in full,
        # one request per service (all its instances answer, the new ones are waited for).
        records: list[ServiceRecord] = []
        unknown: dict[str, set[str]] = {}
        for record in answered:
            old = known.get(record.id)
            if old is not None and _shape(old) == _shape(record):
                records.append(old)
            else:
                unknown.setdefault(record.service, set()).add(record.id)
        partial = answered.partial
        new = {instance for ids in unknown.values() for instance in ids}
        if len(new) > _MANY_NEW:
            # Many new instances (a fleet starting): one request answered by all in full
            # costs less than one per service or per instance.
            everyone = await list_services(
                self.client,
                namespace=self.namespace,
                gap=self.gap,
                deadline=self.deadline,
                expected=new,
            )
            records.extend(record for record in everyone if record.id in new)
            return ServiceList(records, partial=partial or everyone.partial)
        asks = [
            (service, instance, ids)
            for service, ids in sorted(unknown.items())
            for instance in (sorted(ids) if len(ids) <= _ONE_BY_ONE else [None])
        ]
        fetched = await asyncio.gather(
            *(
                list_services(
                    self.client,
                    namespace=self.namespace,
                    service=service,
                    instance=instance,
                    gap=self.gap,
                    deadline=self.deadline,
                    expected=ids if instance is None else [instance],
                )
                for service, instance, ids in asks
            )
        )
        for service_list, (_, _, ids) in zip(fetched, asks, strict=True):
            partial = partial or service_list.partial
            records.extend(record for record in service_list if record.id in ids)
        return ServiceList(records, partial=partial)

    def _merge(self, answered: ServiceList, known: dict[str, ServiceRecord]) -> None:
        now = time.monotonic()
        self._stopped = {
            instance: stop
            for instance, stop in self._stopped.items()
            if now - stop[0] < _STOPPED_MEMORY
        }
        changed = False
        seen: set[str] = set()
        for record in answered:
            if record.id in self._stopped:
                continue
            seen.add(record.id)
            self._missed.pop(record.id, None)
            if self._records.get(record.id) != record:
                self._records[record.id] = record
                changed = True
        self.partial = answered.partial
        if not answered.partial:
            for instance in set(known) - seen:
                if instance not in self._records:
                    continue  # stopped meanwhile
                missed = self._missed.get(instance, 0) + 1
                if missed >= self.missed_rounds:
                    del self._records[instance]
                    self._missed.pop(instance, None)
                    changed = True
                else:
                    self._missed[instance] = missed
        if answered.partial:
            _log.warning("look at discovery cut short by its deadline", deadline=self.deadline)
        if changed:
            self._notify()

    async def wait_for(
        self,
        wanted: Iterable[str],
        *,
        timeout: float = 10.0,
        delay: float = 0.05,
        factor: float = 2.0,
        max_delay: float = 1.0,
    ) -> list[ServiceRecord]:
        """Look until every service in ``wanted`` has an instance; ``records`` then.

        Between looks it pauses ``delay`` seconds, growing by ``factor`` up to
        ``max_delay``, and wakes at once on an announcement; after ``timeout`` it raises
        ``DiscoveryTimeoutError`` naming the services still missing.
        """
        names = set(wanted)
        for field, value in (("timeout", timeout), ("delay", delay), ("max_delay", max_delay)):
            check_positive(field, value)
        if isinstance(factor, bool) or not isinstance(factor, int | float) or factor < 1:
            raise ValidationError(
                f"factor must be a number >= 1, not {factor!r}",
                details={"fields": [{"field": "factor", "reason": "below 1"}]},
            )
        end = time.monotonic() + timeout
        pause = delay
        while True:
            self._changed.clear()
            await self.look()
            missing = sorted(names - self.services())
            if not missing:
                return self.records
            left = end - time.monotonic()
            if left <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(pause, left))
            if not (names - self.services()):
                return self.records
            pause = min(max_delay, pause * factor)
        where = f" in namespace {self.namespace!r}" if self.namespace is not None else ""
        raise DiscoveryTimeoutError(
            f"services still missing after {timeout:g}s{where}: {', '.join(missing)}",
            details={"missing": missing, "namespace": self.namespace, "timeout": timeout},
        )


async def discover(
    client: Client,
    wait_for: str | Iterable[str],
    *,
    namespace: str | None,
    timeout: float = 10.0,
    delay: float = 0.05,
    factor: float = 2.0,
    max_delay: float = 1.0,
    gap: float = DEFAULT_GAP,
    deadline: float = DEFAULT_DEADLINE,
) -> list[ServiceRecord]:
    """Wait until every service in ``wait_for`` has at least one instance; the instances
    seen then (see ``Directory.wait_for``)."""
    wanted = {wait_for} if isinstance(wait_for, str) else set(wait_for)
    check_positive("timeout", timeout)
    # With schemas, as callers read them from the records; later looks stay lean anyway.
    follower = Directory(client, namespace=namespace, gap=gap, deadline=min(deadline, timeout))
    await follower.start()
    try:
        if not wanted:
            return await follower.look()
        return await follower.wait_for(
            wanted, timeout=timeout, delay=delay, factor=factor, max_delay=max_delay
        )
    finally:
        await follower.stop()
