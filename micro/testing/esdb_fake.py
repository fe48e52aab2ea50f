"""A protocol fake of an EventStoreDB server, to test ``EsdbEventStore`` without one.

No EventStoreDB server can run on our machines, so the ``esdb`` backend is tested against this
fake: a gRPC server that speaks EventStoreDB's client protocol through the protobuf stubs the
Python client of the process ships (esdbclient's or kurrentdbclient's: they cannot share a
process), keeps its log in memory (or in a file), and answers the way a single node does as far
as the client protocol shows it. It is a model of the server's observable behaviour, not the
server: the official Node client cross-reads it (``tests/interop``), and whatever both get
wrong, only a run against a real server (``MICRO_TEST_ESDB_URL``) shows.

What it serves:
    Streams.Append        client-streaming append (esdbclient's synchronous client; the Node
                          client when ServerFeatures does not list BatchAppend)
    Streams.BatchAppend   the append both Python clients use, and the Node client's
    Streams.Read          a stream forwards or backwards from a revision, start or end, with a
                          count; ``$all`` forwards or backwards from a position, start or end;
                          event-type and stream-name filters (regex or prefixes); catch-up
                          subscriptions to a stream or to ``$all`` (confirmation first, history,
                          a caught-up message, then live events; checkpoints when filtered)
    Gossip.Read           one member, itself, alive and leader
    ServerFeatures        the methods above, with the features a 24.10 server lists for them
                          (the Node client appends through BatchAppend only when listed)

Server behaviour it models:
    - expected revisions: a number, no stream, stream exists, any; a mismatch answers with
      WrongExpectedVersion carrying the stream's current revision
    - idempotent appends by event id, with the server's rules: with a number (or no stream)
      below the current revision, the same ids at the following revisions are a no-op that
      answers with the original revision and position; with any/exists, ids already stored
      consecutively in the stream are; a partial match is a WrongExpectedVersion
    - each event is one record of the log; its commit and prepare positions are the offset where
      its record starts (records sized like a header plus payload), so positions start at 0,
      leave gaps, and a ``$all`` read or subscription from a position where no record starts
      fails with InvalidArgument "Trying to read from an invalid position.", as servers do
    - reading ``$all`` forwards from a position includes its event, backwards excludes it; a
      subscription from a position or a revision starts after it
    - appends over ``max_append_size`` (1 MiB by default, as the server) are refused with
      MaximumAppendSizeExceeded
    - ``positions_in_stream_reads=False`` answers stream reads without commit positions, as
      servers before 22.10 did
    - ``write_system_events()`` writes the kind of ``$``-events a fresh node writes itself
    - the deadline a batch append carries: a batch still waiting when it passes (see
      ``hold_appends``) is answered with the server's Timeout status and not written
    - a write the server cannot take now is answered as a real node answers one it does not
      handle (NotHandled, "Server Is Busy"): here, once ``max_open_batches`` (50) batches are
      open at the same time
    - ``drop_connections()`` aborts every call and listens again on the same port, as a node
      that restarts; ``path=`` keeps the log in a file, so a fake killed and started again on
      it (``python -m micro.testing.esdb_fake --port N --data FILE``) has every event it
      acknowledged (flushed before the answer: it survives the process, not the machine)

Not implemented: deleting and tombstoning streams, stream metadata (``$$`` streams, max age and
count, ACLs), links and their resolution, projections, persistent subscriptions, users and
authentication, TLS, leader redirection, "consumer too slow", and the bound on the server's
idempotency cache (this fake remembers every event id).
"""

# Over 600 lines on purpose: one model of the server, whose parts share its one log.
from __future__ import annotations

import argparse
import base64
import bisect
import contextlib
import importlib
import json
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import grpc
from google.protobuf import empty_pb2

from micro._nats_server import _die_with_parent
from micro.eventstore._esdb_clients import library

# The stubs of the client this process uses: the two clients' stubs cannot share a process.
_PROTOS = library().protos
gossip_pb2: Any = importlib.import_module(f"{_PROTOS}.gossip_pb2")
gossip_pb2_grpc: Any = importlib.import_module(f"{_PROTOS}.gossip_pb2_grpc")
shared_pb2: Any = importlib.import_module(f"{_PROTOS}.shared_pb2")
status_pb2: Any = importlib.import_module(f"{_PROTOS}.status_pb2")
streams_pb2: Any = importlib.import_module(f"{_PROTOS}.streams_pb2")
streams_pb2_grpc: Any = importlib.import_module(f"{_PROTOS}.streams_pb2_grpc")

__all__ = ["FakeEventStoreDB", "FakeEventStoreDBProcess"]

MAX_APPEND_SIZE = 1024 * 1024
"""The server's default ``MaxAppendSize``."""
MAX_OPEN_BATCHES = 50
"""How many batch appends may wait at once before the fake answers "Server Is Busy"."""

_RECORD_HEADER = 64  # bytes a record takes besides its payload: positions are offsets
_NO_POSITION = 2**64 - 1  # what servers before 22.10 put in events read from a stream
_INVALID_POSITION = "Trying to read from an invalid position."
# google.rpc.Code values, as a BatchAppend error status carries them.
_CODE_INVALID_ARGUMENT = 3
_CODE_DEADLINE_EXCEEDED = 4
_CODE_FAILED_PRECONDITION = 9


@dataclass(frozen=True, slots=True)
class _Record:
    id: str
    stream: str
    revision: int
    position: int
    type: str
    content_type: str
    data: bytes
    custom_metadata: bytes
    created: int  # ticks of 100 ns since the Unix epoch, as the server reports them


@dataclass(frozen=True, slots=True)
class _Proposed:
    id: str
    type: str
    content_type: str
    data: bytes
    custom_metadata: bytes
    size: int


# An expected revision: an int, or one of "no_stream", "any", "exists".
_Expected = int | str


@dataclass(frozen=True, slots=True)
class _Written:
    revision: int
    position: int  # of the last event written
    first: int  # of the first one


@dataclass(frozen=True, slots=True)
class _WrongVersion:
    current: int | None


@dataclass(frozen=True, slots=True)
class _TooLarge:
    limit: int


class _Log:
    """The server's state: every record, by stream, by id and by position. Thread-safe."""

    def __init__(self, max_append_size: int, path: Path | None = None) -> None:
        self.max_append_size = max_append_size
        self.changed = threading.Condition()
        self.records: list[_Record] = []
        self.positions: list[int] = []  # positions[i] == records[i].position, for bisect
        self.streams: dict[str, list[int]] = {}
        self.by_id: dict[str, int] = {}
        self.next_position = 0
        self.closed = False
        self._file: IO[str] | None = None
        if path is not None:
            self._load(path)
            self._file = path.open("a", encoding="utf-8")

    def _load(self, path: Path) -> None:
        """The records a previous fake wrote to ``path``; a torn last line was never answered."""
        if not path.exists():
            return
        lines = path.read_text(encoding="utf-8").splitlines()
        for line in lines:
            try:
                raw = json.loads(line)
            except ValueError:
                break  # killed while writing it: the append it belonged to got no answer
            end = raw.pop("end")
            raw["data"] = base64.b64decode(raw["data"])
            raw["custom_metadata"] = base64.b64decode(raw["custom_metadata"])
            self._add(_Record(**raw), end)
        # Rewrite without a torn tail, so the next record starts on a line of its own.
        with path.open("w", encoding="utf-8") as file:
            ends = [*self.positions[1:], self.next_position]
            file.writelines(
                self._line(record, end) for record, end in zip(self.records, ends, strict=True)
            )

    @staticmethod
    def _line(record: _Record, end: int) -> str:
        raw: dict[str, Any] = asdict(record)
        raw["data"] = base64.b64encode(record.data).decode("ascii")
        raw["custom_metadata"] = base64.b64encode(record.custom_metadata).decode("ascii")
        raw["end"] = end
        return json.dumps(raw) + "\n"

    def _add(self, record: _Record, end: int) -> None:
        """Index ``record``; the next one starts at ``end``."""
        self.next_position = end
        self.by_id[record.id] = len(self.records)
        self.streams.setdefault(record.stream, []).append(len(self.records))
        self.positions.append(record.position)
        self.records.append(record)

    def append(
        self, stream: str, expected: _Expected, proposed: Sequence[_Proposed]
    ) -> _Written | _WrongVersion | _TooLarge:
        if sum(message.size for message in proposed) > self.max_append_size:
            return _TooLarge(self.max_append_size)
        with self.changed:
            indexes = self.streams.get(stream, [])
            current = len(indexes) - 1
            idempotent = self._idempotent(stream, indexes, expected, proposed)
            if idempotent is not None:
                return idempotent
            if expected == "exists" and current < 0:
                return _WrongVersion(None)
            if isinstance(expected, int) and expected != current:
                return _WrongVersion(current if current >= 0 else None)
            if expected == "no_stream" and current >= 0:
                return _WrongVersion(current)
            if not proposed:  # an empty append succeeds and writes nothing
                last = self.records[indexes[-1]] if indexes else None
                position = last.position if last else self.next_position
                return _Written(current, position, position)
            created = time.time_ns() // 100
            added = []
            for message in proposed:
                current += 1
                record = _Record(
                    id=message.id,
                    stream=stream,
                    revision=current,
                    position=self.next_position,
                    type=message.type,
                    content_type=message.content_type,
                    data=message.data,
                    custom_metadata=message.custom_metadata,
                    created=created,
                )
                end = self.next_position + _RECORD_HEADER + len(stream) + message.size
                self._add(record, end)
                added.append((record, end))
            if self._file is not None:
                # Written and flushed before the answer: what was acknowledged is in the file.
                self._file.write("".join(self._line(record, end) for record, end in added))
                self._file.flush()
            self.changed.notify_all()
            return _Written(current, added[-1][0].position, added[0][0].position)

    def _idempotent(
        self,
        stream: str,
        indexes: list[int],
        expected: _Expected,
        proposed: Sequence[_Proposed],
    ) -> _Written | _WrongVersion | None:
        """The server's commit check: a retried append of stored events is a no-op."""
        if not proposed:
            return None
        current = len(indexes) - 1
        if expected in ("any", "exists"):
            first = self.by_id.get(proposed[0].id)
            if first is None or self.records[first].stream != stream:
                return None
            start = self.records[first].revision
        else:
            base = -1 if expected == "no_stream" else int(expected)
            if base >= current:
                return None
            start = base + 1
        matched = 0
        for offset, message in enumerate(proposed):
            revision = start + offset
            if revision >= len(indexes) or self.records[indexes[revision]].id != message.id:
                break
            matched += 1
        if matched == len(proposed):
            last = self.records[indexes[start + matched - 1]]
            return _Written(last.revision, last.position, self.records[indexes[start]].position)
        # None matched: an ordinary conflict. Some matched: the server's "corrupted
        # idempotency", which clients also see as a wrong expected version.
        return _WrongVersion(current if current >= 0 else None)

    def valid_position(self, position: int) -> bool:
        """Whether a record starts at ``position`` (or it is the end of the log)."""
        if position == self.next_position:
            return True
        index = bisect.bisect_left(self.positions, position)
        return index < len(self.positions) and self.positions[index] == position

    def close(self) -> None:
        with self.changed:
            self.closed = True
            if self._file is not None:
                self._file.close()
                self._file = None
            self.changed.notify_all()


_Filter = Callable[[_Record], bool]


def _filter(options: streams_pb2.ReadReq.Options) -> _Filter | None:
    """The record predicate a read's filter options describe, or None without a filter."""
    if options.WhichOneof("filter_option") != "filter":
        return None
    filter_options = options.filter
    on_stream = filter_options.WhichOneof("filter") == "stream_identifier"
    expression = filter_options.stream_identifier if on_stream else filter_options.event_type
    prefixes = tuple(expression.prefix)
    pattern = re.compile(expression.regex) if expression.regex else None

    def matches(record: _Record) -> bool:
        subject = record.stream if on_stream else record.type
        if prefixes:
            return subject.startswith(prefixes)
        # .NET's Regex.IsMatch searches, it does not anchor.
        return pattern is None or pattern.search(subject) is not None

    return matches


def _uuid(value: str, structured: bool) -> shared_pb2.UUID:
    if not structured:
        return shared_pb2.UUID(string=value)
    number = uuid.UUID(value).int

    def signed(bits: int) -> int:
        return bits - (1 << 64) if bits >= 1 << 63 else bits

    return shared_pb2.UUID(
        structured=shared_pb2.UUID.Structured(
            most_significant_bits=signed(number >> 64),
            least_significant_bits=signed(number & ((1 << 64) - 1)),
        )
    )


def _uuid_string(value: shared_pb2.UUID) -> str:
    if value.WhichOneof("value") == "structured":
        most = value.structured.most_significant_bits & ((1 << 64) - 1)
        least = value.structured.least_significant_bits & ((1 << 64) - 1)
        return str(uuid.UUID(int=(most << 64) | least))
    return str(uuid.UUID(value.string))


def _event_response(
    record: _Record, *, structured: bool, with_position: bool = True
) -> streams_pb2.ReadResp:
    position = record.position if with_position else _NO_POSITION
    recorded = streams_pb2.ReadResp.ReadEvent.RecordedEvent(
        id=_uuid(record.id, structured),
        stream_identifier=shared_pb2.StreamIdentifier(stream_name=record.stream.encode()),
        stream_revision=record.revision,
        prepare_position=position,
        commit_position=position,
        metadata={
            "type": record.type,
            "content-type": record.content_type,
            "created": str(record.created),
        },
        custom_metadata=record.custom_metadata,
        data=record.data,
    )
    if with_position:
        event = streams_pb2.ReadResp.ReadEvent(event=recorded, commit_position=record.position)
    else:
        event = streams_pb2.ReadResp.ReadEvent(event=recorded, no_position=shared_pb2.Empty())
    return streams_pb2.ReadResp(event=event)


def _proposed(message: Any) -> _Proposed:
    """A ProposedMessage of Append or BatchAppend, as the log keeps it."""
    return _Proposed(
        id=_uuid_string(message.id),
        type=message.metadata.get("type", ""),
        content_type=message.metadata.get("content-type", "application/octet-stream"),
        data=message.data,
        custom_metadata=message.custom_metadata,
        size=message.ByteSize(),
    )


class _Gate:
    """The batch appends in progress: how many are open, whether they may go on, and the
    deadline each one carried (in seconds, ``None`` without one). Kept across restarts."""

    def __init__(self, max_open: int) -> None:
        self.max_open = max_open
        self.changed = threading.Condition()
        self.open = 0
        self.held = False
        self.deadlines: list[float | None] = []

    def enter(self, deadline: float | None, context: grpc.ServicerContext) -> str | None:
        """Wait while appends are held; ``None`` when this one may be written, else why not."""
        with self.changed:
            self.deadlines.append(deadline)
            if self.open >= self.max_open:
                return "busy"
            self.open += 1
            self.changed.notify_all()
            until = None if deadline is None else time.monotonic() + deadline
            while True:
                left = None if until is None else until - time.monotonic()
                if left is not None and left <= 0:
                    self.open -= 1
                    return "timeout"
                if not context.is_active():  # the client gave up (its deadline), or a restart
                    self.open -= 1
                    return "gone"
                if not self.held:
                    break
                # Woken by a release; the timeout notices the call's end (a restart).
                self.changed.wait(0.1 if left is None else min(left, 0.1))
            return None

    def leave(self) -> None:
        with self.changed:
            self.open -= 1
            self.changed.notify_all()


def _deadline(options: streams_pb2.BatchAppendReq.Options) -> float | None:
    """Seconds a batch append may take, from the deadline its options carry."""
    choice = options.WhichOneof("deadline_option")
    if choice == "deadline":
        return float(options.deadline.ToTimedelta().total_seconds())
    if choice == "deadline_21_10_0":
        return float(options.deadline_21_10_0.ToNanoseconds()) / 1e9 - time.time()
    return None


class _Streams(streams_pb2_grpc.StreamsServicer):  # type: ignore[misc]
    """The Streams service over a ``_Log``."""

    def __init__(
        self,
        log: _Log,
        gate: _Gate,
        *,
        positions_in_stream_reads: bool,
        answer_first_position: bool = False,
    ) -> None:
        self._log = log
        self._gate = gate
        self._positions_in_stream_reads = positions_in_stream_reads
        self._answer_first_position = answer_first_position

    # -- appends ------------------------------------------------------------------------------

    def Append(
        self, request_iterator: Iterator[streams_pb2.AppendReq], context: grpc.ServicerContext
    ) -> streams_pb2.AppendResp:
        options = next(request_iterator).options
        stream = options.stream_identifier.stream_name.decode()
        choice = options.WhichOneof("expected_stream_revision")
        expected = _expected(choice, options.revision)
        proposed = [_proposed(request.proposed_message) for request in request_iterator]
        outcome = self._log.append(stream, expected, proposed)
        if isinstance(outcome, _TooLarge):
            # The server fails the call itself here, not with an error in the response.
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Maximum Append Size of {outcome.limit} Exceeded.",
            )
            raise AssertionError("context.abort returns only by raising")
        if isinstance(outcome, _WrongVersion):
            wrong = streams_pb2.AppendResp.WrongExpectedVersion()
            if outcome.current is None:
                wrong.current_no_stream.SetInParent()
            else:
                wrong.current_revision = outcome.current
            if isinstance(expected, int):
                wrong.expected_revision = expected
            else:
                getattr(wrong, f"expected_{choice or 'any'}").SetInParent()
            return streams_pb2.AppendResp(wrong_expected_version=wrong)
        position = streams_pb2.AppendResp.Position(
            commit_position=outcome.position, prepare_position=outcome.position
        )
        return streams_pb2.AppendResp(
            success=streams_pb2.AppendResp.Success(
                current_revision=outcome.revision, position=position
            )
        )

    def BatchAppend(
        self,
        request_iterator: Iterator[streams_pb2.BatchAppendReq],
        context: grpc.ServicerContext,
    ) -> Iterator[streams_pb2.BatchAppendResp]:
        # A batch may come in several requests sharing a correlation id; is_final closes it.
        pending: dict[str, tuple[streams_pb2.BatchAppendReq.Options, list[_Proposed]]] = {}
        for request in request_iterator:
            key = _uuid_string(request.correlation_id)
            options, proposed = pending.setdefault(key, (request.options, []))
            proposed.extend(_proposed(message) for message in request.proposed_messages)
            if request.is_final:
                del pending[key]
                yield self._batch_append(request.correlation_id, options, proposed, context)

    def _batch_append(
        self,
        correlation_id: shared_pb2.UUID,
        options: streams_pb2.BatchAppendReq.Options,
        proposed: list[_Proposed],
        context: grpc.ServicerContext,
    ) -> streams_pb2.BatchAppendResp:
        stream = options.stream_identifier.stream_name.decode()
        choice = options.WhichOneof("expected_stream_position")
        expected = _expected(choice, options.stream_position)
        response = streams_pb2.BatchAppendResp(
            correlation_id=correlation_id, stream_identifier=options.stream_identifier
        )
        refused = self._gate.enter(_deadline(options), context)
        if refused == "busy":
            # What a node answers for a write it does not handle now (NotHandled: too busy,
            # not ready): no code, Empty details, the reason in the message.
            response.error.CopyFrom(status_pb2.Status(message="Server Is Busy"))
            response.error.details.Pack(empty_pb2.Empty())
            return response
        if refused in ("timeout", "gone"):  # nobody reads the answer to a call that is gone
            response.error.CopyFrom(
                status_pb2.Status(code=_CODE_DEADLINE_EXCEEDED, message="Timeout")
            )
            response.error.details.Pack(shared_pb2.Timeout())
            return response
        try:
            outcome = self._log.append(stream, expected, proposed)
        finally:
            self._gate.leave()
        # The answer repeats the expectation it was asked.
        if isinstance(expected, int):
            response.stream_position = expected
        else:
            getattr(response, choice or "any").SetInParent()
        if isinstance(outcome, _Written):
            position = outcome.first if self._answer_first_position else outcome.position
            response.success.current_revision = outcome.revision
            response.success.position.commit_position = position
            response.success.position.prepare_position = position
            return response
        error = response.error
        if isinstance(outcome, _TooLarge):
            error.code = _CODE_INVALID_ARGUMENT
            error.message = "Maximum append size exceeded"
            error.details.Pack(shared_pb2.MaximumAppendSizeExceeded(maxAppendSize=outcome.limit))
            return response
        wrong = shared_pb2.WrongExpectedVersion()
        if outcome.current is None:
            wrong.current_no_stream.SetInParent()
        else:
            wrong.current_stream_revision = outcome.current
        if isinstance(expected, int):
            wrong.expected_stream_position = expected
        else:
            getattr(wrong, f"expected_{choice or 'any'}").SetInParent()
        error.code = _CODE_FAILED_PRECONDITION
        error.message = "Wrong expected version"
        error.details.Pack(wrong)
        return response

    # -- reads --------------------------------------------------------------------------------

    def Read(
        self, request: streams_pb2.ReadReq, context: grpc.ServicerContext
    ) -> Iterator[streams_pb2.ReadResp]:
        options = request.options
        structured = options.uuid_option.WhichOneof("content") == "structured"
        subscribe = options.WhichOneof("count_option") == "subscription"
        backwards = options.read_direction == streams_pb2.ReadReq.Options.Backwards
        count = options.count
        if options.WhichOneof("stream_option") == "stream":
            if subscribe:
                return self._subscribe_stream(options, context, structured)
            return self._read_stream(options, backwards, count, structured)
        if subscribe:
            return self._subscribe_all(options, context, structured)
        return self._read_all(options, context, backwards, count, structured)

    def _read_stream(
        self,
        options: streams_pb2.ReadReq.Options,
        backwards: bool,
        count: int,
        structured: bool,
    ) -> Iterator[streams_pb2.ReadResp]:
        identifier = options.stream.stream_identifier
        stream = identifier.stream_name.decode()
        revision_option = options.stream.WhichOneof("revision_option")
        log = self._log
        with log.changed:
            indexes = list(log.streams.get(stream, []))
            if not indexes:
                chosen: list[_Record] | None = None
            elif backwards:
                start = len(indexes) - 1
                if revision_option == "revision":
                    start = min(options.stream.revision, start)
                chosen = [log.records[index] for index in indexes[start::-1][:count]]
            else:
                start = options.stream.revision if revision_option == "revision" else 0
                if revision_option == "end":
                    start = len(indexes)
                chosen = [log.records[index] for index in indexes[start : start + count]]
        if chosen is None:
            yield streams_pb2.ReadResp(
                stream_not_found=streams_pb2.ReadResp.StreamNotFound(stream_identifier=identifier)
            )
            return
        for record in chosen:
            yield _event_response(
                record, structured=structured, with_position=self._positions_in_stream_reads
            )

    def _read_all(
        self,
        options: streams_pb2.ReadReq.Options,
        context: grpc.ServicerContext,
        backwards: bool,
        count: int,
        structured: bool,
    ) -> Iterator[streams_pb2.ReadResp]:
        matches = _filter(options)
        log = self._log
        all_option = options.all.WhichOneof("all_option")
        with log.changed:
            if all_option == "position":
                position = options.all.position.commit_position
                if not log.valid_position(position):
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, _INVALID_POSITION)
                # Forwards includes the event at the position, backwards excludes it.
                start = bisect.bisect_left(log.positions, position)
            else:
                start = 0 if all_option == "start" and not backwards else len(log.records)
            candidates = log.records[:start][::-1] if backwards else log.records[start:]
        chosen = [record for record in candidates if matches is None or matches(record)]
        for record in chosen[:count]:
            yield _event_response(record, structured=structured)

    # -- catch-up subscriptions ---------------------------------------------------------------

    def _subscribe_stream(
        self,
        options: streams_pb2.ReadReq.Options,
        context: grpc.ServicerContext,
        structured: bool,
    ) -> Iterator[streams_pb2.ReadResp]:
        stream = options.stream.stream_identifier.stream_name.decode()
        revision_option = options.stream.WhichOneof("revision_option")
        log = self._log
        with log.changed:
            if revision_option == "revision":  # a subscription starts after its revision
                next_revision = options.stream.revision + 1
            elif revision_option == "end":
                next_revision = len(log.streams.get(stream, []))
            else:
                next_revision = 0
        yield _confirmation()

        def more() -> list[_Record]:
            indexes = log.streams.get(stream, [])
            return [log.records[index] for index in indexes[next_revision:]]

        for batch in self._follow(context, more):
            if batch is None:
                yield _CAUGHT_UP
                continue
            for record in batch:
                next_revision = record.revision + 1
                yield _event_response(
                    record,
                    structured=structured,
                    with_position=self._positions_in_stream_reads,
                )

    def _subscribe_all(
        self,
        options: streams_pb2.ReadReq.Options,
        context: grpc.ServicerContext,
        structured: bool,
    ) -> Iterator[streams_pb2.ReadResp]:
        matches = _filter(options)
        every = 0
        if matches is not None:
            window = options.filter.max if options.filter.WhichOneof("window") == "max" else 1
            every = max(window, 1) * max(options.filter.checkpointIntervalMultiplier, 1)
        log = self._log
        all_option = options.all.WhichOneof("all_option")
        with log.changed:
            if all_option == "position":
                position = options.all.position.commit_position
                valid = log.valid_position(position)
                # A subscription starts after its position.
                next_index = bisect.bisect_right(log.positions, position)
            else:
                valid = True
                next_index = 0 if all_option == "start" else len(log.records)
        # The server confirms first; an invalid position fails the catch-up read after.
        yield _confirmation()
        if not valid:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, _INVALID_POSITION)

        def more() -> list[_Record]:
            return log.records[next_index:]

        scanned = 0
        for batch in self._follow(context, more):
            if batch is None:
                yield _CAUGHT_UP
                continue
            for record in batch:
                next_index += 1
                scanned += 1
                if matches is None or matches(record):
                    yield _event_response(record, structured=structured)
                if every and scanned % every == 0:
                    yield _checkpoint(record.position)

    def _follow(
        self, context: grpc.ServicerContext, more: Callable[[], list[_Record]]
    ) -> Iterator[list[_Record] | None]:
        """What ``more`` finds, ``None`` once history is exhausted, then what comes live.

        ``more`` runs under the log's lock and returns the records after those already taken,
        so history and live events come from one sequence: no gap, no duplicate.
        """
        log = self._log
        ended = threading.Event()

        def wake() -> None:
            ended.set()
            with log.changed:
                log.changed.notify_all()

        # Called when the call ends: cancelled by the client, deadline, or server stop.
        if not context.add_callback(wake):
            return
        caught_up = False
        while True:
            with log.changed:
                batch = more()
                while not batch and caught_up and not (ended.is_set() or log.closed):
                    log.changed.wait()
                    batch = more()
                if ended.is_set() or log.closed:
                    return
            if batch:
                yield batch
            else:
                caught_up = True
                yield None


def _expected(choice: str | None, number: int) -> _Expected:
    """An append's expected revision, from the oneof field the client set."""
    if choice in ("revision", "stream_position"):
        return number
    if choice == "stream_exists":
        return "exists"
    if choice in ("no_stream", "any"):
        return choice
    return "any"  # unset: servers read a missing expectation as "any"


# Servers from 23.10 on tell a subscriber when it has caught up; esdbclient skips it.
_CAUGHT_UP = streams_pb2.ReadResp(caught_up=streams_pb2.ReadResp.CaughtUp())


def _confirmation() -> streams_pb2.ReadResp:
    return streams_pb2.ReadResp(
        confirmation=streams_pb2.ReadResp.SubscriptionConfirmation(
            subscription_id=str(uuid.uuid4())
        )
    )


def _checkpoint(position: int) -> streams_pb2.ReadResp:
    return streams_pb2.ReadResp(
        checkpoint=streams_pb2.ReadResp.Checkpoint(
            commit_position=position, prepare_position=position
        )
    )


class _Gossip(gossip_pb2_grpc.GossipServicer):  # type: ignore[misc]
    """Gossip for a cluster of one: this node, alive, leader."""

    def __init__(self, host: str, port: Callable[[], int]) -> None:
        self._host = host
        self._port = port
        self._instance = str(uuid.uuid4())

    def Read(
        self, request: shared_pb2.Empty, context: grpc.ServicerContext
    ) -> gossip_pb2.ClusterInfo:
        member = gossip_pb2.MemberInfo(
            instance_id=shared_pb2.UUID(string=self._instance),
            time_stamp=time.time_ns() // 100,
            state=gossip_pb2.MemberInfo.VNodeState.Leader,
            is_alive=True,
            http_end_point=gossip_pb2.EndPoint(address=self._host, port=self._port()),
        )
        return gossip_pb2.ClusterInfo(members=[member])


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (wire type 2)."""
    header, size = bytearray([number << 3 | 2]), len(payload)
    while size > 0x7F:
        header.append(size & 0x7F | 0x80)
        size >>= 7
    header.append(size)
    return bytes(header) + payload


# What the fake serves, as a server lists it in ServerFeatures (lower case, as servers do):
# (service, method, features).
_SUPPORTED = [
    ("event_store.client.streams.streams", "read", ("position", "events")),
    ("event_store.client.streams.streams", "append", ()),
    ("event_store.client.streams.streams", "batchappend", ("deadline_duration",)),
    ("event_store.client.gossip.gossip", "read", ()),
    ("event_store.client.server_features.serverfeatures", "getsupportedmethods", ()),
]
SERVER_VERSION = "24.10.0"
"""The server version the fake gives in ServerFeatures: one whose client protocol it models."""


def _server_features() -> grpc.GenericRpcHandler:
    """ServerFeatures.GetSupportedMethods, encoded by hand: no Python client ships its stubs."""
    methods = b"".join(
        _field(
            1,
            _field(1, method.encode())
            + _field(2, service.encode())
            + b"".join(_field(3, feature.encode()) for feature in features),
        )
        for service, method, features in _SUPPORTED
    )
    answer = methods + _field(2, SERVER_VERSION.encode())

    def supported(request: bytes, context: grpc.ServicerContext) -> bytes:
        return answer

    return grpc.method_handlers_generic_handler(
        "event_store.client.server_features.ServerFeatures",
        {
            "GetSupportedMethods": grpc.unary_unary_rpc_method_handler(
                supported,
                request_deserializer=lambda raw: raw,
                response_serializer=lambda raw: raw,
            )
        },
    )


class FakeEventStoreDB:
    """A single EventStoreDB node, faked in process: a gRPC server on 127.0.0.1, insecure.

    Usage::

        with FakeEventStoreDB() as server:
            store = EsdbEventStore(server.url)

    ``start`` and ``stop`` are synchronous: the server runs on its own threads, so one fake can
    serve tests running on any event loop.

    Args:
        max_append_size: the largest append, in bytes, the server takes.
        positions_in_stream_reads: ``False`` answers stream reads as servers before 22.10.
        max_workers: handler threads; each open call (a live subscription) holds one.
        max_open_batches: batch appends that may wait at once; one more is "Server Is Busy".
        path: a file to keep the log in (loaded at start); in memory without one.
        port: the port to listen on; a free one without it.
        server_features: ``False`` serves no ServerFeatures, as servers before 21.10 (clients
            that ask then fall back to what those support: the Node client to Append).
        answer_first_position: a batch append of several events answers with the position
            of the first, not the last: which one a real server names is not verified here,
            and the store must be right either way.
    """

    def __init__(
        self,
        *,
        max_append_size: int = MAX_APPEND_SIZE,
        positions_in_stream_reads: bool = True,
        max_workers: int = 64,
        max_open_batches: int = MAX_OPEN_BATCHES,
        path: Path | None = None,
        port: int | None = None,
        server_features: bool = True,
        answer_first_position: bool = False,
    ) -> None:
        self._log = _Log(max_append_size, path)
        self._server_features = server_features
        self._answer_first_position = answer_first_position
        self._gate = _Gate(max_open_batches)
        self._positions_in_stream_reads = positions_in_stream_reads
        self._max_workers = max_workers
        self._server: grpc.Server | None = None
        self._port: int | None = port

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the fake EventStoreDB is not started")
        return self._port

    @property
    def url(self) -> str:
        """``esdb://127.0.0.1:PORT?Tls=false``."""
        return f"esdb://127.0.0.1:{self.port}?Tls=false"

    def start(self) -> Self:
        """Listen on 127.0.0.1 (on the port it had before, after a stop). Idempotent."""
        if self._server is not None:
            return self
        # Each live subscription holds a worker thread until it ends.
        server = grpc.server(ThreadPoolExecutor(max_workers=self._max_workers))
        streams_pb2_grpc.add_StreamsServicer_to_server(
            _Streams(
                self._log,
                self._gate,
                positions_in_stream_reads=self._positions_in_stream_reads,
                answer_first_position=self._answer_first_position,
            ),
            server,
        )
        gossip_pb2_grpc.add_GossipServicer_to_server(
            _Gossip("127.0.0.1", lambda: self.port), server
        )
        if self._server_features:
            server.add_generic_rpc_handlers((_server_features(),))
        port = server.add_insecure_port(f"127.0.0.1:{self._port or 0}")
        if not port:
            raise OSError("the fake EventStoreDB could not bind a port on 127.0.0.1")
        server.start()
        self._server, self._port = server, port
        return self

    def stop(self) -> None:
        """Cancel every call and stop listening. Idempotent."""
        self._stop_server()
        self._log.close()

    def drop_connections(self) -> None:
        """Abort every call and close every connection, then listen again on the same port.

        What clients see when a node restarts: calls fail UNAVAILABLE, subscriptions end, and
        the next call connects again to the same log.
        """
        self._stop_server()
        self.start()

    def stop_listening(self) -> None:
        """Abort every call and stop listening, keeping the log: ``start`` serves it again."""
        self._stop_server()

    def _stop_server(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        # Abort the calls first, so clients see the server go away (UNAVAILABLE), as when a
        # node dies; then release any handler thread still waiting for events.
        server.stop(grace=None).wait(timeout=5)
        with self._log.changed:
            self._log.changed.notify_all()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @contextlib.contextmanager
    def hold_appends(self) -> Iterator[None]:
        """Keep batch appends waiting (each until its deadline) while inside the block."""
        with self._gate.changed:
            self._gate.held = True
        try:
            yield
        finally:
            with self._gate.changed:
                self._gate.held = False
                self._gate.changed.notify_all()

    @property
    def server_features(self) -> bool:
        """Whether it serves ServerFeatures (lists the methods it supports)."""
        return self._server_features

    @property
    def open_batches(self) -> int:
        """How many batch appends are open (waiting, or being written) now."""
        with self._gate.changed:
            return self._gate.open

    @property
    def append_deadlines(self) -> list[float | None]:
        """The deadline, in seconds, each batch append so far carried (``None``: none)."""
        with self._gate.changed:
            return list(self._gate.deadlines)

    def write_system_events(self) -> None:
        """Write the kind of ``$``-events a fresh node writes itself, in ``$``-streams."""
        for stream, type in [
            ("$users", "$UserCreated"),
            ("$user-admin", "$UserCreated"),
            ("$projections-$all", "$ProjectionsInitialized"),
            ("$$$scavenges", "$metadata"),
        ]:
            message = _Proposed(
                id=str(uuid.uuid4()),
                type=type,
                content_type="application/json",
                data=b"{}",
                custom_metadata=b"",
                size=2,
            )
            self._log.append(stream, "any", [message])

    @property
    def event_count(self) -> int:
        """How many events the log holds, system events included."""
        with self._log.changed:
            return len(self._log.records)


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on (at the time of asking)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class FakeEventStoreDBProcess:
    """The fake in a process of its own, keeping its log in ``path``: one a test can kill -9.

    Usage::

        with FakeEventStoreDBProcess(tmp_path / "esdb.log") as server:
            ...  # services on server.url
            server.kill()
            server.start()  # the same port, the same log

    ``start`` waits until it listens; ``kill`` sends SIGKILL, so only what the fake flushed
    before answering survives, as with a node that dies.
    """

    def __init__(self, path: Path, *, port: int | None = None) -> None:
        self.path = path
        # 0 until the first start, where the fake binds a free port and prints it (a port
        # probed free beforehand could be taken meanwhile); restarts ask for that one again.
        self.port = port or 0
        self.process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"esdb://127.0.0.1:{self.port}?Tls=false"

    def start(self, timeout: float = 30.0) -> Self:
        if self.running:
            return self
        command = [sys.executable, "-m", "micro.testing.esdb_fake", "--port", str(self.port)]
        process = subprocess.Popen(
            [*command, "--data", str(self.path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            preexec_fn=_die_with_parent,  # no fake outlives a test run killed midway
        )
        self.process = process
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            line = process.stdout.readline() if selector.select(timeout) else ""
        process.stdout.close()  # the fake prints nothing after its URL
        listening = re.match(r"esdb://127\.0\.0\.1:(\d+)", line)
        if listening is None:
            self.kill()
            raise RuntimeError(f"the fake EventStoreDB did not start on port {self.port or 'any'}")
        self.port = int(listening.group(1))
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """kill -9: nothing flushed after this moment is kept."""
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            process.wait(10)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """Serve a fake EventStoreDB until SIGTERM or SIGINT: ``python -m micro.testing.esdb_fake``.

    Prints its URL on the first line of standard output once it listens.
    """
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=0, help="port of 127.0.0.1 (0: a free one)")
    parser.add_argument("--data", type=Path, help="file to keep the log in (default: memory)")
    arguments = parser.parse_args(argv)
    stopping = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stopping.set())
    server = FakeEventStoreDB(path=arguments.data, port=arguments.port or None).start()
    print(server.url, flush=True)
    try:
        stopping.wait()
    finally:
        server.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
