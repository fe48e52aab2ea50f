"""EventStoreDB (KurrentDB) as micro's event store, through esdbclient or kurrentdbclient.

kurrentdbclient, esdbclient's maintained successor, is used when installed (the
``micro-es[kurrentdb]`` extra); ``client=`` picks one. Both take ``esdb://`` and
``kurrentdb://`` URLs (and their ``+discover`` forms).

(Over 600 lines: each contract method here is the translation of one client call and its
errors, and the subscription's resume-after-drop loop belongs beside the reads it repeats;
which client to load already lives apart, in ``_esdb_clients``.)

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

Errors from the client and grpc are translated here into ``micro.errors``:
``WrongCurrentVersion`` -> ``ConcurrencyError``; an unreachable or silent server, an append
past its deadline, and a write the server does not handle now (busy, not ready) ->
``EventStoreUnavailableError`` (retryable); an append over the server's limit ->
``PayloadTooLargeError``.

An append carries the deadline of the request being served (``current_context``) when it is
sooner than ``timeout``, to the server too: a batch append tells it how long it may take. A
subscription rides out a lost connection: it subscribes again after the last event it
delivered, waiting longer between tries (up to 5 s) while the server stays away, as the
JetStream store does; only closing the store ends it with ``EventStoreUnavailableError``.

This backend is protocol-tested: the contract suite runs against the gRPC fake in
``micro.testing.esdb_fake`` on each installed client, the official Node client cross-reads
what it writes, and the suite runs against a real server when ``MICRO_TEST_ESDB_URL`` is set.
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
import structlog
from google.protobuf import empty_pb2

from micro.context import current_context
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
from micro.eventstore._esdb_clients import ClientLibrary, ClientName, library
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
_STATUS_NAMED = re.compile(r"StatusCode\.([A-Z_]+)")
# How far back in a stream to look for an append's own last event when the server's answer
# does not say where it is (an idempotent append on some servers).
_LOOKBACK = 100

_RESUME_DELAY = 0.1
_RECONNECT_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
)
_RESUME_DELAY_MAX = 5.0

_Filters = dict[str, Any]
# The two clients' classes differ by name only; the backend uses what they share.
_Client = Any
_Event = Any  # a RecordedEvent of either client

_log = structlog.get_logger("micro.eventstore")


class EsdbEventStore(EventStore):
    """Streams in an EventStoreDB / KurrentDB server.

    Usage::

        async with EsdbEventStore("esdb://localhost:2113?Tls=false") as store:
            await store.append("account-1", [NewEvent("AccountOpened", {"owner": "ada"})],
                               expected_version=NO_STREAM)

    Args:
        url: an ``esdb://``, ``kurrentdb://`` or ``+discover`` connection string.
        namespace: store every stream as ``<namespace>.<stream>`` and read only those.
        timeout: seconds an append or a lookup may take before the server counts as
            unavailable (an append within a request gets no more than the request has
            left); long reads and subscriptions have no deadline.
        client: ``"kurrentdbclient"`` or ``"esdbclient"``; the first installed by default.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str | None = None,
        timeout: float = 10.0,
        client: ClientName | None = None,
    ) -> None:
        if namespace is not None and not _NAMESPACE.match(namespace):
            raise ConfigError("an esdb namespace uses only letters, digits, '-' and '_'")
        if timeout <= 0:
            raise ConfigError("timeout must be positive")
        self._lib: ClientLibrary = library(client)
        self._url = url
        self._client_url = self._lib.url(url)
        try:
            # Parsed again by the client: fail here, not at first use.
            self._lib.connection_spec(self._client_url)
        except ValueError as error:
            raise ConfigError(f"bad EventStoreDB URL {url!r}: {error}") from error
        self._namespace = namespace
        self._timeout = timeout
        self._client: _Client | None = None
        self._closed = False
        self._starting = asyncio.Lock()

    @property
    def client_library(self) -> ClientName:
        """The Python client this store talks through."""
        return self._lib.name

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and check the server answers, failing fast when it does not."""
        self._closed = False
        if self._client is not None:
            return
        async with self._starting:
            if self._client is not None:
                return
            try:
                client = self._lib.client(self._client_url)
            except (ValueError, self._lib.base_error) as error:
                raise ConfigError(f"bad EventStoreDB URL {self._url!r}: {error}") from error
            # gRPC waits 1 s, then 1.6 times longer each try, before it connects again to a
            # server that went away: a node back in a second would stall writes for seconds.
            client.grpc_options = (*client.grpc_options, *_RECONNECT_OPTIONS)
            try:
                with self._boundary():
                    await client.connect()
                    # esdb:// with one host connects lazily: ask something to know it answers.
                    await self._last_event(client)
            except BaseException:
                await _close_quietly(client)
                raise
            self._client = client

    async def close(self) -> None:
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            await _close_quietly(client)

    async def _connected(self) -> _Client:
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
        outgoing = [self._outgoing(index, event) for index, event in enumerate(events)]
        client = await self._connected()
        name = self._name(stream)
        with self._boundary():
            try:
                commit = await client.append_to_stream(
                    name,
                    current_version=self._current_version(expected_version),
                    events=outgoing,
                    # The client sends it as the batch's deadline and the call's.
                    timeout=self._append_timeout(),
                )
            except self._lib.wrong_current_version as error:
                actual = await self._actual_version(client, name, error)
                raise ConcurrencyError.for_stream(stream, expected_version, actual) from error
            return await self._result(client, name, events, expected_version, commit)

    def _append_timeout(self) -> float:
        """The store's timeout, or what is left of the request being served if that is less."""
        context = current_context.get()
        remaining = None if context is None else context.remaining
        if remaining is None:
            return self._timeout
        # Never 0: a server reads a zero deadline as none at all on some paths.
        return max(min(self._timeout, remaining), 0.001)

    async def _result(
        self,
        client: _Client,
        name: str,
        events: Sequence[NewEvent],
        expected: ExpectedVersion,
        commit: int,
    ) -> AppendResult:
        """The version and position of the append's last event."""
        # With a number the server checked, the last event's version follows from it, and
        # the server answers with its commit position (the original one for a retry). 0 can
        # also mean "no position in the answer", so it is looked up like ANY and EXISTS.
        # Which event of several the answer's position names, only a real server shows: an
        # append of several is checked by reading the event there.
        if isinstance(expected, int) or expected is NO_STREAM:
            base = expected if isinstance(expected, int) else -1
            if commit > 0 and len(events) == 1:
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

    async def _actual_version(self, client: _Client, name: str, error: Exception) -> int | None:
        """The stream's version the server reported in its refusal."""
        message = str(error)
        if matched := _ACTUAL.search(message):
            return int(matched.group(1))
        if message.endswith("does not exist"):
            return None
        current = await client.get_current_version(name, timeout=self._timeout)
        return None if current is self._lib.stream_state.NO_STREAM else int(current)

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
        with self._boundary():
            try:
                async with await client.read_stream(
                    name,
                    stream_position=start,
                    backwards=backwards,
                    limit=sys.maxsize if limit is None else limit,
                ) as response:
                    found = [event async for event in response]
            except self._lib.not_found:
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
        with self._boundary():
            current = await client.get_current_version(self._name(stream), timeout=self._timeout)
        return None if current is self._lib.stream_state.NO_STREAM else int(current)

    # -- the global order ---------------------------------------------------------------------

    async def read_all(
        self, from_position: int = 0, limit: int | None = None
    ) -> AsyncGenerator[RecordedEvent, None]:
        if limit is not None and limit <= 0:
            return
        client = await self._connected()
        wanted = max(from_position - 1, 0)  # the lowest commit position asked for
        with self._boundary():
            start = await self._start_at_or_before(client, wanted)
            # No count for the server: it would also count events dropped below. The read
            # stops when enough came, and stopping the response cancels the rest of the call.
            response = await client.read_all(commit_position=start, **self._filters())
        taken = 0
        try:
            while limit is None or taken < limit:
                with self._boundary():
                    event = await anext(response, None)
                if event is None:
                    return
                if self._wanted(event, wanted):
                    taken += 1
                    yield self._recorded(event)
        finally:
            # Stopping a call the server already broke fails again: the first error is the one.
            with contextlib.suppress(Exception):
                await response.stop()

    async def subscribe(self, from_position: int = 0) -> AsyncGenerator[RecordedEvent, None]:
        wanted = max(from_position - 1, 0)  # the lowest commit position still to deliver
        delay = _RESUME_DELAY
        resuming = False
        while True:
            if resuming and self._closed:
                # Connecting again would reopen the store its owner closed.
                raise self._closed_error()
            resuming = True
            try:
                subscription = await self._subscription(wanted)
            except EventStoreUnavailableError as error:
                if self._closed:
                    raise self._closed_error() from error
                _log.warning(
                    "event subscription waiting for EventStoreDB", retry_in=delay, error=str(error)
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RESUME_DELAY_MAX)
                continue
            try:
                while True:
                    try:
                        with self._boundary():
                            event = await anext(subscription, None)
                    except EventStoreUnavailableError as error:
                        if self._closed:
                            raise self._closed_error() from error
                        _log.warning("event subscription lost EventStoreDB", error=str(error))
                        break
                    if event is None:
                        # The server ended it (a restart, a node change), or the store closed.
                        _raise_if_cancelled()
                        if self._closed:
                            raise self._closed_error()
                        break
                    if self._wanted(event, wanted):
                        # Resuming subscribes after this event: nothing skipped, nothing twice.
                        wanted = _commit(event) + 1
                        delay = _RESUME_DELAY
                        yield self._recorded(event)
            finally:
                with contextlib.suppress(Exception):
                    await subscription.stop()

    def _closed_error(self) -> EventStoreUnavailableError:
        return EventStoreUnavailableError(
            "the EventStoreDB subscription ended: the store was closed", details={"url": self._url}
        )

    async def _subscription(self, wanted: int) -> Any:
        """A catch-up subscription to every event from commit position ``wanted`` on."""
        client = await self._connected()
        with self._boundary():
            after = await self._start_before(client, wanted)
            # A catch-up subscription: the server sends history, then live events, with no
            # gap or duplicate at the switch, and starts after the position it is given.
            return await client.subscribe_to_all(commit_position=after, **self._filters())

    async def last_position(self) -> int:
        client = await self._connected()
        with self._boundary():
            event = await self._last_event(client)
        return 0 if event is None else _position(event)

    # -- positions ----------------------------------------------------------------------------

    async def _start_at_or_before(self, client: _Client, wanted: int) -> int | None:
        """A commit position to read forwards from (inclusive) that misses nothing wanted."""
        if wanted == 0:
            return None
        for candidate in (wanted, wanted - 1):
            if await self._valid(client, candidate):
                return candidate
        return None  # an arbitrary number: read from the start and drop what comes before

    async def _start_before(self, client: _Client, wanted: int) -> int | None:
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

    async def _valid(self, client: _Client, commit: int) -> bool:
        """Whether the server accepts ``commit`` as a position to read ``$all`` from."""
        try:
            await self._event_at(client, commit, strict=True)
        except self._lib.grpc_error as error:
            if _status(error) is grpc.StatusCode.INVALID_ARGUMENT:
                return False
            raise
        return True

    async def _event_at(
        self, client: _Client, commit: int, *, strict: bool = False
    ) -> _Event | None:
        """The event whose commit position is ``commit``, if there is one."""
        try:
            async with await client.read_all(
                commit_position=commit, limit=1, filter_exclude=(), timeout=self._timeout
            ) as response:
                async for event in response:
                    return event if event.commit_position == commit else None
        except self._lib.grpc_error as error:
            if strict or _status(error) is not grpc.StatusCode.INVALID_ARGUMENT:
                raise
        return None

    async def _last_event(self, client: _Client) -> _Event | None:
        """The newest event ``read_all`` would return."""
        async with await client.read_all(
            backwards=True, timeout=self._timeout, **self._filters()
        ) as response:
            async for event in response:
                if self._wanted(event, 0):
                    return event
        return None

    async def _positions_of(self, client: _Client, name: str) -> dict[uuid.UUID, int]:
        """Commit positions of one stream's events, read from ``$all``."""
        async with await client.read_all(
            filter_include=(re.escape(name),), filter_by_stream_name=True
        ) as response:
            return {event.id: _commit(event) async for event in response}

    async def _commit_of(self, client: _Client, name: str, event: _Event) -> int:
        if event.commit_position is not None:
            return int(event.commit_position)
        return (await self._positions_of(client, name))[event.id]

    # -- errors -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _boundary(self) -> Iterator[None]:
        """Translate the client's and grpc's errors into micro's, raised from the cause."""
        lib, url = self._lib, self._url
        try:
            yield
        except MicroError:
            raise
        except lib.max_append_size_exceeded as error:
            raise PayloadTooLargeError(
                f"the append exceeds EventStoreDB's maximum append size ({error})",
                details={"url": url},
            ) from error
        except (lib.service_unavailable, lib.discovery_failed, lib.deadline_exceeded) as error:
            raise _unavailable(url, error) from error
        except lib.cancelled_by_client as error:
            _raise_if_cancelled()
            raise _unavailable(url, error) from error
        except lib.grpc_error as error:
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
        except lib.base_error as error:
            if _not_handled(error):
                # Busy, not ready, no leader: the server took none of it; asking again may work.
                raise EventStoreUnavailableError(
                    f"EventStoreDB at {url} did not take the write now: {_reason(error)}",
                    details={"url": url},
                ) from error
            raise InternalError(
                f"EventStoreDB failed: {type(error).__name__}: {error}", details={"url": url}
            ) from error

    # -- mapping ------------------------------------------------------------------------------

    def _outgoing(self, index: int, event: NewEvent) -> Any:
        if event.type.startswith("$"):
            # EventStoreDB reserves $-types for its own events, which every reader skips.
            raise ValidationError(
                f"events[{index}].type {event.type!r} starts with '$', reserved by EventStoreDB",
                details={"fields": [{"field": f"events[{index}].type", "reason": "reserved"}]},
            )
        return self._lib.new_event(
            type=event.type,
            data=dumps(event.data, field=f"events[{index}].data"),
            metadata=dumps(event.metadata, field=f"events[{index}].metadata"),
            content_type="application/json",
            id=event.id,
        )

    def _current_version(self, expected: ExpectedVersion) -> Any:
        states = self._lib.stream_state
        if expected is NO_STREAM:
            return states.NO_STREAM
        if expected is EXISTS:
            return states.EXISTS
        if expected is ANY:
            return states.ANY
        assert isinstance(expected, int)
        return expected

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

    def _wanted(self, event: _Event, wanted: int) -> bool:
        """Whether an event of ``$all`` is a user event at or after ``wanted``."""
        # The server's filter already dropped $-streams; $-types remain possible in other
        # streams (a projection's links, for one), and a namespace is checked once more.
        if event.stream_name.startswith("$") or event.type.startswith("$"):
            return False
        if self._namespace is not None and not event.stream_name.startswith(f"{self._namespace}."):
            return False
        return _commit(event) >= wanted

    def _recorded(self, event: _Event) -> RecordedEvent:
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


def _commit(event: _Event) -> int:
    if event.commit_position is None:
        raise InternalError(f"EventStoreDB sent event {event.id} without a commit position")
    return int(event.commit_position)


def _position(event: _Event) -> int:
    return _commit(event) + 1


def _with_position(event: _Event, positions: dict[uuid.UUID, int]) -> _Event:
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


def _status(error: Exception) -> grpc.StatusCode | None:
    """The gRPC status behind a client's error: esdbclient keeps the call in its arguments,
    kurrentdbclient raises from it, or only names it in the message."""
    for cause in (error.args[0] if error.args else None, error.__cause__, error.__context__):
        code = getattr(cause, "code", None)
        if callable(code):
            with contextlib.suppress(Exception):
                value = code()
                if isinstance(value, grpc.StatusCode):
                    return value
    named = _STATUS_NAMED.search(str(error))
    return grpc.StatusCode.__members__.get(named.group(1)) if named else None


def _raise_if_cancelled() -> None:
    # esdbclient turns the cancellation of a task waiting on a call into CancelledByClient,
    # or into the end of a subscription: give it back to the task it was meant for.
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _not_handled(error: Exception) -> bool:
    """Whether a batch append was answered as a node answers a write it does not handle now.

    Such an answer has Empty details: esdbclient raises with those details, kurrentdbclient with
    the whole status.
    """
    cause = error.args[0] if error.args else None
    details = getattr(cause, "details", cause)
    is_a = getattr(details, "Is", None)
    return callable(is_a) and bool(is_a(empty_pb2.Empty.DESCRIPTOR))


def _reason(error: Exception) -> str:
    message = getattr(error.args[0], "message", "") if error.args else ""
    return str(message) or "the server did not handle it"


def _unavailable(url: str, error: BaseException) -> EventStoreUnavailableError:
    return EventStoreUnavailableError(
        f"EventStoreDB at {url} is unavailable: {type(error).__name__}: {error}",
        details={"url": url},
    )


async def _close_quietly(client: _Client) -> None:
    # Closing a broken connection must not hide the error that broke it.
    with contextlib.suppress(Exception):
        await client.close()
