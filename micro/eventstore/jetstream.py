"""The event store on NATS JetStream: one stream, one subject per event stream.

Layout, for namespace ``micro``::

    JetStream stream  MICRO_EVENTS   (file storage, subjects micro.ev.>)
    event subject     micro.ev.<stream>
    global position   the JetStream stream sequence
    message body      {"id", "type", "version", "data", "metadata"} as JSON
    headers           Nats-Msg-Id (event id), Nats-Expected-Last-Subject-Sequence,
                      and the atomic batch headers for multi-event appends (ADR-50)

JetStream has no per-subject counter, so each event carries its version in the body and
optimistic concurrency rides on ``Nats-Expected-Last-Subject-Sequence``: the store keeps
``stream -> (version, last sequence)`` in a local cache, so the usual append is one round
trip; a refusal refreshes the entry from the server and only becomes a
``ConcurrencyError`` when the real version differs from the expected one.

Retries are idempotent. ``Nats-Msg-Id`` is the event id, so the server drops a duplicate
inside its duplicate window. Two server behaviours need help, both seen on nats-server 2.15:

* a retried single publish whose expected-sequence header is now stale is refused with
  err 10071 ("wrong last sequence") rather than deduplicated;
* a retried atomic batch is refused with err 10201 ("batch contains duplicate message id").

In both cases the store looks at what the subject holds and, when it finds the very events
being appended, returns the original result instead of an error. On a clustered stream, an
append of an event id whose first append is still being replicated (two instances serving
one retried command) is refused with err 10158 ("duplicate message id is in process"); the
store waits a moment and tries again, which then finds the first append's outcome.

Writing: appends to different streams that arrive while one is out at the server leave
together as one atomic batch (``_group_commit``): one disk sync and one acknowledgement for
the group, each message still checked against its own expected sequence.

Reading: ``read`` pages through one subject with batched direct gets (ADR-31);
``read_all`` and ``subscribe`` drain an ephemeral pull consumer, history and live alike.

Limits worth knowing:

* at most 1000 events per append (the server's atomic batch limit);
* the stream denies deleting and purging messages: events are history;
* a retry with ``ANY`` after the duplicate window (and after other appends to the stream)
  appends again, as nothing is left to recognise it by; int and ``NO_STREAM`` retries are
  recognised at any age, from the events stored after the expected version;
* with replicas > 1 a direct get may be answered by a replica that lags a little, so a
  ``read`` can miss an append made an instant earlier elsewhere; appends stay safe, the
  leader checks the expected sequence.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import time
import uuid
import weakref
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Final

import orjson
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.errors import MaxPayloadError, NoRespondersError

from micro._inbox import ReplyInbox
from micro._keyed_locks import KeyedLocks
from micro.bus.nats_client import ConnectOptions, open_client
from micro.errors import (
    ConcurrencyError,
    ConfigError,
    ConflictError,
    EventStoreUnavailableError,
    InternalError,
    MicroError,
    PayloadTooLargeError,
    ValidationError,
)
from micro.eventstore._encoding import check_unique_ids, dumps, recorded_at
from micro.eventstore._group_commit import MAX_BATCH, GroupCommit, Outgoing
from micro.eventstore.base import (
    ANY,
    EXISTS,
    NO_STREAM,
    AppendResult,
    EventStore,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
    validate_append,
    validate_stream_name,
)

__all__ = ["JetStreamEventStore"]

_log = structlog.get_logger("micro.eventstore")

MAX_EVENTS_PER_APPEND: Final = MAX_BATCH
"""The server's limit on messages in one atomic batch."""

_NAMESPACE = re.compile(r"^[A-Za-z0-9_-]+$")
_NANOS = 1_000_000_000
_MAX_ATTEMPTS = 25  # appends refused because another writer moved the stream first
_CACHE_SIZE = 50_000
_READ_PAGE = 1000  # messages per batched direct get
_PULL_BATCH = 4000  # messages per pull request while replaying (1000 measured ~15% slower)
_HEARTBEAT = 5.0  # seconds between server heartbeats on an idle subscription
_WAKE = 0.5  # seconds an idle subscription waits before checking its connection

# JetStream API error codes the store reacts to.
_WRONG_LAST_SEQUENCE = {10071, 10164}
_BATCH_DUPLICATE_ID = 10201
_DUPLICATE_IN_PROCESS = 10158
_STREAM_NOT_FOUND = 10059
_STREAM_NAME_IN_USE = 10058
_NO_MESSAGE_FOUND = 10037
_PAYLOAD_TOO_LARGE = 10054


class _Subjects:
    """Every subject and name the store uses, built in this one place."""

    def __init__(self, namespace: str, owner: str | None = None) -> None:
        self.stream = f"{namespace.upper()}_EVENTS"
        self.prefix = f"{namespace}.ev."
        self.filter = f"{namespace}.ev.>"
        # <namespace>.ev.<owner>.<stream>: permissions can then let a service append to its
        # own streams only. Without an owner, the first layout: <namespace>.ev.<stream>.
        self.owned = f"{self.prefix}{owner}." if owner else self.prefix
        self.legacy_filter = f"{namespace}.ev.*"
        api = "$JS.API"
        self.stream_info = f"{api}.STREAM.INFO.{self.stream}"
        self.stream_create = f"{api}.STREAM.CREATE.{self.stream}"
        self.message_get = f"{api}.STREAM.MSG.GET.{self.stream}"
        self.direct_get = f"{api}.DIRECT.GET.{self.stream}"
        self._consumer = f"{api}.CONSUMER"

    def event(self, stream: str) -> str:
        return self.owned + stream

    def legacy(self, stream: str) -> str:
        return self.prefix + stream

    def consumer_create(self, name: str) -> str:
        return f"{self._consumer}.CREATE.{self.stream}.{name}"

    def consumer_delete(self, name: str) -> str:
        return f"{self._consumer}.DELETE.{self.stream}.{name}"

    def consumer_next(self, name: str) -> str:
        return f"{self._consumer}.MSG.NEXT.{self.stream}.{name}"


@dataclass(frozen=True, slots=True)
class _Head:
    """What the store knows of a stream's last event."""

    version: int | None
    sequence: int
    last_id: uuid.UUID | None = None


_EMPTY = _Head(version=None, sequence=0)


class _ApiError(Exception):
    """A JetStream API error reply, before translation into a ``MicroError``."""

    def __init__(self, error: dict[str, Any]) -> None:
        self.code = int(error.get("code") or 0)
        self.err_code = int(error.get("err_code") or 0)
        self.description = str(error.get("description") or "JetStream error")
        super().__init__(f"{self.description} (err_code {self.err_code})")


def _unavailable(what: str, error: BaseException) -> EventStoreUnavailableError:
    reason = str(error) or type(error).__name__
    return EventStoreUnavailableError(f"event store unavailable: {what}: {reason}")


def _translate(what: str, error: _ApiError) -> MicroError:
    if error.code == 503:
        return _unavailable(what, error)
    if error.err_code == _PAYLOAD_TOO_LARGE:
        return PayloadTooLargeError(f"{what}: {error.description}")
    return InternalError(f"{what}: JetStream refused: {error}", details={"err": error.err_code})


def _envelope(event_id: str, event_type: str, version: int, data: bytes, metadata: bytes) -> bytes:
    # The data and metadata were encoded (and checked) once; only the version changes
    # between attempts, so the body is assembled from bytes.
    return b"".join(
        (
            b'{"id":"',
            event_id.encode(),
            b'","type":',
            orjson.dumps(event_type),
            b',"version":',
            str(version).encode(),
            b',"data":',
            data,
            b',"metadata":',
            metadata,
            b"}",
        )
    )


def _uuid_parser() -> Callable[[str], uuid.UUID]:
    """``uuid.UUID(text)`` for the ids this store wrote, at half the cost.

    Replay is bound by per-event CPU; the full constructor accepts many spellings we never
    write. Falls back to it should ``uuid.UUID`` ever change its slots.
    """
    if set(getattr(uuid.UUID, "__slots__", ())) < {"int", "is_safe"}:
        return uuid.UUID
    new, assign, unknown, cls = object.__new__, object.__setattr__, uuid.SafeUUID.unknown, uuid.UUID

    def parse(text: str) -> uuid.UUID:
        if len(text) != 36:
            return cls(text)  # not one of ours: let the real parser judge it
        value = new(cls)
        assign(value, "int", int(text.replace("-", ""), 16))
        assign(value, "is_safe", unknown)
        return value

    return parse


def _event_builder() -> Callable[..., RecordedEvent]:
    """``RecordedEvent(...)`` without the frozen dataclass ``__init__``, for replay.

    A frozen dataclass sets each field through ``object.__setattr__``; the slot descriptors
    do the same job in half the time. Falls back to the class if its fields change.
    """
    order = ("id", "type", "stream", "version", "position", "data", "metadata")
    slots: list[Any] = [RecordedEvent.__dict__.get(field.name) for field in fields(RecordedEvent)]
    if tuple(field.name for field in fields(RecordedEvent)) != order or not all(
        hasattr(slot, "__set__") for slot in slots
    ):
        return RecordedEvent
    set_id, set_type, set_stream, set_version, set_position, set_data, set_metadata = (
        slot.__set__ for slot in slots
    )
    new = object.__new__

    def build(
        id: uuid.UUID,
        type: str,
        stream: str,
        version: int,
        position: int,
        data: dict[str, Any],
        metadata: dict[str, Any],
    ) -> RecordedEvent:
        event: RecordedEvent = new(RecordedEvent)
        set_id(event, id)
        set_type(event, type)
        set_stream(event, stream)
        set_version(event, version)
        set_position(event, position)
        set_data(event, data)
        set_metadata(event, metadata)
        return event

    return build


_parse_uuid = _uuid_parser()
_build_event = _event_builder()


class JetStreamEventStore(EventStore):
    """Events in one JetStream stream, global position = stream sequence.

    Given a ``client`` (a service's shared nats-py connection) the store uses it and leaves
    it open on ``close``; given a ``url`` it connects itself (with ``connect_options``: TLS,
    credentials, inbox prefix) and closes what it opened. With an ``owner`` (the service
    name) it appends to ``<namespace>.ev.<owner>.<stream>``, which permissions can scope,
    and still finds, and keeps appending to, streams stored under the first layout
    (``<namespace>.ev.<stream>``); it reads every stream of the namespace either way.
    ``timeout`` bounds each request to JetStream; ``start_timeout`` is how long ``start``
    waits for a cluster that does not answer yet (still electing its leaders).

    Usage::

        async with JetStreamEventStore(url="nats://127.0.0.1:4222") as store:
            await store.append("account-1", [NewEvent("AccountOpened", {})], NO_STREAM)
    """

    def __init__(
        self,
        client: Client | None = None,
        *,
        url: str | None = None,
        namespace: str = "micro",
        replicas: int = 1,
        duplicate_window: float = 120.0,
        max_event_bytes: int | None = None,
        timeout: float = 5.0,
        start_timeout: float = 30.0,
        connect_options: ConnectOptions | None = None,
        owner: str | None = None,
    ) -> None:
        if client is None and not url:
            raise ConfigError("JetStreamEventStore needs a nats-py client or a url")
        if not _NAMESPACE.match(namespace):
            raise ConfigError(f"namespace {namespace!r} may use only letters, digits, - and _")
        if not 1 <= replicas <= 5:
            raise ConfigError(f"replicas must be between 1 and 5, not {replicas}")
        if duplicate_window <= 0:
            raise ConfigError("duplicate_window must be a positive number of seconds")
        if max_event_bytes is not None and max_event_bytes <= 0:
            raise ConfigError("max_event_bytes must be positive")
        if start_timeout < 0:
            raise ConfigError("start_timeout must be zero or a positive number of seconds")
        if owner is not None and not _NAMESPACE.match(owner):
            raise ConfigError(f"owner {owner!r} may use only letters, digits, - and _")
        self._client = client
        self._url = url
        self._connect_options = connect_options or ConnectOptions()
        self._owns_client = client is None
        self._subjects = _Subjects(namespace, owner)
        self._owner = owner
        # Set at start when the store holds streams in the first layout: each stream is
        # then looked for there too, and one found there stays there.
        self._legacy = False
        self._legacy_subjects: OrderedDict[str, str] = OrderedDict()
        self._replicas = replicas
        self._duplicate_window = duplicate_window
        self._max_event_bytes = max_event_bytes
        self._timeout = timeout
        self._start_timeout = start_timeout
        self._heads: OrderedDict[str, _Head] = OrderedDict()
        # One lock per stream while someone appends to it: appends to one stream from this
        # process queue up instead of racing each other through refusals.
        self._locks = KeyedLocks()
        self._start_lock = asyncio.Lock()
        self._started = False
        self._replies: _ReplyRouter | None = None
        self._commits: GroupCommit | None = None
        self._pullers: weakref.WeakSet[_Puller] = weakref.WeakSet()

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def client(self) -> Client:
        if self._client is None or not self._started:
            raise ConfigError("the event store is not started: call start() or use async with")
        return self._client

    @property
    def stream_name(self) -> str:
        """Name of the JetStream stream holding the events."""
        return self._subjects.stream

    async def start(self) -> None:
        async with self._start_lock:
            if self._started:
                return
            if self._client is None:
                # The same helper as every other connection: same TLS, credentials,
                # inbox prefix, and an error naming the server, never the password.
                self._client = await open_client(
                    self._url or "",
                    self._connect_options,
                    name="micro-eventstore",
                    connect_timeout=2.0,
                    unavailable=EventStoreUnavailableError,
                )
            try:
                await self._ensure_stream_in_time(self._client)
                if self._owner is not None:
                    self._legacy = await self._holds_legacy_streams(self._client)
                self._replies = _ReplyRouter(self._client)
                await self._replies.start()
                client = self._client

                async def publish(subject: str, body: bytes, headers: dict[str, str]) -> None:
                    await client.publish(subject, body, headers=headers)

                self._commits = GroupCommit(self._replies.request, publish, self._timeout)
            except BaseException:
                if self._owns_client:
                    await self._client.close()
                    self._client = None
                raise
            self._started = True

    async def close(self) -> None:
        async with self._start_lock:
            if not self._started:
                return
            self._started = False
            for puller in list(self._pullers):
                puller.stop()  # open subscriptions end with an error, not silently
            commits, self._commits = self._commits, None
            if commits is not None:
                commits.stop()  # before the replies: no batch may leave into a closed inbox
            if self._replies is not None:
                await self._replies.close()
                self._replies = None
            if commits is not None:
                await commits.close()
            if self._owns_client and self._client is not None:
                with contextlib.suppress(NatsError, OSError):
                    await self._client.close()
                self._client = None

    def _stream_config(self) -> dict[str, Any]:
        return {
            "name": self._subjects.stream,
            "description": "micro events",
            "subjects": [self._subjects.filter],
            "retention": "limits",
            "storage": "file",
            "num_replicas": self._replicas,
            "discard": "old",
            "max_msgs": -1,
            "max_bytes": -1,
            "max_age": 0,
            "max_msgs_per_subject": -1,
            "max_msg_size": -1,
            "duplicate_window": int(self._duplicate_window * _NANOS),
            "allow_atomic": True,
            "allow_direct": True,
            # Events are history: nothing may remove them one by one or in bulk.
            "deny_delete": True,
            "deny_purge": True,
        }

    async def _ensure_stream_in_time(self, client: Client) -> None:
        """``_ensure_stream``, asked again while JetStream is only slow to answer.

        A cluster that is still electing its leaders (just started, or a node just came
        back) lets stream requests time out for a few seconds; a service starting then
        waits for it, up to ``start_timeout``, instead of dying. A server without
        JetStream (no responders) or a refusal is an answer, and fails at once.
        """
        deadline = time.monotonic() + self._start_timeout
        delay = 0.1
        while True:
            try:
                await self._ensure_stream(client)
                return
            except EventStoreUnavailableError as error:
                if isinstance(error.__cause__, NoRespondersError):
                    raise
                if time.monotonic() + delay > deadline:
                    raise
                _log.warning(
                    "JetStream is not answering yet; asking again",
                    stream=self._subjects.stream,
                    reason=str(error),
                    retry_in=delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _ensure_stream(self, client: Client) -> None:
        what = f"stream {self._subjects.stream}"
        try:
            info = await self._api(client, self._subjects.stream_info, b"")
        except _ApiError as error:
            if error.err_code != _STREAM_NOT_FOUND:
                raise _translate(what, error) from error
            try:
                info = await self._api(
                    client, self._subjects.stream_create, orjson.dumps(self._stream_config())
                )
            except _ApiError as create_error:
                if create_error.err_code != _STREAM_NAME_IN_USE:
                    raise _translate(f"creating {what}", create_error) from create_error
                # Another process created it first: check what it made.
                info = await self._stream_info(client)
            else:
                _log.info("created event stream", stream=self._subjects.stream)
        self._check_config(info.get("config") or {})

    async def _holds_legacy_streams(self, client: Client) -> bool:
        """Whether any stream lives on a first-layout subject (``<namespace>.ev.<stream>``)."""
        request = orjson.dumps({"subjects_filter": self._subjects.legacy_filter})
        try:
            info = await self._api(client, self._subjects.stream_info, request)
        except _ApiError as error:
            raise _translate(f"stream {self._subjects.stream}", error) from error
        return bool((info.get("state") or {}).get("subjects"))

    async def _subject(self, stream: str) -> str:
        """Where ``stream``'s events go: its owner's subject, or the first-layout one it has."""
        if not self._legacy:
            return self._subjects.event(stream)
        known = self._legacy_subjects.get(stream)
        if known is not None:
            return known
        subject = self._subjects.event(stream)
        legacy = self._subjects.legacy(stream)
        request = orjson.dumps({"last_by_subj": legacy})
        try:
            await self._api(self.client, self._subjects.message_get, request)
            subject = legacy
        except _ApiError as error:
            if error.err_code != _NO_MESSAGE_FOUND:
                raise _translate(f"reading the head of {stream!r}", error) from error
        self._legacy_subjects[stream] = subject
        if len(self._legacy_subjects) > _CACHE_SIZE:
            self._legacy_subjects.popitem(last=False)
        return subject

    def _check_config(self, found: dict[str, Any]) -> None:
        """Refuse a stream whose configuration could lose, reorder or mix up events."""
        wanted = self._stream_config()
        problems = []

        def differs(key: str, ok: bool) -> None:
            if not ok:
                problems.append(f"{key} is {found.get(key)!r}, needs {wanted[key]!r}")

        differs("subjects", found.get("subjects") == wanted["subjects"])
        differs("storage", found.get("storage") == "file")
        differs("retention", found.get("retention") == "limits")
        differs("num_replicas", int(found.get("num_replicas") or 1) == self._replicas)
        differs("allow_atomic", bool(found.get("allow_atomic")))
        differs("allow_direct", bool(found.get("allow_direct")))
        differs("duplicate_window", found.get("duplicate_window") == wanted["duplicate_window"])
        for limit in ("max_msgs", "max_bytes", "max_msgs_per_subject"):
            differs(limit, int(found.get(limit) or -1) <= 0)
        differs("max_age", not found.get("max_age"))
        if found.get("sealed"):
            problems.append("the stream is sealed")
        if problems:
            raise ConfigError(
                f"JetStream stream {self._subjects.stream} exists with an incompatible "
                f"configuration: {'; '.join(problems)}. Fix it with `nats stream edit`, "
                "or use another namespace; micro never changes an existing stream itself.",
                details={"stream": self._subjects.stream, "problems": problems},
            )

    # -- low-level requests ----------------------------------------------------------------

    async def _api(self, client: Client, subject: str, payload: bytes) -> dict[str, Any]:
        """One JetStream API request; ``_ApiError`` for an error reply."""
        try:
            reply = await client.request(subject, payload, timeout=self._timeout)
        except NoRespondersError as error:
            raise EventStoreUnavailableError(
                "event store unavailable: JetStream does not answer (is it enabled?)"
            ) from error
        except (TimeoutError, NatsError, OSError) as error:
            raise _unavailable(subject, error) from error
        response: dict[str, Any] = orjson.loads(reply.data)
        if isinstance(response.get("error"), dict):
            raise _ApiError(response["error"])
        return response

    def _limit(self) -> tuple[int, str]:
        """The largest event body accepted, and what sets it."""
        server = self.client.max_payload
        if self._max_event_bytes is not None and self._max_event_bytes < server:
            return self._max_event_bytes, "max_event_bytes"
        return server, "the NATS server's max_payload"

    # -- appending -------------------------------------------------------------------------

    async def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: ExpectedVersion = ANY,
    ) -> AppendResult:
        validate_append(stream, events, expected_version)
        if len(events) > 1:
            check_unique_ids(events)
        if len(events) > MAX_EVENTS_PER_APPEND:
            raise ValidationError(
                f"one append holds at most {MAX_EVENTS_PER_APPEND} events, not {len(events)}",
                details={"fields": [{"field": "events", "reason": "too many"}]},
            )
        encoded = self._encode(events)
        async with self._locks.hold(stream):
            return await self._append_locked(stream, events, encoded, expected_version)

    def _encode(self, events: Sequence[NewEvent]) -> list[tuple[bytes, bytes]]:
        """Each event's data and metadata as JSON, checked against the size limit."""
        at = recorded_at()
        limit, source = self._limit()
        encoded = []
        for index, event in enumerate(events):
            data = dumps(event.data, field=f"events[{index}].data")
            metadata = dumps(
                {**event.metadata, "recorded_at": at}, field=f"events[{index}].metadata"
            )
            # Envelope, headers and the version's digits: a generous fixed allowance.
            size = len(data) + len(metadata) + len(event.type) + 400
            if size > limit:
                raise PayloadTooLargeError(
                    f"events[{index}] is about {size} bytes, over the limit of {limit} bytes "
                    f"set by {source}",
                    details={"limit": limit, "size": size, "index": index},
                )
            encoded.append((data, metadata))
        return encoded

    async def _append_locked(
        self,
        stream: str,
        events: Sequence[NewEvent],
        encoded: list[tuple[bytes, bytes]],
        expected: ExpectedVersion,
    ) -> AppendResult:
        head = self._heads.get(stream)
        fresh = False
        if head is None:
            # A new stream needs no look-up: the server checks "no message yet" for us.
            if expected is NO_STREAM:
                head = _EMPTY
            else:
                head, fresh = await self._fetch_head(stream), True
        for attempt in range(_MAX_ATTEMPTS):
            if not _matches(expected, head.version):
                if not fresh:
                    head, fresh = await self._fetch_head(stream), True
                    continue
                return await self._original_or_conflict(stream, events, expected, head)
            first_version = 0 if head.version is None else head.version + 1
            try:
                sequence, duplicate = await self._publish(
                    stream, events, encoded, first_version, head.sequence
                )
            except _ApiError as error:
                if error.err_code in _WRONG_LAST_SEQUENCE:
                    # Someone else appended, or this is a retry of our own earlier append
                    # (the stale-header refusal of nats-server 2.15): look before deciding.
                    head, fresh = await self._fetch_head(stream), True
                    if head.last_id == events[-1].id:
                        return AppendResult(version=head.version or 0, position=head.sequence)
                    continue
                if error.err_code == _DUPLICATE_IN_PROCESS:
                    # The same event id is being stored right now by another append: once
                    # it is, the next try is a duplicate (or finds the stream moved on).
                    await asyncio.sleep(min(0.01 * 2**attempt, 0.2))
                    head, fresh = await self._fetch_head(stream), True
                    continue
                if error.err_code == _BATCH_DUPLICATE_ID:
                    # The server has seen some of these ids within its duplicate window.
                    head = await self._fetch_head(stream)
                    return await self._original_or_conflict(
                        stream, events, expected, head, ids_seen=True
                    )
                raise _translate(f"appending to {stream!r}", error) from error
            if duplicate:
                # The server recognised the event id: answer with the original event.
                original = await self._event_at(sequence)
                if original.stream != stream:
                    raise _reused_ids(stream)
                return AppendResult(version=original.version, position=sequence)
            version = first_version + len(events) - 1
            self._remember(stream, _Head(version, sequence, events[-1].id))
            # A batch is stored in one piece, so its events hold consecutive positions.
            first_position = sequence - len(events) + 1
            recorded = tuple(
                _build_event(
                    event.id,
                    event.type,
                    stream,
                    first_version + index,
                    first_position + index,
                    orjson.loads(data),
                    orjson.loads(metadata),
                )
                for index, (event, (data, metadata)) in enumerate(zip(events, encoded, strict=True))
            )
            return AppendResult(version=version, position=sequence, events=recorded)
        raise ConcurrencyError(
            f"stream {stream!r}: still contended after {_MAX_ATTEMPTS} attempts",
            details={"stream": stream, "expected": str(expected), "actual": head.version},
        )

    async def _publish(
        self,
        stream: str,
        events: Sequence[NewEvent],
        encoded: list[tuple[bytes, bytes]],
        first_version: int,
        last_sequence: int,
    ) -> tuple[int, bool]:
        """Publish the events after ``last_sequence``; (sequence of the last, duplicate)."""
        subject = await self._subject(stream)
        messages = []
        for index, (event, (data, metadata)) in enumerate(zip(events, encoded, strict=True)):
            event_id = str(event.id)
            body = _envelope(event_id, event.type, first_version + index, data, metadata)
            headers = {"Nats-Msg-Id": event_id}
            if index == 0:
                headers["Nats-Expected-Last-Subject-Sequence"] = str(last_sequence)
            messages.append(Outgoing(subject, body, headers))
        commits = self._commits
        if commits is None:
            raise EventStoreUnavailableError("event store unavailable: the store was closed")
        try:
            ack = await commits.publish(messages)
        except MaxPayloadError as error:
            limit, source = self._limit()
            raise PayloadTooLargeError(
                f"an event of {stream!r} is over the limit of {limit} bytes set by {source}",
                details={"limit": limit},
            ) from error
        except NoRespondersError as error:
            raise EventStoreUnavailableError(
                f"event store unavailable: no JetStream stream stores {subject!r}"
            ) from error
        except (TimeoutError, NatsError, OSError) as error:
            # The append may or may not be stored. Forget what we knew of the stream; a
            # retry with the same events is safe, it returns the original result.
            self._heads.pop(stream, None)
            raise _unavailable(
                f"no acknowledgement for the append to {stream!r} (retrying it is safe)", error
            ) from error
        if isinstance(ack.get("error"), dict):
            raise _ApiError(ack["error"])
        return int(ack["seq"]), bool(ack.get("duplicate"))

    def _remember(self, stream: str, head: _Head) -> None:
        self._heads[stream] = head
        self._heads.move_to_end(stream)
        if len(self._heads) > _CACHE_SIZE:
            self._heads.popitem(last=False)

    async def _fetch_head(self, stream: str) -> _Head:
        """The stream's last event as the stream leader sees it (not a replica)."""
        request = orjson.dumps({"last_by_subj": await self._subject(stream)})
        try:
            response = await self._api(self.client, self._subjects.message_get, request)
        except _ApiError as error:
            if error.err_code == _NO_MESSAGE_FOUND:
                self._heads.pop(stream, None)
                return _EMPTY
            raise _translate(f"reading the head of {stream!r}", error) from error
        message = response["message"]
        envelope = orjson.loads(base64.b64decode(message["data"]))
        head = _Head(envelope["version"], int(message["seq"]), uuid.UUID(envelope["id"]))
        self._remember(stream, head)
        return head

    async def _event_at(self, sequence: int) -> RecordedEvent:
        try:
            response = await self._api(
                self.client, self._subjects.message_get, orjson.dumps({"seq": sequence})
            )
        except _ApiError as error:
            raise _translate(f"reading event {sequence}", error) from error
        message = response["message"]
        return self._decode(message["subject"], sequence, base64.b64decode(message["data"]))

    async def _original_or_conflict(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected: ExpectedVersion,
        head: _Head,
        *,
        ids_seen: bool = False,
    ) -> AppendResult:
        """The result of the append that already stored these events, else the conflict.

        ``ids_seen``: the server reported some ids as already stored, so not finding them
        in this stream means they were used elsewhere, not a version conflict.
        """
        if head.last_id == events[-1].id and head.version is not None:
            return AppendResult(version=head.version, position=head.sequence)
        # An earlier append of these events landed right after the version it expected.
        start = expected + 1 if isinstance(expected, int) else 0
        stored = await self.read(stream, from_version=start)
        ids = [event.id for event in stored]
        if events[0].id in ids:
            first = ids.index(events[0].id)
            found = stored[first : first + len(events)]
            if [event.id for event in found] == [event.id for event in events]:
                return AppendResult(version=found[-1].version, position=found[-1].position)
        known = set(ids)
        if ids_seen or any(event.id in known for event in events):
            raise _reused_ids(stream)
        raise ConcurrencyError.for_stream(stream, expected, head.version)

    # -- reading ---------------------------------------------------------------------------

    def _decode(self, subject: str, position: int, body: bytes) -> RecordedEvent:
        envelope = orjson.loads(body)
        return RecordedEvent(
            id=uuid.UUID(envelope["id"]),
            type=envelope["type"],
            stream=subject.rpartition(".")[2],
            version=envelope["version"],
            position=position,
            data=envelope["data"],
            metadata=envelope["metadata"],
        )

    async def read(
        self,
        stream: str,
        from_version: int = 0,
        limit: int | None = None,
        *,
        backwards: bool = False,
    ) -> list[RecordedEvent]:
        validate_stream_name(stream)
        if limit is not None and limit <= 0:
            return []
        # Forward reads stop once they hold enough; backward ones need everything up to
        # the start (JetStream has no "previous message of this subject").
        enough = None
        if not backwards and limit is not None:
            enough = from_version + limit
        elif backwards and from_version > 0:
            enough = from_version + 1
        events = await self._read_subject(stream, enough)
        if backwards:
            end = from_version + 1 if from_version > 0 else len(events)
            chosen = events[:end][::-1]
        else:
            chosen = events[from_version:]
        return chosen if limit is None else chosen[:limit]

    async def _read_subject(self, stream: str, enough: int | None) -> list[RecordedEvent]:
        """The stream's events from version 0, stopping at ``enough`` if given."""
        assert self._replies is not None
        subject = await self._subject(stream)
        events: list[RecordedEvent] = []
        sequence = 1
        while True:
            request = {"seq": sequence, "next_by_subj": subject, "batch": _READ_PAGE}
            messages, more = await self._replies.direct_get(
                self._subjects.direct_get, orjson.dumps(request), self._timeout
            )
            for message in messages:
                position = int(message.header["Nats-Sequence"])
                events.append(self._decode(subject, position, message.data))
            if not more or not messages:
                if events:  # the whole stream was read: its head is known for free
                    last = events[-1]
                    self._remember(stream, _Head(last.version, last.position, last.id))
                return events
            if enough is not None and len(events) >= enough:
                return events
            sequence = events[-1].position + 1

    async def stream_version(self, stream: str) -> int | None:
        validate_stream_name(stream)
        return (await self._fetch_head(stream)).version

    async def last_position(self) -> int:
        try:
            info = await self._stream_info(self.client)
        except _ApiError as error:
            raise _translate("reading the stream state", error) from error
        return int(info["state"]["last_seq"])

    async def _stream_info(self, client: Client) -> dict[str, Any]:
        """The state of a stream known to exist, asked again while a replica says "not found".

        Until a new replicated stream has elected its leader, every replica answers info
        requests from its local copy, and one that has not made that copy yet answers "not
        found" at once, ahead of the others: a service starting beside the one that created
        the stream can get that answer. Only an answer that persists to the timeout counts.
        """
        deadline = time.monotonic() + self._timeout
        pause = 0.02
        while True:
            try:
                return await self._api(client, self._subjects.stream_info, b"")
            except _ApiError as error:
                left = deadline - time.monotonic()
                if error.err_code != _STREAM_NOT_FOUND or left <= 0:
                    raise
                await asyncio.sleep(min(pause, left))
                pause = min(pause * 2, 0.5)

    def read_all(
        self, from_position: int = 0, limit: int | None = None
    ) -> AsyncIterator[RecordedEvent]:
        return self._replay(max(from_position, 1), limit, follow=False)

    def subscribe(self, from_position: int = 0) -> AsyncIterator[RecordedEvent]:
        return self._replay(max(from_position, 1), None, follow=True)

    async def _replay(
        self, start: int, limit: int | None, *, follow: bool
    ) -> AsyncGenerator[RecordedEvent, None]:
        """Events from ``start`` on: up to the current end, or forever when ``follow``.

        A single consumer serves history and live events alike, so there is no switch
        between the two where an event could be missed or delivered twice. (One generator,
        not a wrapper around another: each level costs a few microseconds per event.)
        """
        end: int | None = None
        if not follow:
            end = await self.last_position()
            if limit is not None:
                end = min(end, start + limit - 1)
            if start > end:
                return
        puller = _Puller(self.client, self._subjects, start, end, self._timeout)
        self._pullers.add(puller)
        loads, parse_uuid, build = orjson.loads, _parse_uuid, _build_event
        try:
            while True:
                for subject, position, body in await puller.next_chunk():
                    envelope = loads(body)
                    yield build(
                        parse_uuid(envelope["id"]),
                        envelope["type"],
                        subject.rpartition(".")[2],
                        envelope["version"],
                        position,
                        envelope["data"],
                        envelope["metadata"],
                    )
                    if position == end:
                        return
        finally:
            await puller.close()


def _reused_ids(stream: str) -> ConflictError:
    return ConflictError(
        f"stream {stream!r}: some of these event ids are already stored, but not as this "
        "same append (an event id must be unique across the store)",
        details={"stream": stream},
    )


def _matches(expected: ExpectedVersion, actual: int | None) -> bool:
    if expected is ANY:
        return True
    if expected is NO_STREAM:
        return actual is None
    if expected is EXISTS:
        return actual is not None
    return actual == expected


@dataclass(slots=True)
class _Reply:
    header: dict[str, str]
    data: bytes


class _ReplyRouter:
    """One inbox for all batched direct gets and append acknowledgements.

    Appends wait on a ``ReplyInbox`` rather than in ``Client.request``: every command waits
    for one acknowledgement, and the inbox's counter tokens and shared timer cost a fraction
    of a fresh NUID and ``wait_for``. A batched read answers with many messages, routed here.
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self._inbox = ReplyInbox(client, on_other=self._on_batch)
        self._waiting: dict[str, tuple[list[_Reply], asyncio.Future[bool]]] = {}

    async def start(self) -> None:
        await self._inbox.start()

    async def close(self) -> None:
        await self._inbox.close()

    def _on_batch(self, token: str, message: Msg) -> None:
        waiting = self._waiting.get(token)
        if waiting is None:
            return
        replies, done = waiting
        header = message.headers or {}
        if message.data:
            replies.append(_Reply(header, message.data))
        elif not done.done():
            # A status closes the batch: 204 EOB (more may follow), 404 nothing found.
            status = header.get("Status", "")
            more = status == "204" and header.get("Nats-Num-Pending", "0") != "0"
            if status in ("204", "404"):
                done.set_result(more)
            else:
                done.set_exception(
                    EventStoreUnavailableError(
                        f"event store read failed: {status} {header.get('Description', '')}"
                    )
                )

    async def request(
        self, subject: str, body: bytes, headers: dict[str, str], timeout: float
    ) -> Msg:
        """Publish and wait for the one reply; ``TimeoutError``, ``NoRespondersError``."""
        return await self._inbox.request(subject, body, headers, timeout)

    async def direct_get(
        self, subject: str, request: bytes, timeout: float
    ) -> tuple[list[_Reply], bool]:
        """The messages of one batched direct get, and whether the server has more."""
        token, reply_to = self._inbox.reply_subject()
        replies: list[_Reply] = []
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting[token] = (replies, done)
        try:
            await self._client.publish(subject, request, reply=reply_to)
            more = await asyncio.wait_for(done, timeout)
        except (TimeoutError, NatsError, OSError) as error:
            raise _unavailable("reading events", error) from error
        finally:
            del self._waiting[token]
        return replies, more


def _resolve(waiter: asyncio.Future[bool], woken: bool) -> None:
    if not waiter.done():
        waiter.set_result(woken)


class _Puller:
    """An ephemeral pull consumer read in pipelined batches, recreated if it breaks.

    Position, not delivery, is the truth: after any trouble (a gap in delivery sequence,
    the consumer deleted, heartbeats gone quiet) a new consumer starts right after the last
    event received, so nothing is skipped and nothing is repeated.
    """

    def __init__(
        self, client: Client, subjects: _Subjects, start: int, end: int | None, timeout: float
    ) -> None:
        self._client = client
        self._subjects = subjects
        self._next = start
        self._end = end
        self._timeout = timeout
        self._name = ""
        self._inbox = ""
        self._subscription: Subscription | None = None
        self._buffer: list[tuple[str, int, bytes]] = []
        self._requests: deque[int] = deque()  # messages still owed by each pull request
        self._delivered = 0
        self._broken = False
        self._closed = False
        self._wake: asyncio.Future[bool] | None = None  # set while waiting for a message
        self._heard_at = time.monotonic()
        self._heard = False  # set per message; turned into a time only when idle
        self._reconnects = 0

    async def next_chunk(self) -> list[tuple[str, int, bytes]]:
        """The events received since the last call, waiting for at least one."""
        delay = 0.1
        while True:
            if self._closed or self._client.is_closed:
                raise EventStoreUnavailableError("event store unavailable: it was closed")
            if self._subscription is None or self._broken:
                try:
                    await self._open()
                    delay = 0.1
                except EventStoreUnavailableError:
                    if self._end is not None:
                        raise  # a bounded read reports the outage; a subscription rides it out
                    _log.warning("event subscription waiting for JetStream", retry_in=delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
            if self._buffer:
                chunk, self._buffer = self._buffer, []
                await self._top_up()
                return chunk
            await self._top_up()
            if self._buffer or self._broken or self._closed:
                continue  # something came in while the pull request went out
            # A future and a timer rather than wait_for(event.wait()): that makes a task for
            # every wake-up, and a live subscription wakes up for every event.
            loop = asyncio.get_running_loop()
            self._wake = waiter = loop.create_future()
            timer = loop.call_later(_WAKE, _resolve, waiter, False)
            try:
                woken = await waiter
            finally:
                timer.cancel()
                self._wake = None
            if not woken:
                # A reconnected client lost our consumer's pull requests (and, after a
                # server restart, the in-memory consumer itself); a silent one is as bad.
                if self._heard:
                    self._heard, self._heard_at = False, time.monotonic()
                reconnected = self._client.stats["reconnects"] != self._reconnects
                quiet = time.monotonic() - self._heard_at > 3 * _HEARTBEAT
                if reconnected or quiet:
                    self._broken = True

    async def _top_up(self) -> None:
        """Keep up to two pull requests open, so the server never waits for us."""
        owed = sum(self._requests)
        if len(self._requests) >= 2 or owed >= _PULL_BATCH // 2 or len(self._buffer) > _PULL_BATCH:
            return
        batch = _PULL_BATCH
        if self._end is not None:
            batch = min(batch, self._end - self._next + 1 - owed)
            if batch <= 0:
                return
        request = {
            "batch": batch,
            "expires": int(6 * _HEARTBEAT * _NANOS),
            "idle_heartbeat": int(_HEARTBEAT * _NANOS),
        }
        self._requests.append(batch)
        try:
            await self._client.publish(
                self._subjects.consumer_next(self._name), orjson.dumps(request), reply=self._inbox
            )
        except (NatsError, OSError) as error:
            self._broken = True
            _log.warning("event subscription pull failed", error=str(error))

    async def _open(self) -> None:
        await self._drop_consumer()
        self._name = "r" + uuid.uuid4().hex[:16]
        self._inbox = self._client.new_inbox()
        self._requests.clear()
        self._delivered = 0
        self._broken = False
        self._heard_at = time.monotonic()
        self._reconnects = self._client.stats["reconnects"]
        config = {
            "name": self._name,
            "deliver_policy": "by_start_sequence",
            "opt_start_seq": self._next,
            "ack_policy": "none",
            "replay_policy": "instant",
            "filter_subject": self._subjects.filter,
            "mem_storage": True,
            "num_replicas": 1,
            "max_waiting": 16,
            "inactive_threshold": int(12 * _HEARTBEAT * _NANOS),
        }
        try:
            self._subscription = await self._client.subscribe(
                self._inbox, cb=self._on_message, pending_msgs_limit=-1, pending_bytes_limit=-1
            )
            reply = await self._client.request(
                self._subjects.consumer_create(self._name),
                orjson.dumps({"stream_name": self._subjects.stream, "config": config}),
                timeout=self._timeout,
            )
        except (TimeoutError, NatsError, OSError) as error:
            await self._drop_consumer()
            raise _unavailable("creating a consumer", error) from error
        response = orjson.loads(reply.data)
        if isinstance(response.get("error"), dict):
            await self._drop_consumer()
            raise _translate("creating a consumer", _ApiError(response["error"]))

    async def _on_message(self, message: Msg) -> None:
        self._heard = True
        if message.data:
            # $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<delivery seq>.<ts>.<pending>
            # (with domain and account hash in front in the newer 12-token form).
            tokens = message.reply.split(".")
            offset = 0 if len(tokens) == 9 else 2
            position = int(tokens[5 + offset])
            delivered = int(tokens[6 + offset])
            if delivered != self._delivered + 1:
                self._broken = True  # a delivery went missing: start again after the last
                self._signal()
                return
            if position < self._next:
                return  # already passed on (a restarted consumer may overlap)
            self._delivered = delivered
            self._next = position + 1
            self._buffer.append((message.subject, position, message.data))
            if self._requests:
                self._requests[0] -= 1
                if self._requests[0] <= 0:
                    self._requests.popleft()
            self._signal()
            return
        header = message.headers or {}
        status = header.get("Status", "")
        if status == "100":
            return  # heartbeat: the consumer is alive
        description = header.get("Description", "")
        if status == "409" and ("Deleted" in description or "Leadership" in description):
            self._broken = True
        elif self._requests:
            self._requests.popleft()  # 408 expired or 409 limits: that request is over
        self._signal()

    async def _drop_consumer(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            with contextlib.suppress(NatsError):
                await subscription.unsubscribe()
        if self._name:
            name, self._name = self._name, ""
            # Best effort: an ephemeral consumer also expires on its own when idle.
            with contextlib.suppress(NatsError, OSError, asyncio.TimeoutError):
                await self._client.publish(self._subjects.consumer_delete(name), b"")

    def stop(self) -> None:
        """Make the reader fail at its next step (its store is closing)."""
        self._closed = True
        self._signal()

    def _signal(self) -> None:
        if self._wake is not None:
            _resolve(self._wake, True)

    async def close(self) -> None:
        self._closed = True
        await self._drop_consumer()
