"""EventStoreDB (KurrentDB) as micro's event store, through esdbclient's asyncio client.

How the contract maps onto the server:

    NewEvent.id          the ESDB event id, so the server itself makes a retried append of
                         the same ids a no-op that answers with the original result
    type, data           the event type; the data as JSON (content type application/json)
    metadata             JSON custom metadata; ``recorded_at`` is the server's recorded time
                         unless the event's own metadata carries one
    version              the stream position (revision)
    position             the commit position + 1: ESDB's first commit position can be 0,
                         ours start above 0; both increase with the log
    expected_version     ``current_version``: an int, or StreamState NO_STREAM / EXISTS / ANY

System events (those of ``$``-streams, and ``$``-types such as links) never appear in
``read``, ``read_all`` or ``subscribe``; appending a ``$``-type is refused. With a
``namespace`` every stream is stored as ``<namespace>.<stream>`` (user stream names cannot hold
a dot) and only that namespace's events are read: how tests share one server, and how several
deployments could.

A server refuses to read ``$all`` from a commit position where no event starts, and contract
positions are ``commit + 1``: ``read_all`` and ``subscribe`` first find a valid position at or
before the one asked for (the position itself, the one before it, the event before it) and drop
what comes before; any other position falls back to a scan from the start.

Errors from esdbclient and grpc are translated here into ``micro.errors``:
``WrongCurrentVersion`` -> ``ConcurrencyError``; an unreachable or silent server ->
``EventStoreUnavailableError``; an append over the server's limit -> ``PayloadTooLargeError``.

This backend is protocol-tested: the contract suite runs against the gRPC fake in
``micro.testing.esdb_fake``, and against a real server when ``MICRO_TEST_ESDB_URL`` is set.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import sys
import uuid
from collections.abc import AsyncGenerator, Iterator, Sequence
from dataclasses import replace
from datetime import UTC
from typing import Any

import grpc
import grpc.aio
from esdbclient import AsyncEventStoreDBClient, StreamState
from esdbclient import NewEvent as EsdbNewEvent
from esdbclient import RecordedEvent as EsdbRecordedEvent
from esdbclient.connection_spec import ConnectionSpec
from esdbclient.exceptions import (
    CancelledByClient,
    DeadlineExceeded,
    DiscoveryFailed,
    EventStoreDBClientException,
    GrpcError,
    MaximumAppendSizeExceededError,
    NotFound,
    ServiceUnavailable,
    WrongCurrentVersion,
)

from micro.errors import (
    ConcurrencyError,
    ConfigError,
    EventStoreUnavailableError,
    InternalError,
    MicroError,
    PayloadTooLargeError,
    ValidationError,
)
from micro.eventstore._encoding import check_unique_ids, dumps, loads
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

__all__ = ["EsdbEventStore"]

_NAMESPACE = re.compile(r"^[A-Za-z0-9_-]+$")
_ACTUAL = re.compile(r"Stream position of last event is (\d+)")
# How far back in a stream to look for an append's own last event when the server's answer
# does not say where it is (an idempotent append on some servers).
_LOOKBACK = 100

_Filters = dict[str, Any]


class EsdbEventStore(EventStore):
    """Streams in an EventStoreDB / KurrentDB server.

    Usage::

        async with EsdbEventStore("esdb://localhost:2113?Tls=false") as store:
            await store.append("account-1", [NewEvent("AccountOpened", {"owner": "ada"})],
                               expected_version=NO_STREAM)

    Args:
        url: an ``esdb://`` or ``esdb+discover://`` connection string.
        namespace: store every stream as ``<namespace>.<stream>`` and read only those.
        timeout: seconds an append or a lookup may take before the server counts as
            unavailable; long reads and subscriptions have no deadline.
    """

    def __init__(self, url: str, *, namespace: str | None = None, timeout: float = 10.0) -> None:
        if namespace is not None and not _NAMESPACE.match(namespace):
            raise ConfigError("an esdb namespace uses only letters, digits, '-' and '_'")
        if timeout <= 0:
            raise ConfigError("timeout must be positive")
        try:
            ConnectionSpec(url)  # parsed again by the client: fail here, not at first use
        except ValueError as error:
            raise ConfigError(f"bad EventStoreDB URL {url!r}: {error}") from error
        self._url = url
        self._namespace = namespace
        self._timeout = timeout
        self._client: AsyncEventStoreDBClient | None = None
        self._starting = asyncio.Lock()

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and check the server answers, failing fast when it does not."""
        if self._client is not None:
            return
        async with self._starting:
            if self._client is not None:
                return
            try:
                client = AsyncEventStoreDBClient(self._url)
            except (ValueError, EventStoreDBClientException) as error:
                raise ConfigError(f"bad EventStoreDB URL {self._url!r}: {error}") from error
            try:
                with _boundary(self._url):
                    await client.connect()
                    # esdb:// with one host connects lazily: ask something to know it answers.
                    await self._last_event(client)
            except BaseException:
                await _close_quietly(client)
                raise
            self._client = client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await _close_quietly(client)

    async def _connected(self) -> AsyncEventStoreDBClient:
        if self._client is None:
            await self.start()
        assert self._client is not None
        return self._client

    # -- appending ----------------------------------------------------------------------------

    async def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: ExpectedVersion = ANY,
    ) -> AppendResult:
        validate_append(stream, events, expected_version)
        check_unique_ids(events)
        # Encode everything before sending anything: one bad event must store none.
        outgoing = [_outgoing(index, event) for index, event in enumerate(events)]
        client = await self._connected()
        name = self._name(stream)
        with _boundary(self._url):
            try:
                commit = await client.append_to_stream(
                    name,
                    current_version=_current_version(expected_version),
                    events=outgoing,
                    timeout=self._timeout,
                )
            except WrongCurrentVersion as error:
                actual = await self._actual_version(client, name, error)
                raise ConcurrencyError.for_stream(stream, expected_version, actual) from error
            return await self._result(client, name, events, expected_version, commit)

    async def _result(
        self,
        client: AsyncEventStoreDBClient,
        name: str,
        events: Sequence[NewEvent],
        expected: ExpectedVersion,
        commit: int,
    ) -> AppendResult:
        """The version and position of the append's last event."""
        # With a number the server checked, the last event's version follows from it, and
        # the server answers with its commit position (the original one for a retry). 0 can
        # also mean "no position in the answer", so it is looked up like ANY and EXISTS.
        if isinstance(expected, int) or expected is NO_STREAM:
            base = expected if isinstance(expected, int) else -1
            if commit > 0:
                return AppendResult(version=base + len(events), position=commit + 1)
        last = events[-1].id
        found = await self._event_at(client, commit)
        if found is not None and found.id == last:
            return AppendResult(version=found.stream_position, position=commit + 1)
        async with await client.read_stream(
            name, backwards=True, limit=len(events) + _LOOKBACK, timeout=self._timeout
        ) as response:
            async for event in response:
                if event.id == last:
                    position = await self._commit_of(client, name, event)
                    return AppendResult(version=event.stream_position, position=position + 1)
        raise InternalError(f"appended to {name!r} but could not find event {last} again")

    async def _actual_version(
        self, client: AsyncEventStoreDBClient, name: str, error: WrongCurrentVersion
    ) -> int | None:
        """The stream's version the server reported in its refusal."""
        message = str(error)
        if matched := _ACTUAL.search(message):
            return int(matched.group(1))
        if message.endswith("does not exist"):
            return None
        current = await client.get_current_version(name, timeout=self._timeout)
        return None if current is StreamState.NO_STREAM else int(current)

    # -- reading a stream ---------------------------------------------------------------------

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
        client = await self._connected()
        name = self._name(stream)
        # Backwards from 0 means from the end, as the contract says.
        start = None if backwards and from_version <= 0 else max(from_version, 0)
        with _boundary(self._url):
            try:
                async with await client.read_stream(
                    name,
                    stream_position=start,
                    backwards=backwards,
                    limit=sys.maxsize if limit is None else limit,
                ) as response:
                    found = [event async for event in response]
            except NotFound:
                return []
            if any(event.commit_position is None for event in found):
                # Servers before 22.10 give no positions in stream reads: ask $all for them.
                positions = await self._positions_of(client, name)
                found = [_with_position(event, positions) for event in found]
        # Links ($>) and other $-typed events are the server's, as in read_all.
        return [self._recorded(event) for event in found if not event.type.startswith("$")]

    async def stream_version(self, stream: str) -> int | None:
        validate_stream_name(stream)
        client = await self._connected()
        with _boundary(self._url):
            current = await client.get_current_version(self._name(stream), timeout=self._timeout)
        return None if current is StreamState.NO_STREAM else int(current)

    # -- the global order ---------------------------------------------------------------------

    async def read_all(
        self, from_position: int = 0, limit: int | None = None
    ) -> AsyncGenerator[RecordedEvent, None]:
        if limit is not None and limit <= 0:
            return
        client = await self._connected()
        wanted = max(from_position - 1, 0)  # the lowest commit position asked for
        with _boundary(self._url):
            start = await self._start_at_or_before(client, wanted)
            # No count for the server: it would also count events dropped below. The read
            # stops when enough came, and leaving the block cancels the rest of the call.
            response = await client.read_all(commit_position=start, **self._filters())
        taken = 0
        async with response:
            while limit is None or taken < limit:
                with _boundary(self._url):
                    event = await anext(response, None)
                if event is None:
                    return
                if self._wanted(event, wanted):
                    taken += 1
                    yield self._recorded(event)

    async def subscribe(self, from_position: int = 0) -> AsyncGenerator[RecordedEvent, None]:
        client = await self._connected()
        wanted = max(from_position - 1, 0)
        with _boundary(self._url):
            after = await self._start_before(client, wanted)
            # A catch-up subscription: the server sends history, then live events, with no
            # gap or duplicate at the switch, and starts after the position it is given.
            subscription = await client.subscribe_to_all(commit_position=after, **self._filters())
        try:
            while True:
                with _boundary(self._url):
                    event = await anext(subscription, None)
                if event is None:
                    _raise_if_cancelled()
                    raise EventStoreUnavailableError(
                        "the EventStoreDB subscription ended: the store was closed or the "
                        "server ended it",
                        details={"url": self._url},
                    )
                if self._wanted(event, wanted):
                    yield self._recorded(event)
        finally:
            await subscription.stop()

    async def last_position(self) -> int:
        client = await self._connected()
        with _boundary(self._url):
            event = await self._last_event(client)
        return 0 if event is None else _position(event)

    # -- positions ----------------------------------------------------------------------------

    async def _start_at_or_before(self, client: AsyncEventStoreDBClient, wanted: int) -> int | None:
        """A commit position to read forwards from (inclusive) that misses nothing wanted."""
        if wanted == 0:
            return None
        for candidate in (wanted, wanted - 1):
            if await self._valid(client, candidate):
                return candidate
        return None  # an arbitrary number: read from the start and drop what comes before

    async def _start_before(self, client: AsyncEventStoreDBClient, wanted: int) -> int | None:
        """A commit position to subscribe after (exclusive) that misses nothing wanted."""
        if wanted == 0:
            return None
        # Resuming after an event the caller saw: its commit position is wanted - 1.
        if await self._valid(client, wanted - 1):
            return wanted - 1
        # Starting at an event: the event before it is where to subscribe after.
        if await self._valid(client, wanted):
            async with await client.read_all(
                commit_position=wanted, backwards=True, limit=1, timeout=self._timeout
            ) as response:
                async for event in response:
                    return _commit(event)
        return None

    async def _valid(self, client: AsyncEventStoreDBClient, commit: int) -> bool:
        """Whether the server accepts ``commit`` as a position to read ``$all`` from."""
        try:
            await self._event_at(client, commit, strict=True)
        except GrpcError as error:
            if _status(error) is grpc.StatusCode.INVALID_ARGUMENT:
                return False
            raise
        return True

    async def _event_at(
        self, client: AsyncEventStoreDBClient, commit: int, *, strict: bool = False
    ) -> EsdbRecordedEvent | None:
        """The event whose commit position is ``commit``, if there is one."""
        try:
            async with await client.read_all(
                commit_position=commit, limit=1, filter_exclude=(), timeout=self._timeout
            ) as response:
                async for event in response:
                    return event if event.commit_position == commit else None
        except GrpcError as error:
            if strict or _status(error) is not grpc.StatusCode.INVALID_ARGUMENT:
                raise
        return None

    async def _last_event(self, client: AsyncEventStoreDBClient) -> EsdbRecordedEvent | None:
        """The newest event ``read_all`` would return."""
        async with await client.read_all(
            backwards=True, timeout=self._timeout, **self._filters()
        ) as response:
            async for event in response:
                if self._wanted(event, 0):
                    return event
        return None

    async def _positions_of(
        self, client: AsyncEventStoreDBClient, name: str
    ) -> dict[uuid.UUID, int]:
        """Commit positions of one stream's events, read from ``$all``."""
        async with await client.read_all(
            filter_include=(re.escape(name),), filter_by_stream_name=True
        ) as response:
            return {event.id: _commit(event) async for event in response}

    async def _commit_of(
        self, client: AsyncEventStoreDBClient, name: str, event: EsdbRecordedEvent
    ) -> int:
        if event.commit_position is not None:
            return event.commit_position
        return (await self._positions_of(client, name))[event.id]

    # -- mapping ------------------------------------------------------------------------------

    def _name(self, stream: str) -> str:
        return stream if self._namespace is None else f"{self._namespace}.{stream}"

    def _filters(self) -> _Filters:
        """Server-side filters for ``$all``: this namespace's streams, or no ``$``-stream."""
        if self._namespace is not None:
            return {
                "filter_include": (re.escape(f"{self._namespace}.") + ".*",),
                "filter_exclude": (),
                "filter_by_stream_name": True,
            }
        return {"filter_exclude": (r"\$.*",), "filter_by_stream_name": True}

    def _wanted(self, event: EsdbRecordedEvent, wanted: int) -> bool:
        """Whether an event of ``$all`` is a user event at or after ``wanted``."""
        # The server's filter already dropped $-streams; $-types remain possible in other
        # streams (a projection's links, for one), and a namespace is checked once more.
        if event.stream_name.startswith("$") or event.type.startswith("$"):
            return False
        if self._namespace is not None and not event.stream_name.startswith(f"{self._namespace}."):
            return False
        return _commit(event) >= wanted

    def _recorded(self, event: EsdbRecordedEvent) -> RecordedEvent:
        stream = event.stream_name
        if self._namespace is not None:
            stream = stream.removeprefix(f"{self._namespace}.")
        metadata = _object(event.metadata, empty={})
        if "recorded_at" not in metadata and event.recorded_at is not None:
            metadata["recorded_at"] = event.recorded_at.astimezone(UTC).isoformat()
        return RecordedEvent(
            id=event.id,
            type=event.type,
            stream=stream,
            version=event.stream_position,
            position=_position(event),
            data=_object(event.data, empty={}),
            metadata=metadata,
        )


# -- helpers ----------------------------------------------------------------------------------


def _outgoing(index: int, event: NewEvent) -> EsdbNewEvent:
    if event.type.startswith("$"):
        # EventStoreDB reserves $-types for its own events, which every reader skips.
        raise ValidationError(
            f"events[{index}].type {event.type!r} starts with '$', reserved by EventStoreDB",
            details={"fields": [{"field": f"events[{index}].type", "reason": "reserved"}]},
        )
    return EsdbNewEvent(
        type=event.type,
        data=dumps(event.data, field=f"events[{index}].data"),
        metadata=dumps(event.metadata, field=f"events[{index}].metadata"),
        content_type="application/json",
        id=event.id,
    )


def _current_version(expected: ExpectedVersion) -> int | StreamState:
    if expected is NO_STREAM:
        return StreamState.NO_STREAM
    if expected is EXISTS:
        return StreamState.EXISTS
    if expected is ANY:
        return StreamState.ANY
    assert isinstance(expected, int)
    return expected


def _commit(event: EsdbRecordedEvent) -> int:
    if event.commit_position is None:
        raise InternalError(f"EventStoreDB sent event {event.id} without a commit position")
    return event.commit_position


def _position(event: EsdbRecordedEvent) -> int:
    return _commit(event) + 1


def _with_position(event: EsdbRecordedEvent, positions: dict[uuid.UUID, int]) -> EsdbRecordedEvent:
    commit = positions.get(event.id)
    return replace(event, commit_position=commit, prepare_position=commit)


def _object(raw: bytes, *, empty: dict[str, Any]) -> dict[str, Any]:
    """JSON bytes as a dict; what other writers stored that is not a JSON object is wrapped."""
    if not raw:
        return dict(empty)
    try:
        value = loads(raw)
    except ValueError:
        return {"base64": base64.b64encode(raw).decode("ascii")}
    return value if isinstance(value, dict) else {"value": value}


def _status(error: GrpcError) -> grpc.StatusCode | None:
    cause = error.args[0] if error.args else None
    code = getattr(cause, "code", None)
    return code() if callable(code) else None


def _raise_if_cancelled() -> None:
    # esdbclient turns the cancellation of a task waiting on a call into CancelledByClient,
    # or into the end of a subscription: give it back to the task it was meant for.
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


@contextlib.contextmanager
def _boundary(url: str) -> Iterator[None]:
    """Translate esdbclient and grpc errors into micro's, raised from the cause."""
    try:
        yield
    except MicroError:
        raise
    except MaximumAppendSizeExceededError as error:
        raise PayloadTooLargeError(
            f"the append exceeds EventStoreDB's maximum append size ({error})",
            details={"url": url},
        ) from error
    except (ServiceUnavailable, DiscoveryFailed, DeadlineExceeded) as error:
        raise _unavailable(url, error) from error
    except CancelledByClient as error:
        _raise_if_cancelled()
        raise _unavailable(url, error) from error
    except GrpcError as error:
        status = _status(error)
        if status is grpc.StatusCode.RESOURCE_EXHAUSTED:
            raise PayloadTooLargeError(
                f"EventStoreDB refused a message over its size limit: {error}",
                details={"url": url},
            ) from error
        if status in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise _unavailable(url, error) from error
        raise InternalError(f"EventStoreDB failed: {error}", details={"url": url}) from error
    except grpc.aio.UsageError as error:  # the channel was closed under a call
        raise _unavailable(url, error) from error
    except EventStoreDBClientException as error:
        raise InternalError(
            f"EventStoreDB failed: {type(error).__name__}: {error}", details={"url": url}
        ) from error


def _unavailable(url: str, error: BaseException) -> EventStoreUnavailableError:
    return EventStoreUnavailableError(
        f"EventStoreDB at {url} is unavailable: {type(error).__name__}: {error}",
        details={"url": url},
    )


async def _close_quietly(client: AsyncEventStoreDBClient) -> None:
    # Closing a broken connection must not hide the error that broke it.
    with contextlib.suppress(Exception):
        await client.close()
