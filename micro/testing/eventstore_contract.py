"""The conformance suite every ``EventStore`` backend passes.

A backend's tests subclass ``EventStoreContract`` and override only the factory::

    class TestMemoryEventStore(EventStoreContract):
        async def make_store(self) -> EventStore:
            store = MemoryEventStore()
            await store.start()
            return store

``make_store`` returns a started, empty store; the suite closes it after each test. A factory
that needs pytest fixtures (a server URL, a per-test namespace) takes them in an autouse
fixture of the subclass and keeps them on ``self``; pytest runs the class's fixtures and
the test on the same instance::

    class TestJetStreamEventStore(EventStoreContract):
        @pytest.fixture(autouse=True)
        def _server(self, nats_server: NatsServer, micro_namespace: str) -> None:
            self.url, self.namespace = nats_server.url, micro_namespace

        async def make_store(self) -> EventStore:
            store = JetStreamEventStore(url=self.url, namespace=self.namespace)
            await store.start()
            return store

The class is not collected by itself (its name does not start with ``Test``). What it pins
down beyond the ``EventStore`` docstrings: positions increase but need not be contiguous;
``recorded_at`` is ISO-8601 UTC; a retried append (same event ids, even with an expectation
that is stale by now) returns the original result; invalid names, data that is not a JSON
object and wrongly typed expectations raise ``ValidationError`` before anything is stored.

(Over 600 lines on purpose: one suite in one class, so a backend subclasses one thing.)
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest

from micro.errors import ConcurrencyError, ValidationError
from micro.eventstore.base import (
    ANY,
    EXISTS,
    NO_STREAM,
    AppendResult,
    EventStore,
    NewEvent,
    RecordedEvent,
)

__all__ = ["EventStoreContract", "new_event"]

DEADLINE = 10.0
"""Seconds any wait in the suite may take before the test fails."""


def new_event(type: str = "Happened", **data: Any) -> NewEvent:
    """A ``NewEvent`` with a fresh id; keyword arguments become its data."""
    return NewEvent(type=type, data=data)


async def _take(iterator: AsyncIterator[RecordedEvent], count: int) -> list[RecordedEvent]:
    """The next ``count`` events of an iterator, failing after ``DEADLINE`` seconds."""
    taken: list[RecordedEvent] = []
    async with asyncio.timeout(DEADLINE):
        while len(taken) < count:
            taken.append(await anext(iterator))
    return taken


@asynccontextmanager
async def _subscription(
    store: EventStore, from_position: int = 0
) -> AsyncIterator[AsyncIterator[RecordedEvent]]:
    """``store.subscribe`` closed on exit, as every user of a subscription must do."""
    subscription = store.subscribe(from_position)
    try:
        yield subscription
    finally:
        aclose = getattr(subscription, "aclose", None)
        if aclose is not None:
            await aclose()


async def _all(store: EventStore, from_position: int = 0) -> list[RecordedEvent]:
    return [event async for event in store.read_all(from_position)]


class EventStoreContract(ABC):
    """Behaviour shared by every event store. Subclasses override ``make_store`` only."""

    reports_appended_events = True
    """Whether an append answers with the events it stored (``AppendResult.events``)."""

    @abstractmethod
    async def make_store(self) -> EventStore:
        """A started store holding no events."""

    @pytest.fixture
    async def store(self) -> AsyncIterator[EventStore]:
        store = await self.make_store()
        try:
            yield store
        finally:
            await store.close()

    # -- append and read ---------------------------------------------------------------------

    async def test_append_then_read_round_trips_every_field(self, store: EventStore) -> None:
        data = {
            "owner": "Ada Lovelace",
            "amount": 12.5,
            "count": 3,
            "flags": [True, False, None],
            "nested": {"city": "Zürich", "emoji": "✓"},
        }
        sent = NewEvent("AccountOpened", data, metadata={"command": "open account", "user": "u1"})
        before = datetime.now().astimezone()

        result = await store.append("account-1", [sent], expected_version=NO_STREAM)
        [event] = await store.read("account-1")

        assert event.id == sent.id
        assert event.type == "AccountOpened"
        assert event.stream == "account-1"
        assert event.version == 0
        assert event.position == result.position
        assert event.position > 0
        assert event.data == data
        assert event.metadata["command"] == "open account"
        assert event.metadata["user"] == "u1"
        recorded_at = datetime.fromisoformat(event.metadata["recorded_at"])
        assert recorded_at.utcoffset() == timedelta(0)
        assert (
            before - timedelta(seconds=5)
            <= recorded_at
            <= datetime.now().astimezone() + (timedelta(seconds=5))
        )

    async def test_append_returns_the_version_and_position_of_the_last_event(
        self, store: EventStore
    ) -> None:
        first = await store.append("s", [new_event(), new_event()], expected_version=NO_STREAM)
        second = await store.append("s", [new_event()], expected_version=1)

        events = await store.read("s")
        assert [event.version for event in events] == [0, 1, 2]
        assert (first.version, first.position) == (1, events[1].position)
        assert (second.version, second.position) == (2, events[2].position)

    async def test_an_append_reports_its_events_exactly_as_a_read_returns_them(
        self, store: EventStore
    ) -> None:
        # A service applies its own events from the append result: they must be the very
        # events every other reader gets, timestamps and positions included.
        await store.append("other", [new_event()])
        batch = [new_event(), NewEvent(type="Renamed", data={"name": "é", "n": 1.5, "no": None})]
        results = [
            await store.append("s", batch, expected_version=NO_STREAM),
            await store.append("s", [new_event()], expected_version=1),
        ]
        stored = await store.read("s")
        reported = [event for result in results for event in result.events]
        assert reported == (stored if self.reports_appended_events else [])
        assert [result.position for result in results] == [stored[1].position, stored[2].position]
        repeated = await store.append("s", batch, expected_version=NO_STREAM)
        assert (repeated.version, repeated.position) == (1, stored[1].position)
        assert repeated.events in ((), tuple(stored[:2]))

    async def test_positions_increase_across_streams_in_append_order(
        self, store: EventStore
    ) -> None:
        results = [
            await store.append(stream, [new_event()]) for stream in ["a", "b", "a", "c", "b"]
        ]
        positions = [result.position for result in results]
        assert positions == sorted(positions)
        assert len(set(positions)) == len(positions)
        assert [result.version for result in results] == [0, 0, 1, 0, 1]

    async def test_read_keeps_streams_apart(self, store: EventStore) -> None:
        await store.append("a", [new_event(n=1)])
        await store.append("b", [new_event(n=2)])
        await store.append("a", [new_event(n=3)])

        assert [event.data["n"] for event in await store.read("a")] == [1, 3]
        assert [event.data["n"] for event in await store.read("b")] == [2]
        assert {event.stream for event in await store.read("a")} == {"a"}

    async def test_stream_names_differing_by_a_prefix_are_different_streams(
        self, store: EventStore
    ) -> None:
        await store.append("order-1", [new_event()])
        await store.append("order-10", [new_event()])
        await store.append("order-1", [new_event()])

        assert await store.stream_version("order-1") == 1
        assert await store.stream_version("order-10") == 0

    async def test_read_of_a_stream_without_events_is_empty(self, store: EventStore) -> None:
        assert await store.read("nothing-here") == []
        assert await store.read("nothing-here", backwards=True) == []

    async def test_returned_events_are_copies_the_caller_cannot_corrupt(
        self, store: EventStore
    ) -> None:
        data: dict[str, Any] = {"items": [1, 2]}
        await store.append("s", [NewEvent("Listed", data)])
        data["items"].append(3)
        [event] = await store.read("s")
        event.data["items"].append(4)

        [again] = await store.read("s")
        assert again.data == {"items": [1, 2]}

    # -- expected versions -------------------------------------------------------------------

    async def test_no_stream_appends_to_a_new_stream(self, store: EventStore) -> None:
        result = await store.append("s", [new_event()], expected_version=NO_STREAM)
        assert result.version == 0

    async def test_no_stream_refuses_an_existing_stream(self, store: EventStore) -> None:
        await store.append("s", [new_event(), new_event()], expected_version=NO_STREAM)

        with pytest.raises(ConcurrencyError) as raised:
            await store.append("s", [new_event()], expected_version=NO_STREAM)

        assert raised.value.actual == 1
        assert raised.value.expected == str(NO_STREAM)
        assert raised.value.retryable
        assert await store.stream_version("s") == 1

    async def test_exists_refuses_a_new_stream(self, store: EventStore) -> None:
        with pytest.raises(ConcurrencyError) as raised:
            await store.append("s", [new_event()], expected_version=EXISTS)

        assert raised.value.actual is None
        assert raised.value.expected == str(EXISTS)
        assert await store.read("s") == []

    async def test_exists_appends_to_an_existing_stream(self, store: EventStore) -> None:
        await store.append("s", [new_event()])
        result = await store.append("s", [new_event()], expected_version=EXISTS)
        assert result.version == 1

    async def test_a_matching_version_appends(self, store: EventStore) -> None:
        await store.append("s", [new_event()], expected_version=NO_STREAM)
        await store.append("s", [new_event()], expected_version=0)
        result = await store.append("s", [new_event()], expected_version=1)
        assert result.version == 2

    async def test_a_stale_version_raises_concurrency_error_with_expected_and_actual(
        self, store: EventStore
    ) -> None:
        await store.append("s", [new_event(), new_event(), new_event()])

        with pytest.raises(ConcurrencyError) as raised:
            await store.append("s", [new_event()], expected_version=1)

        assert raised.value.expected == "1"
        assert raised.value.actual == 2
        assert len(await store.read("s")) == 3

    async def test_a_version_ahead_of_the_stream_raises_concurrency_error(
        self, store: EventStore
    ) -> None:
        await store.append("s", [new_event()])
        with pytest.raises(ConcurrencyError) as raised:
            await store.append("s", [new_event()], expected_version=5)
        assert raised.value.actual == 0

    async def test_an_int_version_on_a_new_stream_raises_concurrency_error(
        self, store: EventStore
    ) -> None:
        with pytest.raises(ConcurrencyError) as raised:
            await store.append("s", [new_event()], expected_version=0)
        assert raised.value.actual is None
        assert await store.read("s") == []

    async def test_any_appends_whatever_the_version(self, store: EventStore) -> None:
        assert (await store.append("s", [new_event()], expected_version=ANY)).version == 0
        assert (await store.append("s", [new_event()], expected_version=ANY)).version == 1
        assert (await store.append("s", [new_event()])).version == 2

    async def test_concurrent_appends_at_the_same_version_let_exactly_one_win(
        self, store: EventStore
    ) -> None:
        await store.append("s", [new_event()], expected_version=NO_STREAM)

        outcomes = await asyncio.gather(
            *(store.append("s", [new_event(n=n)], expected_version=0) for n in range(5)),
            return_exceptions=True,
        )

        wins = [outcome for outcome in outcomes if isinstance(outcome, AppendResult)]
        losses = [outcome for outcome in outcomes if isinstance(outcome, ConcurrencyError)]
        assert len(wins) == 1
        assert len(losses) == 4
        assert wins[0].version == 1
        assert [event.version for event in await store.read("s")] == [0, 1]

    async def test_concurrent_appends_with_any_all_succeed_with_distinct_versions(
        self, store: EventStore
    ) -> None:
        results = await asyncio.gather(*(store.append("s", [new_event()]) for _ in range(8)))

        assert sorted(result.version for result in results) == list(range(8))
        assert [event.version for event in await store.read("s")] == list(range(8))

    # -- idempotent retries ------------------------------------------------------------------

    async def test_retrying_an_append_returns_the_original_result(self, store: EventStore) -> None:
        events = [new_event()]
        first = await store.append("s", events, expected_version=NO_STREAM)

        # The retry carries the same, now stale, expectation: still not a conflict.
        again = await store.append("s", events, expected_version=NO_STREAM)

        assert again == first
        assert len(await store.read("s")) == 1
        assert await store.last_position() == first.position

    async def test_retrying_a_multi_event_append_returns_the_original_result(
        self, store: EventStore
    ) -> None:
        await store.append("s", [new_event()])
        events = [new_event(), new_event(), new_event()]
        first = await store.append("s", events, expected_version=0)

        again = await store.append("s", events, expected_version=0)

        assert again == first == AppendResult(version=3, position=first.position)
        assert len(await store.read("s")) == 4

    async def test_retrying_after_other_appends_returns_the_original_result(
        self, store: EventStore
    ) -> None:
        events = [new_event()]
        first = await store.append("s", events, expected_version=NO_STREAM)
        await store.append("s", [new_event()], expected_version=0)

        again = await store.append("s", events, expected_version=NO_STREAM)

        assert again == first
        assert len(await store.read("s")) == 2

    async def test_retrying_with_any_appends_nothing(self, store: EventStore) -> None:
        events = [new_event(), new_event()]
        first = await store.append("s", events)
        again = await store.append("s", events)

        assert again == first
        assert len(await store.read("s")) == 2

    # -- atomicity ---------------------------------------------------------------------------

    async def test_a_multi_event_append_is_stored_contiguously(self, store: EventStore) -> None:
        await store.append("other", [new_event()])
        result = await store.append("s", [new_event(n=n) for n in range(5)])
        await store.append("other", [new_event()])

        events = await store.read("s")
        assert [event.data["n"] for event in events] == list(range(5))
        everything = await _all(store)
        in_order = [event.stream for event in everything]
        assert in_order == ["other", "s", "s", "s", "s", "s", "other"]
        assert result.position == events[-1].position

    async def test_a_conflicting_multi_event_append_stores_nothing(self, store: EventStore) -> None:
        await store.append("s", [new_event()])
        before = await store.last_position()

        with pytest.raises(ConcurrencyError):
            await store.append("s", [new_event(), new_event(), new_event()], expected_version=3)

        assert len(await store.read("s")) == 1
        assert await store.last_position() == before

    # -- reading slices ----------------------------------------------------------------------

    async def test_read_from_a_version(self, store: EventStore) -> None:
        await store.append("s", [new_event(n=n) for n in range(6)])

        events = await store.read("s", from_version=3)

        assert [event.version for event in events] == [3, 4, 5]
        assert await store.read("s", from_version=6) == []

    async def test_read_with_a_limit(self, store: EventStore) -> None:
        await store.append("s", [new_event(n=n) for n in range(6)])

        assert [event.version for event in await store.read("s", limit=2)] == [0, 1]
        assert [e.version for e in await store.read("s", from_version=2, limit=3)] == [2, 3, 4]
        assert await store.read("s", limit=0) == []

    async def test_read_backwards_from_the_end(self, store: EventStore) -> None:
        await store.append("s", [new_event(n=n) for n in range(4)])

        events = await store.read("s", backwards=True)

        assert [event.version for event in events] == [3, 2, 1, 0]
        assert [e.version for e in await store.read("s", limit=2, backwards=True)] == [3, 2]

    async def test_read_backwards_from_a_version(self, store: EventStore) -> None:
        await store.append("s", [new_event(n=n) for n in range(6)])

        events = await store.read("s", from_version=3, limit=2, backwards=True)

        assert [event.version for event in events] == [3, 2]

    async def test_stream_version(self, store: EventStore) -> None:
        assert await store.stream_version("s") is None
        await store.append("s", [new_event(), new_event()])
        assert await store.stream_version("s") == 1
        await store.append("t", [new_event()])
        assert await store.stream_version("s") == 1

    async def test_last_position(self, store: EventStore) -> None:
        assert await store.last_position() == 0
        await store.append("a", [new_event()])
        result = await store.append("b", [new_event(), new_event()])
        assert await store.last_position() == result.position

    # -- the global order --------------------------------------------------------------------

    async def test_read_all_returns_every_event_in_global_order(self, store: EventStore) -> None:
        sent = []
        for n in range(10):
            event = new_event(n=n)
            sent.append(event.id)
            await store.append(f"s-{n % 3}", [event])

        events = await _all(store)

        assert [event.id for event in events] == sent
        assert [event.position for event in events] == sorted(e.position for e in events)
        assert [event.stream for event in events] == [f"s-{n % 3}" for n in range(10)]
        assert [event.version for event in events] == [n // 3 for n in range(10)]

    async def test_read_all_from_a_position(self, store: EventStore) -> None:
        for n in range(6):
            await store.append("s", [new_event(n=n)])
        everything = await _all(store)

        tail = await _all(store, everything[3].position)

        assert tail == everything[3:]
        assert await _all(store, everything[-1].position + 1) == []

    async def test_read_all_with_a_limit(self, store: EventStore) -> None:
        await store.append("s", [new_event(n=n) for n in range(5)])

        events = [event async for event in store.read_all(limit=2)]

        assert [event.data["n"] for event in events] == [0, 1]

    async def test_read_all_of_an_empty_store_is_empty(self, store: EventStore) -> None:
        assert await _all(store) == []

    async def test_read_all_matches_read(self, store: EventStore) -> None:
        await store.append("a", [new_event(n=1), new_event(n=2)])
        await store.append("b", [new_event(n=3)])

        by_stream = await store.read("a") + await store.read("b")
        assert sorted(await _all(store), key=lambda e: e.position) == sorted(
            by_stream, key=lambda e: e.position
        )

    # -- subscriptions -----------------------------------------------------------------------

    async def test_subscribe_delivers_history_then_live_events(self, store: EventStore) -> None:
        await store.append("s", [new_event(n=0), new_event(n=1)])

        async with _subscription(store) as subscription:
            history = await _take(subscription, 2)
            live = new_event(n=2)
            await store.append("s", [live])
            [event] = await _take(subscription, 1)

        assert [e.data["n"] for e in history] == [0, 1]
        assert event.id == live.id
        assert event.version == 2

    async def test_subscribe_to_an_empty_store_waits_for_the_first_event(
        self, store: EventStore
    ) -> None:
        async with _subscription(store) as subscription:
            waiting = asyncio.ensure_future(_take(subscription, 1))
            sent = new_event()
            await store.append("s", [sent])
            [event] = await waiting

        assert event.id == sent.id

    async def test_subscribe_switches_from_history_to_live_without_gap_or_duplicate(
        self, store: EventStore
    ) -> None:
        def batches(count: int) -> list[list[NewEvent]]:
            return [
                [new_event(n=n)] if n % 4 else [new_event(n=n), new_event(n=n)]
                for n in range(count)
            ]

        async def append(batches: list[list[NewEvent]]) -> None:
            for n, events in enumerate(batches):
                await store.append(f"s-{n % 3}", events)
                await asyncio.sleep(0)  # let the subscription run between appends

        history, racing = batches(30), batches(60)
        sent = [event.id for events in history + racing for event in events]
        await append(history)
        async with _subscription(store) as subscription:
            # Appends race the catch-up: some land before, during and after the switch.
            writer = asyncio.ensure_future(append(racing))
            received = await _take(subscription, len(sent))
            await writer
            # A duplicate would arrive before this marker; a gap would never end the wait.
            marker = new_event("Marker")
            await store.append("marker", [marker])
            [after] = await _take(subscription, 1)

        assert [event.id for event in received] == sent
        positions = [event.position for event in received]
        assert positions == sorted(set(positions))
        assert after.id == marker.id
        assert [event.id for event in await _all(store)] == [*sent, marker.id]

    async def test_subscribe_from_a_stored_position_resumes_after_it(
        self, store: EventStore
    ) -> None:
        for n in range(5):
            await store.append("s", [new_event(n=n)])
        async with _subscription(store) as subscription:
            first = await _take(subscription, 3)
        checkpoint = first[-1].position

        await store.append("s", [new_event(n=5)])
        async with _subscription(store, from_position=checkpoint + 1) as subscription:
            rest = await _take(subscription, 3)
            live = new_event(n=6)
            await store.append("s", [live])
            [last] = await _take(subscription, 1)

        assert [event.data["n"] for event in rest] == [3, 4, 5]
        assert last.id == live.id

    async def test_subscribe_beyond_the_end_delivers_only_later_events(
        self, store: EventStore
    ) -> None:
        result = await store.append("s", [new_event(), new_event()])

        async with _subscription(store, from_position=result.position + 1) as subscription:
            waiting = asyncio.ensure_future(_take(subscription, 1))
            sent = new_event()
            await store.append("s", [sent])
            [event] = await waiting

        assert event.id == sent.id

    async def test_two_subscriptions_see_the_same_order(self, store: EventStore) -> None:
        async with (
            _subscription(store) as one,
            _subscription(store) as two,
        ):
            for n in range(5):
                await store.append(f"s-{n % 2}", [new_event(n=n)])
            first = await _take(one, 5)
            second = await _take(two, 5)

        assert first == second

    # -- bad input ---------------------------------------------------------------------------

    @pytest.mark.parametrize(
        "stream",
        ["", "*", ">", "a.*", "orders.>", "a.b", "a b", " a", "a\tb", "a\nb", "x" * 201],
        ids=[
            "empty",
            "star",
            "gt",
            "dotted-star",
            "dotted-gt",
            "dot",
            "space",
            "leading-space",
            "tab",
            "newline",
            "over-long",
        ],
    )
    async def test_an_invalid_stream_name_raises_validation_error_and_appends_nothing(
        self, store: EventStore, stream: str
    ) -> None:
        with pytest.raises(ValidationError):
            await store.append(stream, [new_event()])
        with pytest.raises(ValidationError):
            await store.read(stream)
        with pytest.raises(ValidationError):
            await store.stream_version(stream)
        assert await store.last_position() == 0

    async def test_a_stream_name_of_the_maximum_length_is_accepted(self, store: EventStore) -> None:
        name = "x" * 200
        await store.append(name, [new_event()])
        assert await store.stream_version(name) == 0

    @pytest.mark.parametrize(
        "data", [[1, 2], "text", 3, None], ids=["list", "string", "number", "none"]
    )
    async def test_data_that_is_not_an_object_raises_validation_error(
        self, store: EventStore, data: Any
    ) -> None:
        with pytest.raises(ValidationError):
            await store.append("s", [new_event(), NewEvent("Bad", data)])
        assert await store.read("s") == []
        assert await store.last_position() == 0

    async def test_data_that_is_not_json_raises_validation_error(self, store: EventStore) -> None:
        with pytest.raises(ValidationError):
            await store.append("s", [new_event(), NewEvent("Bad", {"thing": object()})])
        assert await store.last_position() == 0

    @pytest.mark.parametrize(
        "expected", ["0", 1.0, True, None, -1], ids=["str", "float", "bool", "none", "negative"]
    )
    async def test_a_wrong_expected_version_raises_validation_error(
        self, store: EventStore, expected: Any
    ) -> None:
        with pytest.raises(ValidationError):
            await store.append("s", [new_event()], expected_version=expected)
        assert await store.last_position() == 0

    async def test_no_events_raises_validation_error(self, store: EventStore) -> None:
        with pytest.raises(ValidationError):
            await store.append("s", [])
        assert await store.last_position() == 0

    async def test_an_empty_event_type_raises_validation_error(self, store: EventStore) -> None:
        with pytest.raises(ValidationError):
            await store.append("s", [NewEvent("", {})])
        assert await store.last_position() == 0
