"""The event store on NATS JetStream: one stream, one subject per event stream.

(A little over 600 lines: the store is the contract's one implementation on JetStream; API
plumbing, codec, provisioning, replies, the puller and group commit already live in their
own modules, and what is left is the contract's methods and the subject layout they share.)

Layout, for namespace ``micro``::

    JetStream stream  MICRO_EVENTS   (file storage, subjects micro.ev.>)
    event subject     micro.ev.<owner>.<stream>  (micro.ev.<stream> for a store with no
                      owner, and for streams written before the owner joined the subject)
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

Writing: with ``group_commit`` (for a server that syncs every write), appends to different
streams that arrive while one is out at the server leave together as one atomic batch
(``_group_commit``): one disk sync and one acknowledgement for the group, each message still
checked against its own expected sequence. Without it every append leaves at once.

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
import uuid
import weakref
from collections import OrderedDict
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Final

import orjson
import structlog
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.errors import MaxPayloadError, NoRespondersError

from micro._keyed_locks import KeyedLocks
from micro.bus.nats_client import ConnectOptions
from micro.errors import (
    ConcurrencyError,
    ConfigError,
    EventStoreUnavailableError,
    PayloadTooLargeError,
    ValidationError,
)
from micro.eventstore._encoding import check_unique_ids, dumps, recorded_at
from micro.eventstore.base import (
    ANY,
    NO_STREAM,
    AppendResult,
    EventStore,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
    reused_ids_error,
    validate_append,
    validate_stream_name,
    version_matches,
)
from micro.eventstore.jetstream._api import (
    BATCH_DUPLICATE_ID,
    DUPLICATE_IN_PROCESS,
    NO_MESSAGE_FOUND,
    STREAM_NOT_FOUND,
    WRONG_LAST_SEQUENCE,
    ApiError,
    Subjects,
    api_request,
    translate,
    unavailable,
)
from micro.eventstore.jetstream._codec import build_event, decode_event, encode_envelope, parse_uuid
from micro.eventstore.jetstream._connection import connect
from micro.eventstore.jetstream._group_commit import MAX_BATCH, GroupCommit, Outgoing
from micro.eventstore.jetstream._provisioning import StreamProvisioning
from micro.eventstore.jetstream._puller import Puller
from micro.eventstore.jetstream._replies import ReplyRouter

__all__ = ["MAX_EVENTS_PER_APPEND", "JetStreamEventStore"]

_log = structlog.get_logger("micro.eventstore")

MAX_EVENTS_PER_APPEND: Final = MAX_BATCH
"""The server's limit on messages in one atomic batch."""

_NAMESPACE = re.compile(r"^[A-Za-z0-9_-]+$")
_MAX_ATTEMPTS = 25  # appends refused because another writer moved the stream first
_CACHE_SIZE = 50_000
_READ_PAGE = 1000  # messages per batched direct get
_NO_LEADER_PAUSE = 0.05  # seconds between looks at a stream just created (no leader yet)


@dataclass(frozen=True, slots=True)
class _Head:
    """What the store knows of a stream's last event."""

    version: int | None
    sequence: int
    last_id: uuid.UUID | None = None


_EMPTY = _Head(version=None, sequence=0)


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
    ``group_commit`` batches concurrent appends (``Settings.event_store_group_commit``).

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
        group_commit: bool = True,
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
        self._subjects = Subjects(namespace, owner)
        self._owner = owner
        # Set at start when the store holds streams in the first layout: each stream is
        # then looked for there too, and one found there stays there.
        self._legacy = False
        self._legacy_subjects: OrderedDict[str, str] = OrderedDict()
        self._provisioning = StreamProvisioning(
            self._subjects, replicas=replicas, duplicate_window=duplicate_window
        )
        self._max_event_bytes = max_event_bytes
        self._timeout = timeout
        self._start_timeout = start_timeout
        self._heads: OrderedDict[str, _Head] = OrderedDict()
        # One lock per stream while someone appends to it: appends to one stream from this
        # process queue up instead of racing each other through refusals.
        self._locks = KeyedLocks()
        self._start_lock = asyncio.Lock()
        self._started = False
        self._replies: ReplyRouter | None = None
        self._commits: GroupCommit | None = None
        self._group_commit = group_commit
        self._pullers: weakref.WeakSet[Puller] = weakref.WeakSet()

    # -- subjects ----------------------------------------------------------------------------

    async def _await_ready_stream(self, client: Client) -> bool:
        """Wait until the stream takes appends; whether any stream lives on a first-layout
        subject (``<namespace>.ev.<stream>``).

        A replicated stream created an instant ago may be unknown yet to the node that
        answers, or still electing its leader (it then answers appends with "no
        responders"): the store asks again, up to its start timeout.
        """
        request = orjson.dumps({"subjects_filter": self._subjects.legacy_filter})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(self._timeout, self._start_timeout)
        while True:
            try:
                info = await api_request(client, self._subjects.stream_info, request, self._timeout)
            except ApiError as error:
                if error.err_code != STREAM_NOT_FOUND or loop.time() >= deadline:
                    raise translate(f"stream {self._subjects.stream}", error) from error
                await asyncio.sleep(_NO_LEADER_PAUSE)
                continue
            cluster = info.get("cluster") or {}
            if cluster.get("replicas") and not cluster.get("leader") and loop.time() < deadline:
                await asyncio.sleep(_NO_LEADER_PAUSE)
                continue
            return bool((info.get("state") or {}).get("subjects"))

    @property
    def owner(self) -> str | None:
        """The service this store appends as (``None``: the first, unowned layout)."""
        return self._owner

    async def owners(self, stream: str) -> list[str]:
        """The services that appended to ``stream`` (``""`` for the first, unowned layout).

        Tools that read a stream by name without knowing who writes it (``micro events
        show``) ask this, then read as that owner.
        """
        prefix = self._subjects.prefix
        found: set[str] = set()
        for subjects_filter in (f"{prefix}*.{stream}", self._subjects.legacy(stream)):
            request = orjson.dumps({"subjects_filter": subjects_filter})
            try:
                info = await api_request(
                    self.client, self._subjects.stream_info, request, self._timeout
                )
            except ApiError as error:
                raise translate(f"stream {self._subjects.stream}", error) from error
            for subject in (info.get("state") or {}).get("subjects") or {}:
                owner = subject[len(prefix) : -len(stream)].rstrip(".")
                found.add(owner)
        return sorted(found)

    async def _subject(self, stream: str) -> str:
        """Where ``stream``'s events go: its owner's subject, or the first-layout one it has."""
        if not self._legacy:
            return self._subjects.event(stream)
        known = self._legacy_subjects.get(stream)
        if known is not None:
            return known
        subject = self._subjects.event(stream)
        request = orjson.dumps({"last_by_subj": self._subjects.legacy(stream)})
        try:
            await api_request(self.client, self._subjects.message_get, request, self._timeout)
            subject = self._subjects.legacy(stream)
        except ApiError as error:
            if error.err_code != NO_MESSAGE_FOUND:
                raise translate(f"reading the head of {stream!r}", error) from error
        self._legacy_subjects[stream] = subject
        if len(self._legacy_subjects) > _CACHE_SIZE:
            self._legacy_subjects.popitem(last=False)
        return subject

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
                self._client = await connect(self._url or "", self._connect_options)
            try:
                await self._provisioning.ensure_in_time(
                    self._client, self._timeout, self._start_timeout
                )
                legacy = await self._await_ready_stream(self._client)
                # Only a store that appends as a service puts events elsewhere than there.
                self._legacy = legacy and self._owner is not None
                self._replies = ReplyRouter(self._client)
                await self._replies.start()
                client = self._client

                async def publish(subject: str, body: bytes, headers: dict[str, str]) -> None:
                    await client.publish(subject, body, headers=headers)

                self._commits = GroupCommit(
                    self._replies.request, publish, self._timeout, grouping=self._group_commit
                )
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

    # -- low-level requests ----------------------------------------------------------------

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
            if not version_matches(expected, head.version):
                if not fresh:
                    head, fresh = await self._fetch_head(stream), True
                    continue
                return await self._original_or_conflict(stream, events, expected, head)
            first_version = 0 if head.version is None else head.version + 1
            try:
                sequence, duplicate = await self._publish(
                    stream, events, encoded, first_version, head.sequence
                )
            except ApiError as error:
                if error.err_code in WRONG_LAST_SEQUENCE:
                    # Someone else appended, or this is a retry of our own earlier append
                    # (the stale-header refusal of nats-server 2.15): look before deciding.
                    head, fresh = await self._fetch_head(stream), True
                    if head.last_id == events[-1].id:
                        return AppendResult(version=head.version or 0, position=head.sequence)
                    continue
                if error.err_code == DUPLICATE_IN_PROCESS:
                    # The same event id is being stored right now by another append: once
                    # it is, the next try is a duplicate (or finds the stream moved on).
                    await asyncio.sleep(min(0.01 * 2**attempt, 0.2))
                    head, fresh = await self._fetch_head(stream), True
                    continue
                if error.err_code == BATCH_DUPLICATE_ID:
                    # The server has seen some of these ids within its duplicate window.
                    head = await self._fetch_head(stream)
                    return await self._original_or_conflict(
                        stream, events, expected, head, ids_seen=True
                    )
                raise translate(f"appending to {stream!r}", error) from error
            if duplicate:
                # The server recognised the event id: answer with the original event.
                original = await self._event_at(sequence)
                if original.stream != stream:
                    raise reused_ids_error(stream)
                return AppendResult(version=original.version, position=sequence)
            version = first_version + len(events) - 1
            self._remember(stream, _Head(version, sequence, events[-1].id))
            # A batch is stored in one piece, so its events hold consecutive positions.
            first_position = sequence - len(events) + 1
            recorded = tuple(
                build_event(
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
            body = encode_envelope(event_id, event.type, first_version + index, data, metadata)
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
            raise unavailable(
                f"no acknowledgement for the append to {stream!r} (retrying it is safe)", error
            ) from error
        if isinstance(ack.get("error"), dict):
            raise ApiError(ack["error"])
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
            response = await api_request(
                self.client, self._subjects.message_get, request, self._timeout
            )
        except ApiError as error:
            if error.err_code == NO_MESSAGE_FOUND:
                self._heads.pop(stream, None)
                return _EMPTY
            raise translate(f"reading the head of {stream!r}", error) from error
        message = response["message"]
        envelope = orjson.loads(base64.b64decode(message["data"]))
        head = _Head(envelope["version"], int(message["seq"]), uuid.UUID(envelope["id"]))
        self._remember(stream, head)
        return head

    async def _event_at(self, sequence: int) -> RecordedEvent:
        try:
            response = await api_request(
                self.client,
                self._subjects.message_get,
                orjson.dumps({"seq": sequence}),
                self._timeout,
            )
        except ApiError as error:
            raise translate(f"reading event {sequence}", error) from error
        message = response["message"]
        # The stream name is the last token in either layout (stream names hold no dots).
        subject = message["subject"].rpartition(".")[2]
        return decode_event(subject, sequence, base64.b64decode(message["data"]))

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
            raise reused_ids_error(stream)
        raise ConcurrencyError.for_stream(stream, expected, head.version)

    # -- reading ---------------------------------------------------------------------------

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
                events.append(decode_event(stream, position, message.data))
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
            info = await self._provisioning.info(self.client, self._timeout)
        except ApiError as error:
            raise translate("reading the stream state", error) from error
        return int(info["state"]["last_seq"])

    def read_all(
        self, from_position: int = 0, limit: int | None = None
    ) -> AsyncGenerator[RecordedEvent, None]:
        return self._replay(max(from_position, 1), limit, follow=False)

    def subscribe(self, from_position: int = 0) -> AsyncGenerator[RecordedEvent, None]:
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
        puller = Puller(self.client, self._subjects, start, end, self._timeout)
        self._pullers.add(puller)
        loads, parse, build = orjson.loads, parse_uuid, build_event
        try:
            while True:
                for subject, position, body in await puller.next_chunk():
                    envelope = loads(body)
                    yield build(
                        parse(envelope["id"]),
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
