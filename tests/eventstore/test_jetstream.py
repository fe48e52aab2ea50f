from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
from nats.aio.client import Client
from nats.js.api import StorageType, StreamConfig

from micro.errors import (
    ConcurrencyError,
    ConfigError,
    ConflictError,
    EventStoreUnavailableError,
    InternalError,
    PayloadTooLargeError,
    ValidationError,
)
from micro.eventstore import open_event_store
from micro.eventstore.base import ANY, NO_STREAM, EventStore, RecordedEvent
from micro.eventstore.jetstream import MAX_EVENTS_PER_APPEND, JetStreamEventStore
from micro.settings import Settings
from micro.testing import NatsServer, wait_until
from micro.testing.eventstore_contract import EventStoreContract, new_event

DEADLINE = 10.0


class TestJetStreamEventStore(EventStoreContract):
    @pytest.fixture(autouse=True)
    def _server(self, nats_server: NatsServer, micro_namespace: str) -> None:
        self.url = nats_server.url
        self.namespace = micro_namespace

    async def make_store(self) -> EventStore:
        store = JetStreamEventStore(url=self.url, namespace=self.namespace)
        await store.start()
        return store


class _AckLosingClient:
    """A nats-py client whose next append is stored by the server but whose acknowledgement
    never arrives, as when a connection drops at the wrong moment, or arrives only when the
    test releases it, as from a slow server. It also counts the round trips the store makes
    (requests, and publishes that ask for a reply) and the atomic batches it commits."""

    def __init__(self, client: Client, namespace: str) -> None:
        self._client = client
        self._events = f"{namespace}.ev."
        self.lose_next = False
        self.lose_next_commit = False  # the next atomic batch's commit
        self.hold_next = False
        self._held: tuple[str, Any] | None = None  # (the store's reply subject, our inbox)
        self.requests: list[str] = []
        self.commits = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def request(self, subject: str, payload: bytes = b"", **kwargs: Any) -> Any:
        self.requests.append(subject)
        return await self._client.request(subject, payload, **kwargs)

    async def publish(
        self, subject: str, payload: bytes = b"", reply: str = "", **kwargs: Any
    ) -> Any:
        if reply:
            self.requests.append(subject)
            commit = "Nats-Batch-Commit" in (kwargs.get("headers") or {})
            self.commits += commit
            if subject.startswith(self._events) and (
                self.lose_next or (commit and self.lose_next_commit)
            ):
                self.lose_next = self.lose_next_commit = False
                reply = self._client.new_inbox()  # nobody listens there: the ack is lost
            elif subject.startswith(self._events) and self.hold_next:
                self.hold_next = False
                inbox = self._client.new_inbox()
                self._held = (reply, await self._client.subscribe(inbox))
                reply = inbox
        return await self._client.publish(subject, payload, reply=reply, **kwargs)

    async def release(self) -> None:
        """Let the held acknowledgement reach the store."""
        assert self._held is not None
        reply, inbox = self._held
        self._held = None
        ack = await inbox.next_msg(timeout=DEADLINE)
        await inbox.unsubscribe()
        await self._client.publish(reply, ack.data)


@pytest.fixture
async def client(nats_server: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


@pytest.fixture
async def store(
    nats_server: NatsServer, micro_namespace: str
) -> AsyncIterator[JetStreamEventStore]:
    async with JetStreamEventStore(url=nats_server.url, namespace=micro_namespace) as store:
        yield store


@pytest.fixture
async def lossy(client: Client, micro_namespace: str) -> _AckLosingClient:
    return _AckLosingClient(client, micro_namespace)


@pytest.fixture
async def lossy_store(
    lossy: _AckLosingClient, micro_namespace: str
) -> AsyncIterator[JetStreamEventStore]:
    # a lost acknowledgement is noticed once this timeout passes
    store = JetStreamEventStore(lossy, namespace=micro_namespace, timeout=1.5)  # type: ignore[arg-type]
    async with store:
        yield store


class TestRetries:
    """The retry trap: a retried append must return its first result, never a conflict."""

    async def test_nats_server_refuses_a_stale_retry_instead_of_deduplicating_it(
        self, store: JetStreamEventStore, client: Client, micro_namespace: str
    ) -> None:
        # Why the store needs its own check: the server calls this retry a conflict.
        subject = f"{micro_namespace}.ev.s"
        headers = {"Nats-Msg-Id": "m-1", "Nats-Expected-Last-Subject-Sequence": "0"}
        first = orjson.loads((await client.request(subject, b"{}", headers=headers)).data)
        retry = orjson.loads((await client.request(subject, b"{}", headers=headers)).data)

        assert first["seq"] == 1
        assert retry["error"]["err_code"] == 10071

    async def test_a_retry_after_a_lost_ack_with_no_stream_returns_the_original(
        self, lossy_store: JetStreamEventStore, lossy: _AckLosingClient
    ) -> None:
        events = [new_event()]
        lossy.lose_next = True
        with pytest.raises(EventStoreUnavailableError) as raised:
            await lossy_store.append("s", events, expected_version=NO_STREAM)
        assert raised.value.retryable

        result = await lossy_store.append("s", events, expected_version=NO_STREAM)

        [stored] = await lossy_store.read("s")
        assert stored.id == events[0].id
        assert (result.version, result.position) == (0, stored.position)

    async def test_a_retry_after_a_lost_ack_with_a_version_returns_the_original(
        self, lossy_store: JetStreamEventStore, lossy: _AckLosingClient
    ) -> None:
        await lossy_store.append("s", [new_event()], expected_version=NO_STREAM)
        events = [new_event()]
        lossy.lose_next = True
        with pytest.raises(EventStoreUnavailableError):
            await lossy_store.append("s", events, expected_version=0)

        result = await lossy_store.append("s", events, expected_version=0)

        assert result.version == 1
        assert [event.id for event in await lossy_store.read("s")][1:] == [events[0].id]

    async def test_a_retry_after_a_lost_ack_with_any_returns_the_original(
        self, lossy_store: JetStreamEventStore, lossy: _AckLosingClient
    ) -> None:
        await lossy_store.append("s", [new_event()])
        events = [new_event()]
        lossy.lose_next = True
        with pytest.raises(EventStoreUnavailableError):
            await lossy_store.append("s", events)

        result = await lossy_store.append("s", events)

        assert result.version == 1
        assert len(await lossy_store.read("s")) == 2

    async def test_a_retried_batch_after_a_lost_ack_returns_the_original(
        self, lossy_store: JetStreamEventStore, lossy: _AckLosingClient
    ) -> None:
        events = [new_event(n=n) for n in range(3)]
        lossy.lose_next = True
        with pytest.raises(EventStoreUnavailableError):
            await lossy_store.append("s", events, expected_version=NO_STREAM)

        result = await lossy_store.append("s", events, expected_version=NO_STREAM)

        assert result.version == 2
        assert [event.id for event in await lossy_store.read("s")] == [e.id for e in events]

    async def test_a_retried_batch_with_any_after_other_appends_returns_the_original(
        self, lossy_store: JetStreamEventStore, lossy: _AckLosingClient
    ) -> None:
        events = [new_event(n=n) for n in range(3)]
        lossy.lose_next = True
        with pytest.raises(EventStoreUnavailableError):
            await lossy_store.append("s", events)
        await lossy_store.append("s", [new_event()])

        result = await lossy_store.append("s", events)

        assert result.version == 2
        assert len(await lossy_store.read("s")) == 4

    async def test_a_retry_from_another_process_returns_the_original(
        self, store: JetStreamEventStore, nats_server: NatsServer, micro_namespace: str
    ) -> None:
        events = [new_event(), new_event()]
        first = await store.append("s", events, expected_version=NO_STREAM)
        await store.append("s", [new_event()], expected_version=1)

        async with JetStreamEventStore(url=nats_server.url, namespace=micro_namespace) as other:
            again = await other.append("s", events, expected_version=NO_STREAM)

        assert again == first
        assert len(await store.read("s")) == 3

    @pytest.mark.parametrize("size", [1, 3], ids=["one-event", "batch"])
    async def test_reusing_event_ids_in_another_stream_is_a_conflict(
        self, store: JetStreamEventStore, size: int
    ) -> None:
        events = [new_event() for _ in range(size)]
        await store.append("first", events)

        with pytest.raises(ConflictError) as raised:
            await store.append("second", events)

        assert not isinstance(raised.value, ConcurrencyError)
        assert await store.stream_version("second") is None

    async def test_a_real_conflict_after_a_lost_ack_is_still_a_conflict(
        self, lossy_store: JetStreamEventStore, lossy: _AckLosingClient
    ) -> None:
        lossy.lose_next = True
        with pytest.raises(EventStoreUnavailableError):
            await lossy_store.append("s", [new_event()], expected_version=NO_STREAM)

        with pytest.raises(ConcurrencyError) as raised:
            await lossy_store.append("s", [new_event()], expected_version=NO_STREAM)

        assert raised.value.actual == 0


class TestStreamGone:
    async def test_an_append_with_no_stream_to_store_it_says_the_store_is_unavailable(
        self, store: JetStreamEventStore, client: Client
    ) -> None:
        await client.jetstream().delete_stream(store.stream_name)

        with pytest.raises(EventStoreUnavailableError, match="no JetStream stream stores"):
            await store.append("s", [new_event()], expected_version=NO_STREAM)

    async def test_the_stream_state_is_asked_again_while_the_stream_is_not_found(
        self, lossy: _AckLosingClient, nats_server: NatsServer, micro_namespace: str
    ) -> None:
        # A replica of a replicated stream still being set up answers "not found" ahead of
        # the others; here the stream really is gone for a moment, then made again.
        async with JetStreamEventStore(lossy, namespace=micro_namespace, timeout=30) as store:  # type: ignore[arg-type]
            await store.append("s", [new_event()], expected_version=NO_STREAM)
            await lossy.jetstream().delete_stream(store.stream_name)
            info = f"$JS.API.STREAM.INFO.{store.stream_name}"
            lossy.requests.clear()
            reading = asyncio.create_task(store.last_position())
            await wait_until(lambda: lossy.requests.count(info) >= 2, DEADLINE, "a second ask")
            async with JetStreamEventStore(url=nats_server.url, namespace=micro_namespace):
                assert await reading == 0

    async def test_a_stream_that_stays_not_found_is_reported_after_the_timeout(
        self, lossy_store: JetStreamEventStore, lossy: _AckLosingClient
    ) -> None:
        await lossy.jetstream().delete_stream(lossy_store.stream_name)
        lossy.requests.clear()

        with pytest.raises(InternalError, match="stream not found"):
            await lossy_store.last_position()

        assert lossy.requests.count(f"$JS.API.STREAM.INFO.{lossy_store.stream_name}") >= 2


class TestRoundTrips:
    async def test_an_append_to_a_known_stream_is_one_request(
        self, lossy_store: JetStreamEventStore, lossy: _AckLosingClient
    ) -> None:
        await lossy_store.append("s", [new_event()], expected_version=NO_STREAM)
        lossy.requests.clear()

        await lossy_store.append("s", [new_event()], expected_version=0)
        await lossy_store.append("s", [new_event(), new_event()], expected_version=1)
        await lossy_store.append("s", [new_event()])

        assert len(lossy.requests) == 3

    async def test_a_stale_cache_is_refreshed_not_reported_as_a_conflict(
        self, store: JetStreamEventStore, nats_server: NatsServer, micro_namespace: str
    ) -> None:
        await store.append("s", [new_event()], expected_version=NO_STREAM)
        async with JetStreamEventStore(url=nats_server.url, namespace=micro_namespace) as other:
            await other.append("s", [new_event()], expected_version=0)

        # This store still believes the stream is at version 0.
        assert (await store.append("s", [new_event()], expected_version=1)).version == 2
        async with JetStreamEventStore(url=nats_server.url, namespace=micro_namespace) as other:
            await other.append("s", [new_event()])
        assert (await store.append("s", [new_event()], expected_version=ANY)).version == 4
        with pytest.raises(ConcurrencyError) as raised:
            await store.append("s", [new_event()], expected_version=2)
        assert raised.value.actual == 4


class TestAtomicBatches:
    async def test_racing_batches_from_two_stores_store_exactly_one_whole_batch(
        self, store: JetStreamEventStore, nats_server: NatsServer, micro_namespace: str
    ) -> None:
        async with JetStreamEventStore(url=nats_server.url, namespace=micro_namespace) as other:
            one = [new_event(writer=1, n=n) for n in range(20)]
            two = [new_event(writer=2, n=n) for n in range(20)]
            outcomes = await asyncio.gather(
                store.append("s", one, expected_version=NO_STREAM),
                other.append("s", two, expected_version=NO_STREAM),
                return_exceptions=True,
            )

        assert sorted(type(outcome).__name__ for outcome in outcomes) == [
            "AppendResult",
            "ConcurrencyError",
        ]
        stored = await store.read("s")
        assert len(stored) == 20
        assert len({event.data["writer"] for event in stored}) == 1
        positions = [event.position for event in stored]
        assert positions == list(range(positions[0], positions[0] + 20))

    async def test_a_batch_with_an_oversized_event_stores_nothing(
        self, nats_server: NatsServer, micro_namespace: str
    ) -> None:
        async with JetStreamEventStore(
            url=nats_server.url, namespace=micro_namespace, max_event_bytes=2000
        ) as store:
            with pytest.raises(PayloadTooLargeError) as raised:
                await store.append("s", [new_event(), new_event(blob="x" * 3000)])

            assert "2000" in str(raised.value)
            assert "max_event_bytes" in str(raised.value)
            assert await store.last_position() == 0

    async def test_an_event_over_the_server_max_payload_is_refused_naming_the_limit(
        self, store: JetStreamEventStore
    ) -> None:
        limit = store.client.max_payload

        with pytest.raises(PayloadTooLargeError) as raised:
            await store.append("s", [new_event(blob="x" * limit)])

        assert str(limit) in str(raised.value)
        assert await store.last_position() == 0

    async def test_the_largest_batch_is_stored_and_a_larger_one_refused(
        self, store: JetStreamEventStore
    ) -> None:
        events = [new_event(n=n) for n in range(MAX_EVENTS_PER_APPEND)]
        result = await store.append("s", events, expected_version=NO_STREAM)
        assert result.version == MAX_EVENTS_PER_APPEND - 1

        with pytest.raises(ValidationError):
            await store.append("t", [new_event() for _ in range(MAX_EVENTS_PER_APPEND + 1)])
        assert await store.stream_version("t") is None

    async def test_a_subscriber_sees_a_batch_whole_and_in_order(
        self, store: JetStreamEventStore
    ) -> None:
        async with aclosing(store.subscribe()) as subscription:
            await store.append("s", [new_event(n=n) for n in range(50)])
            async with asyncio.timeout(DEADLINE):
                received = [await anext(subscription) for _ in range(50)]

        assert [event.data["n"] for event in received] == list(range(50))
        assert [event.version for event in received] == list(range(50))


async def _batch_ids(client: Client, namespace: str, positions: list[int]) -> list[str | None]:
    """The ``Nats-Batch-Id`` each stored message was published with (None: sent alone)."""
    stream = f"{namespace.upper()}_EVENTS"
    stored = [await client.jetstream().get_msg(stream, position) for position in positions]
    return [(message.headers or {}).get("Nats-Batch-Id") for message in stored]


class TestWithoutGroupCommit:
    """For a server with the default disk sync: every append leaves at once, on its own."""

    async def test_concurrent_appends_leave_alone_and_a_multi_event_one_stays_atomic(
        self, nats_server: NatsServer, client: Client, micro_namespace: str
    ) -> None:
        appends = {f"s{n}": [new_event(n=n, k=k) for k in range(1 + n % 3)] for n in range(12)}
        async with JetStreamEventStore(
            url=nats_server.url, namespace=micro_namespace, group_commit=False
        ) as store:
            results = await asyncio.gather(
                *(store.append(stream, events, NO_STREAM) for stream, events in appends.items())
            )
            for (stream, events), result in zip(appends.items(), results, strict=True):
                stored = await store.read(stream)
                assert [event.id for event in stored] == [event.id for event in events]
                assert result.position == stored[-1].position
                batches = await _batch_ids(client, micro_namespace, [e.position for e in stored])
                if len(events) == 1:
                    assert batches == [None]  # not grouped with any other append
                else:
                    assert len(set(batches)) == 1  # its own events, one atomic batch
                    assert batches[0] is not None

    @pytest.mark.parametrize(
        ("setting", "with_url", "grouping"),
        [("auto", True, False), ("auto", False, True), ("on", True, True), ("off", False, False)],
    )
    def test_the_setting_chooses_grouping(
        self, nats_server: NatsServer, setting: str, with_url: bool, grouping: bool
    ) -> None:
        settings = Settings(
            nats_url=nats_server.url if with_url else None,
            event_store_group_commit=setting,  # type: ignore[arg-type]
        )
        # Without a URL the store shares a service's connection (micro's embedded server).
        shared = None if with_url else Client()
        store = open_event_store(settings, shared)
        assert isinstance(store, JetStreamEventStore)
        assert store._group_commit is grouping


class TestGroupCommit:
    """Appends that queue up while one is out at the server leave together, atomically."""

    async def test_appends_queued_behind_one_leave_as_one_batch_each_at_its_own_position(
        self, store: JetStreamEventStore, client: Client, micro_namespace: str
    ) -> None:
        appends = {f"s{n}": [new_event(n=n, k=k) for k in range(1 + n % 3)] for n in range(20)}

        results = await asyncio.gather(
            *(store.append(stream, events, NO_STREAM) for stream, events in appends.items())
        )

        for (stream, events), result in zip(appends.items(), results, strict=True):
            stored = await store.read(stream)
            assert [event.id for event in stored] == [event.id for event in events]
            assert (result.version, result.position) == (len(events) - 1, stored[-1].position)
            assert [event.id for event in result.events] == [event.id for event in events]
            assert [event.position for event in result.events] == [e.position for e in stored]
        # the first append found the line free and left alone; the other 19 waited for it
        first, *queued = [result.position for result in results]
        assert await _batch_ids(client, micro_namespace, [first]) == [None]
        batches = await _batch_ids(client, micro_namespace, queued)
        assert len(set(batches)) == 1
        assert batches[0] is not None
        assert await store.last_position() == sum(len(events) for events in appends.values())

    async def test_a_conflict_in_a_batch_fails_only_its_own_append(
        self,
        lossy_store: JetStreamEventStore,
        lossy: _AckLosingClient,
        client: Client,
        nats_server: NatsServer,
        micro_namespace: str,
    ) -> None:
        await lossy_store.append("contended", [new_event()], NO_STREAM)
        async with JetStreamEventStore(url=nats_server.url, namespace=micro_namespace) as other:
            await other.append("contended", [new_event()], expected_version=0)
        # this store still believes "contended" is at version 0, so its append is sent
        innocent = {f"s{n}": [new_event(n=n)] for n in range(10)}

        outcomes = await asyncio.gather(
            lossy_store.append("lead", [new_event()], NO_STREAM),
            lossy_store.append("contended", [new_event()], expected_version=0),
            *(lossy_store.append(s, events, NO_STREAM) for s, events in innocent.items()),
            return_exceptions=True,
        )

        assert isinstance(outcomes[1], ConcurrencyError)
        assert outcomes[1].actual == 1
        for (stream, events), outcome in zip(innocent.items(), outcomes[2:], strict=True):
            assert not isinstance(outcome, BaseException), outcome
            assert [event.id for event in await lossy_store.read(stream)] == [events[0].id]
        assert await lossy_store.stream_version("contended") == 1
        # one batch of the eleven was committed and refused, storing nothing; each innocent
        # append was then stored alone
        assert lossy.commits == 1
        positions = [outcome.position for outcome in outcomes[2:]]  # type: ignore[union-attr]
        assert await _batch_ids(client, micro_namespace, positions) == [None] * 10

    async def test_a_batch_holds_at_most_the_server_limit_of_messages(
        self, store: JetStreamEventStore, client: Client, micro_namespace: str
    ) -> None:
        sizes = {"lead": 1, "big": 600, "bigger": 600, "small": 1}

        # New streams need no look-up of their head, so nothing reorders the appends before
        # they queue: "lead" leaves alone and the other three queue behind it in this order.
        results = await asyncio.gather(
            *(
                store.append(s, [new_event(n=n) for n in range(size)], NO_STREAM)
                for s, size in sizes.items()
            )
        )

        big, bigger, small = results[1:]
        assert [result.version + 1 for result in results] == list(sizes.values())
        [first] = set(await _batch_ids(client, micro_namespace, [big.position - 599, big.position]))
        second = await _batch_ids(client, micro_namespace, [bigger.position, small.position])
        # 600 + 600 is over 1000: the second big append waited for the next batch
        assert first is not None
        assert second[0] == second[1] != first
        assert small.position == bigger.position + 1

    async def test_appends_whose_batch_ack_was_lost_retry_into_their_original_results(
        self, lossy_store: JetStreamEventStore, lossy: _AckLosingClient
    ) -> None:
        appends = {f"s{n}": [new_event(n=n, k=k) for k in range(1 + n % 2)] for n in range(6)}
        lossy.lose_next_commit = True

        first = await asyncio.gather(
            lossy_store.append("lead", [new_event()], NO_STREAM),
            *(lossy_store.append(s, events, NO_STREAM) for s, events in appends.items()),
            return_exceptions=True,
        )

        assert not isinstance(first[0], BaseException), first[0]
        assert all(isinstance(outcome, EventStoreUnavailableError) for outcome in first[1:])
        retried = await asyncio.gather(
            *(lossy_store.append(s, events, NO_STREAM) for s, events in appends.items())
        )
        for (stream, events), result in zip(appends.items(), retried, strict=True):
            stored = await lossy_store.read(stream)
            assert [event.id for event in stored] == [event.id for event in events]
            assert (result.version, result.position) == (len(events) - 1, stored[-1].position)

    async def test_an_append_whose_caller_gave_up_before_it_left_is_not_sent(
        self, lossy_store: JetStreamEventStore, lossy: _AckLosingClient
    ) -> None:
        commits = lossy_store._commits
        assert commits is not None
        lossy.hold_next = True  # the lead's ack waits for the test: the others stay queued
        lead = asyncio.create_task(lossy_store.append("lead", [new_event()], NO_STREAM))
        abandoned = asyncio.create_task(lossy_store.append("abandoned", [new_event()], NO_STREAM))
        kept = asyncio.create_task(lossy_store.append("kept", [new_event()], NO_STREAM))
        await wait_until(lambda: commits.queued == 2, what="two appends queued")

        abandoned.cancel()
        await lossy.release()

        assert (await lead).version == 0
        assert (await kept).version == 0
        with pytest.raises(asyncio.CancelledError):
            await abandoned
        assert await lossy_store.stream_version("abandoned") is None

    async def test_an_append_queued_longer_than_the_timeout_fails_without_leaving(
        self, lossy_store: JetStreamEventStore, lossy: _AckLosingClient
    ) -> None:
        lossy.lose_next = True  # the lead waits out its timeout, and so do those behind it
        # NO_STREAM needs no head look-up, so the two behind queue at once: queued a look-up
        # later, they would still have time left when the lead gives up, and be sent.
        outcomes = await asyncio.gather(
            lossy_store.append("lead", [new_event()], NO_STREAM),
            lossy_store.append("late-1", [new_event()], NO_STREAM),
            lossy_store.append("late-2", [new_event()], NO_STREAM),
            return_exceptions=True,
        )

        assert all(isinstance(outcome, EventStoreUnavailableError) for outcome in outcomes), (
            outcomes
        )
        assert "no turn to publish in time" in str(outcomes[1])
        assert await lossy_store.stream_version("late-1") is None
        assert await lossy_store.stream_version("late-2") is None
        assert await lossy_store.stream_version("lead") == 0  # stored, its ack lost

    async def test_closing_fails_queued_appends_at_once_and_sends_none_of_them(
        self, client: Client, micro_namespace: str
    ) -> None:
        lossy = _AckLosingClient(client, micro_namespace)
        store = JetStreamEventStore(lossy, namespace=micro_namespace, timeout=60)  # type: ignore[arg-type]
        await store.start()
        commits = store._commits
        assert commits is not None
        lossy.hold_next = True
        # NO_STREAM needs no look-up first, so the appends reach the line in this order
        appends = [
            asyncio.create_task(store.append(stream, [new_event()], NO_STREAM))
            for stream in ("lead", "queued-1", "queued-2")
        ]
        await wait_until(lambda: commits.queued == 2, what="two appends queued")

        async with asyncio.timeout(DEADLINE):  # far below the 60 s acknowledgement timeout
            await store.close()
            outcomes = await asyncio.gather(*appends, return_exceptions=True)

        assert all(isinstance(outcome, EventStoreUnavailableError) for outcome in outcomes), (
            outcomes
        )
        assert all("closed" in str(outcome) for outcome in outcomes)
        async with JetStreamEventStore(client, namespace=micro_namespace) as reader:
            assert await reader.stream_version("queued-1") is None
            assert await reader.stream_version("queued-2") is None

    async def test_a_batch_whose_sender_is_cancelled_fails_its_appends_and_frees_streams(
        self, lossy_store: JetStreamEventStore, lossy: _AckLosingClient
    ) -> None:
        commits = lossy_store._commits
        assert commits is not None
        lossy.hold_next = True
        lead = asyncio.create_task(lossy_store.append("lead", [new_event()], NO_STREAM))
        batched = [
            asyncio.create_task(lossy_store.append(stream, [new_event()], NO_STREAM))
            for stream in ("b-1", "b-2")
        ]
        await wait_until(lambda: commits.queued == 2, what="two appends queued")
        lossy.lose_next_commit = True  # the batch's commit stays unanswered
        await lossy.release()
        await lead
        await wait_until(lambda: lossy.commits == 1, what="the batch committed")

        for sender in list(commits._senders):
            sender.cancel()

        async with asyncio.timeout(DEADLINE):
            outcomes = await asyncio.gather(*batched, return_exceptions=True)
        assert all(isinstance(outcome, EventStoreUnavailableError) for outcome in outcomes), (
            outcomes
        )
        # their streams are not left locked: the next appends go through
        assert (await lossy_store.append("b-1", [new_event()])).version == 1
        assert (await lossy_store.append("b-2", [new_event()])).version == 1


class TestStreamConfiguration:
    async def test_the_store_creates_one_file_stream_for_the_namespace(
        self, store: JetStreamEventStore, client: Client, micro_namespace: str
    ) -> None:
        await store.append("account-1", [new_event()])

        info = await client.jetstream().stream_info(f"{micro_namespace.upper()}_EVENTS")
        message = await client.jetstream().get_msg(info.config.name or "", seq=1)

        assert info.config.subjects == [f"{micro_namespace}.ev.>"]
        assert info.config.storage == StorageType.FILE
        assert info.config.allow_atomic
        assert info.config.deny_delete
        assert info.config.duplicate_window == 120
        assert message.subject == f"{micro_namespace}.ev.account-1"

    async def test_a_second_store_accepts_the_stream_the_first_created(
        self, store: JetStreamEventStore, nats_server: NatsServer, micro_namespace: str
    ) -> None:
        await store.append("s", [new_event()])
        async with JetStreamEventStore(url=nats_server.url, namespace=micro_namespace) as other:
            assert await other.stream_version("s") == 0

    @pytest.mark.parametrize(
        ("change", "named"),
        [
            ({"storage": StorageType.MEMORY}, "storage"),
            ({"subjects": ["elsewhere.>"]}, "subjects"),
            ({"max_age": 3600.0}, "max_age"),
            ({"duplicate_window": 5.0}, "duplicate_window"),
            ({"allow_atomic": False}, "allow_atomic"),
        ],
        ids=["memory-storage", "other-subjects", "max-age", "duplicate-window", "no-atomic"],
    )
    async def test_an_incompatible_existing_stream_is_a_config_error(
        self,
        nats_server: NatsServer,
        client: Client,
        micro_namespace: str,
        change: dict[str, Any],
        named: str,
    ) -> None:
        config: dict[str, Any] = {
            "name": f"{micro_namespace.upper()}_EVENTS",
            "subjects": [f"{micro_namespace}.ev.>"],
            "storage": StorageType.FILE,
            "allow_atomic": True,
            "allow_direct": True,
            "duplicate_window": 120.0,
            **change,
        }
        await client.jetstream().add_stream(StreamConfig(**config))

        store = JetStreamEventStore(url=nats_server.url, namespace=micro_namespace)
        with pytest.raises(ConfigError) as raised:
            await store.start()

        assert named in str(raised.value)
        info = await client.jetstream().stream_info(config["name"])
        assert info.config.storage == config["storage"]  # left as it was


class TestConnection:
    async def test_an_unreachable_server_is_a_retryable_unavailable_error(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        store = JetStreamEventStore(url=f"nats://127.0.0.1:{port}")

        with pytest.raises(EventStoreUnavailableError) as raised:
            await store.start()

        assert raised.value.retryable
        assert isinstance(raised.value.__cause__, Exception)

    async def test_operations_on_a_stopped_server_raise_unavailable(self, tmp_path: Path) -> None:
        server = NatsServer(store_dir=tmp_path / "nats").start()
        try:
            store = JetStreamEventStore(url=server.url, namespace="gone")
            async with store:
                await store.append("s", [new_event()])
                server.stop()
                store._timeout = 0.3  # short only for the operations meant to fail

                for operation in (
                    store.append("s", [new_event()]),
                    store.read("s"),
                    store.stream_version("s"),
                    store.last_position(),
                    _take(store.read_all(), 1),
                ):
                    with pytest.raises(EventStoreUnavailableError) as raised:
                        await operation
                    assert raised.value.retryable
        finally:
            server.stop()

    async def test_closing_the_store_ends_its_subscriptions_with_an_error(
        self, nats_server: NatsServer, micro_namespace: str
    ) -> None:
        store = JetStreamEventStore(url=nats_server.url, namespace=micro_namespace)
        await store.start()
        await store.append("s", [new_event()])
        subscription = store.subscribe()
        await _take(subscription, 1)

        waiting = asyncio.ensure_future(_take(subscription, 1))
        await store.close()

        with pytest.raises(EventStoreUnavailableError):
            async with asyncio.timeout(DEADLINE):
                await waiting

    async def test_a_given_client_is_used_and_left_open(
        self, client: Client, micro_namespace: str
    ) -> None:
        async with JetStreamEventStore(client, namespace=micro_namespace) as store:
            await store.append("s", [new_event()])
        assert client.is_connected

    async def test_an_own_connection_is_closed_on_close(
        self, nats_server: NatsServer, micro_namespace: str
    ) -> None:
        store = JetStreamEventStore(url=nats_server.url, namespace=micro_namespace)
        await store.start()
        own = store.client
        await store.close()
        await store.close()  # idempotent
        assert own.is_closed

    def test_neither_client_nor_url_is_a_config_error(self) -> None:
        with pytest.raises(ConfigError):
            JetStreamEventStore()

    async def test_open_event_store_builds_the_configured_backend(
        self, client: Client, micro_settings: Settings
    ) -> None:
        async with open_event_store(micro_settings, client) as store:
            assert isinstance(store, JetStreamEventStore)
            assert store.stream_name == f"{micro_settings.namespace.upper()}_EVENTS"
            await store.append("s", [new_event()])
        memory = open_event_store(micro_settings.model_copy(update={"event_store": "memory"}))
        assert type(memory).__name__ == "MemoryEventStore"
        with pytest.raises(ConfigError):
            open_event_store(micro_settings.model_copy(update={"event_store": "esdb"}))


class TestCrash:
    @pytest.mark.slow
    async def test_every_acknowledged_event_survives_kill_9(self, tmp_path: Path) -> None:
        server = NatsServer(store_dir=tmp_path / "nats").start()
        try:
            acknowledged: dict[uuid.UUID, int] = {}
            async with (
                JetStreamEventStore(url=server.url, namespace="crash") as store,
                aclosing(store.subscribe()) as subscription,
            ):
                for n in range(150):
                    events = [new_event(n=n)] if n % 5 else [new_event(n=n), new_event(n=n)]
                    result = await store.append(f"s-{n % 7}", events)
                    acknowledged[events[-1].id] = result.position
                received = await _take(subscription, len(acknowledged) + 30)

                server.kill()
                server.restart()

                # The same store, over its reconnected client, goes on appending and its
                # subscription resumes right after the last event it delivered.
                # nats-py offers no reconnect event on a client it did not create.
                client = store.client
                await wait_until(
                    lambda: bool(client.stats["reconnects"] and client.is_connected),
                    DEADLINE,
                    "the store's client reconnected",
                )
                after = new_event("AfterRestart")
                await store.append("s-after", [after])
                [next_event] = await _take(subscription, 1)

            async with JetStreamEventStore(url=server.url, namespace="crash") as reopened:
                stored = {event.id: event.position async for event in reopened.read_all()}
        finally:
            server.stop()

        assert {event_id: stored.get(event_id) for event_id in acknowledged} == acknowledged
        assert len(stored) == 181
        assert [event.position for event in received] == list(range(1, 181))
        assert next_event.id == after.id


async def _take(subscription: AsyncIterator[RecordedEvent], count: int) -> list[RecordedEvent]:
    async with asyncio.timeout(DEADLINE):
        return [await anext(subscription) for _ in range(count)]


class TestReadPaths:
    async def test_read_of_a_long_stream_pages_through_it(self, store: JetStreamEventStore) -> None:
        for start in range(0, 2500, 500):
            await store.append("long", [new_event(n=n) for n in range(start, start + 500)])

        events = await store.read("long")

        assert [event.data["n"] for event in events] == list(range(2500))
        assert [e.version for e in await store.read("long", from_version=2498)] == [2498, 2499]
        assert (await store.read("long", backwards=True, limit=1))[0].version == 2499

    async def test_read_all_stops_at_the_end_it_saw_when_it_started(
        self, store: JetStreamEventStore
    ) -> None:
        await store.append("s", [new_event(n=n) for n in range(10)])
        seen = []
        async for event in store.read_all():
            seen.append(event)
            if len(seen) == 1:
                await store.append("s", [new_event(n=99)])

        assert len(seen) == 10


class TestReplayFastPaths:
    def test_the_fast_uuid_parser_agrees_with_uuid(self) -> None:
        from micro.eventstore.jetstream._codec import parse_uuid as _parse_uuid

        for _ in range(100):
            value = uuid.uuid4()
            parsed = _parse_uuid(str(value))
            assert parsed == value
            assert hash(parsed) == hash(value)
            assert str(parsed) == str(value)
        assert _parse_uuid(value.hex) == value  # other spellings go to uuid.UUID
        with pytest.raises(ValueError):
            _parse_uuid("not-a-uuid")

    def test_the_fast_event_builder_agrees_with_the_constructor(self) -> None:
        from micro.eventstore.jetstream._codec import build_event as _build_event

        fields = (uuid.uuid4(), "Happened", "s", 3, 7, {"a": 1}, {"recorded_at": "now"})
        built = _build_event(*fields)
        assert built == RecordedEvent(*fields)
        assert repr(built) == repr(RecordedEvent(*fields))
        with pytest.raises(AttributeError):
            built.version = 4  # type: ignore[misc]
