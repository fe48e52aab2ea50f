"""EsdbEventStore: the contract suite on the gRPC fake of EventStoreDB (and on a real server
when ``MICRO_TEST_ESDB_URL`` is set), then what only this backend does, then the fake itself."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from micro.context import Context, current_context
from micro.errors import (
    ConcurrencyError,
    ConfigError,
    EventStoreUnavailableError,
    PayloadTooLargeError,
    ValidationError,
)
from micro.eventstore._esdb_clients import installed, library
from micro.eventstore.base import (
    ANY,
    NO_STREAM,
    AppendResult,
    EventStore,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
)
from micro.eventstore.esdb import EsdbEventStore
from micro.testing.esdb_fake import FakeEventStoreDB, free_port
from micro.testing.eventstore_contract import EventStoreContract, new_event

REAL_SERVER_URL = os.environ.get("MICRO_TEST_ESDB_URL")
DEADLINE = 10.0

# The Python client of this process (the other one runs in a process of its own, below).
LIB = library()
AsyncClient = LIB.client
SyncClient = LIB.sync_client
StreamState = LIB.stream_state
EsdbNewEvent = LIB.new_event
GrpcError = LIB.grpc_error
WrongCurrentVersion = LIB.wrong_current_version


def _namespace() -> str:
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def fake() -> Iterator[FakeEventStoreDB]:
    with FakeEventStoreDB() as server:
        yield server


@pytest.fixture(scope="module")
def shared_fake() -> Iterator[FakeEventStoreDB]:
    """One fake for many tests, holding the kind of events a fresh server writes itself."""
    with FakeEventStoreDB() as server:
        server.write_system_events()
        yield server


@pytest.fixture
async def store(fake: FakeEventStoreDB) -> AsyncIterator[EsdbEventStore]:
    async with EsdbEventStore(fake.url) as store:
        yield store


async def _all(store: EventStore, from_position: int = 0) -> list[RecordedEvent]:
    return [event async for event in store.read_all(from_position)]


async def _take(iterator: AsyncIterator[RecordedEvent], count: int) -> list[RecordedEvent]:
    async with asyncio.timeout(DEADLINE):
        return [await anext(iterator) for _ in range(count)]


async def _write_directly(fake: FakeEventStoreDB, stream: str, *events: object) -> None:
    """Append as another client of the server would, bypassing the store."""
    client = AsyncClient(fake.url)
    await client.connect()
    try:
        await client.append_to_stream(stream, current_version=StreamState.ANY, events=events)
    finally:
        await client.close()


# -- the contract ------------------------------------------------------------------------------


class TestEsdbEventStoreOnTheFake(EventStoreContract):
    """A fresh fake server per test: every store starts on an empty log."""

    reports_appended_events = False  # an ESDB append answers with positions only

    @pytest.fixture(autouse=True)
    def _server(self, fake: FakeEventStoreDB) -> None:
        self.url = fake.url

    async def make_store(self) -> EventStore:
        store = EsdbEventStore(self.url)
        await store.start()
        return store


class TestEsdbEventStoreInANamespaceOfASharedServer(EventStoreContract):
    """How tests share a real server: one log with the server's own events, a namespace each."""

    reports_appended_events = False  # an ESDB append answers with positions only

    @pytest.fixture(autouse=True)
    def _server(self, shared_fake: FakeEventStoreDB) -> None:
        self.url = shared_fake.url

    async def make_store(self) -> EventStore:
        store = EsdbEventStore(self.url, namespace=_namespace())
        await store.start()
        return store


if REAL_SERVER_URL is not None:

    class TestEsdbEventStoreOnARealServer(EventStoreContract):
        """The contract on a real EventStoreDB / KurrentDB server, a namespace per test."""

        reports_appended_events = False  # an ESDB append answers with positions only

        async def make_store(self) -> EventStore:
            assert REAL_SERVER_URL is not None
            store = EsdbEventStore(REAL_SERVER_URL, namespace=_namespace())
            await store.start()
            return store

else:

    def test_the_contract_on_a_real_server_needs_micro_test_esdb_url() -> None:
        pytest.skip(
            "MICRO_TEST_ESDB_URL is not set: the contract suite did not run on a real "
            "EventStoreDB server (e.g. MICRO_TEST_ESDB_URL='esdb://localhost:2113?Tls=false')"
        )


OTHER_CLIENTS = [name for name in installed() if name != LIB.name]


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "client",
    OTHER_CLIENTS
    or [
        pytest.param(
            "",
            marks=pytest.mark.skip(
                reason=f"only {LIB.name} is installed: the suite ran on it alone (install both: "
                "pip install -e '.[dev]')"
            ),
        )
    ],
)
def test_this_module_passes_on_the_other_installed_client(client: str) -> None:
    """The two clients cannot share a process (their protobuf modules clash): the other one
    runs this whole module, the contract suite with it, in a process of its own."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__]
        + ["-k", "not test_this_module_passes_on_the_other_installed_client"],
        env={**os.environ, "MICRO_ESDB_CLIENT": client},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, f"on {client}:\n{result.stdout[-4000:]}{result.stderr[-2000:]}"
    assert " passed" in result.stdout.splitlines()[-1]


# -- what only this backend does ---------------------------------------------------------------


class TestUnavailableServer:
    async def test_start_raises_event_store_unavailable_quickly_when_nothing_listens(
        self,
    ) -> None:
        store = EsdbEventStore(f"esdb://127.0.0.1:{free_port()}?Tls=false", timeout=5)
        began = time.monotonic()

        with pytest.raises(EventStoreUnavailableError) as raised:
            await store.start()

        assert time.monotonic() - began < 3
        assert raised.value.retryable
        assert raised.value.__cause__ is not None
        await store.close()

    async def test_operations_raise_event_store_unavailable_once_the_server_is_gone(
        self, fake: FakeEventStoreDB, store: EsdbEventStore
    ) -> None:
        await store.append("s", [new_event()])
        fake.stop()

        with pytest.raises(EventStoreUnavailableError):
            await store.append("s", [new_event()])
        with pytest.raises(EventStoreUnavailableError):
            await store.read("s")
        with pytest.raises(EventStoreUnavailableError):
            await _all(store)

    async def test_a_subscription_ends_with_event_store_unavailable_when_the_store_closes(
        self, fake: FakeEventStoreDB
    ) -> None:
        store = EsdbEventStore(fake.url)
        await store.start()
        await store.append("s", [new_event()])
        subscription = store.subscribe()
        try:
            await _take(subscription, 1)
            waiting = asyncio.ensure_future(_take(subscription, 1))
            await asyncio.sleep(0)
            await store.close()
            with pytest.raises(EventStoreUnavailableError, match="closed"):
                await waiting
        finally:
            waiting.cancel()
            await subscription.aclose()

    def test_a_url_that_is_not_esdb_raises_config_error(self) -> None:
        with pytest.raises(ConfigError):
            EsdbEventStore("http://localhost:2113")

    def test_an_unknown_client_raises_config_error(self) -> None:
        with pytest.raises(ConfigError, match="unknown EventStoreDB client"):
            EsdbEventStore("esdb://localhost:2113?Tls=false", client="pyeventstore")  # type: ignore[arg-type]

    def test_the_other_client_in_this_process_raises_config_error(self) -> None:
        # Loading it would fail deep in protobuf: the two clients' stubs clash.
        other = "esdbclient" if LIB.name == "kurrentdbclient" else "kurrentdbclient"
        with pytest.raises(ConfigError, match="protobuf"):
            EsdbEventStore("esdb://localhost:2113?Tls=false", client=other)  # type: ignore[arg-type]

    @pytest.mark.parametrize("scheme", ["esdb", "kurrentdb"])
    async def test_esdb_and_kurrentdb_urls_reach_the_same_server(
        self, fake: FakeEventStoreDB, scheme: str
    ) -> None:
        async with EsdbEventStore(f"{scheme}://127.0.0.1:{fake.port}?tls=false") as store:
            await store.append("s", [new_event()])
        assert fake.event_count == 1


# -- the known gaps, closed ----------------------------------------------------------------------


async def _until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait for ``check`` to hold, failing after ``DEADLINE`` seconds."""
    async with asyncio.timeout(DEADLINE):
        while not await check():  # noqa: ASYNC110 - a condition of another process, polled
            await asyncio.sleep(0.02)


class TestASubscriptionResumesAfterADroppedConnection:
    async def test_it_delivers_what_came_during_and_after_the_outage_once_each(
        self, fake: FakeEventStoreDB, store: EsdbEventStore
    ) -> None:
        before = [new_event(n=n) for n in range(3)]
        await store.append("s", before)
        subscription = store.subscribe()
        try:
            assert [e.id for e in await _take(subscription, 3)] == [e.id for e in before]
            fake.drop_connections()
            # Another writer, on a connection of its own, while the subscriber is away.
            during = new_event(n=3)
            async with EsdbEventStore(fake.url) as other:
                await other.append("s", [during], expected_version=2)
            after = new_event(n=4)

            async def appended() -> bool:
                try:
                    await store.append("s", [after], expected_version=3)
                except EventStoreUnavailableError:
                    return False  # the store's own connection still reconnecting
                return True

            await _until(appended, "the store to append again")

            resumed = await _take(subscription, 2)
        finally:
            await subscription.aclose()

        assert [e.id for e in resumed] == [during.id, after.id]
        assert [e.version for e in resumed] == [3, 4]

    async def test_closing_the_store_while_it_waits_for_the_server_ends_it(
        self, fake: FakeEventStoreDB
    ) -> None:
        store = EsdbEventStore(fake.url)
        await store.start()
        await store.append("s", [new_event()])
        subscription = store.subscribe()
        try:
            await _take(subscription, 1)
            fake.stop_listening()
            waiting = asyncio.ensure_future(_take(subscription, 1))
            try:
                await asyncio.sleep(0.3)  # let it try to subscribe again, and wait between tries
                await store.close()
                with pytest.raises(EventStoreUnavailableError, match="closed"):
                    await waiting
            finally:
                waiting.cancel()
        finally:
            await subscription.aclose()
        assert store._client is None  # the subscription did not open it again

    async def test_it_waits_out_a_server_that_is_down_then_resumes(
        self, fake: FakeEventStoreDB, store: EsdbEventStore
    ) -> None:
        await store.append("s", [new_event(n=0)])
        subscription = store.subscribe()
        try:
            await _take(subscription, 1)
            fake.stop_listening()  # down, not restarted: resubscribing fails for a while
            waiting = asyncio.ensure_future(_take(subscription, 1))
            try:
                for _ in range(20):
                    await asyncio.sleep(0.01)  # let it try, and fail, to subscribe again
                assert not waiting.done()  # neither an error nor an event while it is down
                fake.start()
                later = new_event(n=1)

                async def appended() -> bool:
                    try:
                        await store.append("s", [later], expected_version=0)
                    except EventStoreUnavailableError:
                        return False  # gRPC waits out its reconnection backoff
                    return True

                await _until(appended, "the store to append again")
                [event] = await waiting
            finally:
                waiting.cancel()
        finally:
            await subscription.aclose()
        assert event.id == later.id


class TestTheServersLimitOfOpenBatches:
    async def test_one_batch_over_the_limit_is_a_retryable_unavailable_error(self) -> None:
        with FakeEventStoreDB(max_open_batches=3) as server:
            async with EsdbEventStore(server.url) as store:
                with server.hold_appends():
                    held = [
                        asyncio.ensure_future(store.append(f"s{n}", [new_event(n=n)]))
                        for n in range(3)
                    ]

                    async def all_open() -> bool:
                        return server.open_batches == 3

                    await _until(all_open, "three batches to be open")
                    with pytest.raises(EventStoreUnavailableError) as raised:
                        await store.append("over", [new_event()])
                results = await asyncio.gather(*held)

                assert raised.value.retryable
                assert "did not take the write now" in str(raised.value)
                assert raised.value.__cause__ is not None
                assert [result.version for result in results] == [0, 0, 0]
                assert await store.read("over") == []
                # Asked again once the server has room, the same append is stored.
                await store.append("over", [new_event()])
                assert len(await store.read("over")) == 1

    async def test_the_default_limit_is_fifty_open_batches(self) -> None:
        with FakeEventStoreDB() as server:
            async with EsdbEventStore(server.url) as store:
                with server.hold_appends():
                    held = [
                        asyncio.ensure_future(store.append(f"s{n}", [new_event(n=n)]))
                        for n in range(50)
                    ]

                    async def all_open() -> bool:
                        return server.open_batches == 50

                    await _until(all_open, "fifty batches to be open")
                    with pytest.raises(EventStoreUnavailableError):
                        await store.append("over", [new_event()])
                await asyncio.gather(*held)
                assert server.event_count == 50


class TestABatchAppendCarriesTheCallersDeadline:
    async def test_without_a_request_it_carries_the_stores_timeout(self) -> None:
        with FakeEventStoreDB() as server:
            async with EsdbEventStore(server.url, timeout=7) as store:
                await store.append("s", [new_event(), new_event()])
            assert server.append_deadlines == [pytest.approx(7, abs=0.01)]

    async def test_inside_a_request_it_carries_what_the_request_has_left(
        self, fake: FakeEventStoreDB, store: EsdbEventStore
    ) -> None:
        token = current_context.set(
            Context(service="t", command="c", trace_id="t", span_id="s", deadline=time.time() + 2)
        )
        try:
            await store.append("s", [new_event(), new_event()])
        finally:
            current_context.reset(token)

        [deadline] = fake.append_deadlines
        assert deadline is not None
        assert 1 < deadline <= 2

    async def test_an_append_held_past_the_deadline_is_unavailable_and_stores_nothing(
        self, fake: FakeEventStoreDB, store: EsdbEventStore
    ) -> None:
        token = current_context.set(
            Context(service="t", command="c", trace_id="t", span_id="s", deadline=time.time() + 0.3)
        )
        try:
            with fake.hold_appends(), pytest.raises(EventStoreUnavailableError) as raised:
                await store.append("s", [new_event(), new_event()])
        finally:
            current_context.reset(token)

        assert raised.value.retryable
        assert await store.read("s") == []


class TestAppend:
    async def test_an_append_over_the_servers_limit_raises_payload_too_large(self) -> None:
        with FakeEventStoreDB(max_append_size=1000) as server:
            async with EsdbEventStore(server.url) as store:
                with pytest.raises(PayloadTooLargeError):
                    await store.append("s", [new_event(blob="x" * 2000)])
                assert await store.read("s") == []

    async def test_a_concurrency_error_carries_the_servers_refusal_as_its_cause(
        self, store: EsdbEventStore
    ) -> None:
        await store.append("s", [new_event()])
        with pytest.raises(ConcurrencyError) as raised:
            await store.append("s", [new_event()], expected_version=NO_STREAM)
        assert isinstance(raised.value.__cause__, WrongCurrentVersion)

    async def test_an_event_type_starting_with_dollar_raises_validation_error(
        self, store: EsdbEventStore
    ) -> None:
        with pytest.raises(ValidationError):
            await store.append("s", [new_event("$Reserved")])
        assert await store.last_position() == 0

    async def test_metadata_keeps_its_own_recorded_at(self, store: EsdbEventStore) -> None:
        await store.append("s", [NewEvent("Imported", {}, {"recorded_at": "2001-02-03T04:05:06Z"})])
        [event] = await store.read("s")
        assert event.metadata["recorded_at"] == "2001-02-03T04:05:06Z"


class TestPositions:
    @pytest.mark.parametrize("expected", [NO_STREAM, ANY], ids=["no-stream", "any"])
    async def test_an_append_names_its_last_events_position_whichever_the_server_answers(
        self, expected: ExpectedVersion
    ) -> None:
        # Which event of several a server's answer names is not verified without a server.
        with FakeEventStoreDB(answer_first_position=True) as server:
            async with EsdbEventStore(server.url) as store:
                await store.append("other", [new_event()])
                events = [new_event(n=n) for n in range(3)]
                result = await store.append("s", events, expected_version=expected)
                again = await store.append("s", events, expected_version=expected)

                stored = await store.read("s")
                assert result == again == AppendResult(version=2, position=stored[-1].position)

    async def test_the_position_is_the_commit_position_plus_one(
        self, fake: FakeEventStoreDB, store: EsdbEventStore
    ) -> None:
        for n in range(3):
            await store.append("s", [new_event(n=n), new_event(n=n)])
        client = AsyncClient(fake.url)
        await client.connect()
        try:
            commits = [event.commit_position async for event in await client.read_all()]
        finally:
            await client.close()

        positions = [event.position for event in await _all(store)]
        assert commits[0] == 0  # the first event of a log: its position must still be above 0
        assert positions == [commit + 1 for commit in commits if commit is not None]

    async def test_read_all_from_a_position_inside_an_event_starts_at_the_next_one(
        self, store: EsdbEventStore
    ) -> None:
        for n in range(4):
            await store.append("s", [new_event(n=n)])
        everything = await _all(store)
        inside = everything[1].position + 3  # no event starts there: a scan finds the next one

        assert await _all(store, inside) == everything[2:]

    async def test_subscribe_from_an_event_position_starts_with_that_event(
        self, store: EsdbEventStore
    ) -> None:
        for n in range(4):
            await store.append("s", [new_event(n=n)])
        everything = await _all(store)

        subscription = store.subscribe(everything[2].position)
        try:
            assert await _take(subscription, 2) == everything[2:]
        finally:
            await subscription.aclose()

    async def test_subscribe_from_a_position_inside_an_event_starts_at_the_next_one(
        self, store: EsdbEventStore
    ) -> None:
        for n in range(4):
            await store.append("s", [new_event(n=n)])
        everything = await _all(store)

        subscription = store.subscribe(everything[0].position + 3)
        try:
            assert await _take(subscription, 3) == everything[1:]
        finally:
            await subscription.aclose()

    @pytest.mark.skipif(
        LIB.name == "kurrentdbclient",
        reason="kurrentdbclient supports no server before 22.10 (it asserts a position)",
    )
    async def test_stream_reads_get_positions_from_servers_that_do_not_send_them(self) -> None:
        # Servers before 22.10 answered stream reads without commit positions.
        with FakeEventStoreDB(positions_in_stream_reads=False) as server:
            async with EsdbEventStore(server.url) as store:
                await store.append("other", [new_event()])
                result = await store.append("s", [new_event(), new_event()])
                await store.append("s", [new_event()], expected_version=ANY)

                events = await store.read("s")

                assert events[1].position == result.position
                assert events == [e for e in await _all(store) if e.stream == "s"]


class TestSystemEventsAndNamespaces:
    async def test_the_servers_own_events_never_appear(self) -> None:
        with FakeEventStoreDB() as server:
            server.write_system_events()
            async with EsdbEventStore(server.url) as store:
                assert await store.last_position() == 0
                assert await _all(store) == []
                sent = new_event()
                await store.append("s", [sent])
                server.write_system_events()

                assert [event.id for event in await _all(store)] == [sent.id]
                subscription = store.subscribe()
                try:
                    [event] = await _take(subscription, 1)
                    later = new_event()
                    server.write_system_events()
                    await store.append("s", [later])
                    [after] = await _take(subscription, 1)
                finally:
                    await subscription.aclose()
                assert (event.id, after.id) == (sent.id, later.id)

    async def test_dollar_typed_events_in_user_streams_are_skipped_everywhere(
        self, fake: FakeEventStoreDB, store: EsdbEventStore
    ) -> None:
        # A user projection may link events into any stream: links are the server's events.
        sent = [new_event(n=1), new_event(n=2)]
        await store.append("s", sent[:1])
        await _write_directly(fake, "s", EsdbNewEvent("$>", b"0@other"))
        result = await store.append("s", sent[1:])
        await _write_directly(fake, "links", EsdbNewEvent("$>", b"0@s"))

        assert [event.id for event in await store.read("s")] == [event.id for event in sent]
        assert [event.id async for event in store.read_all(limit=2)] == [e.id for e in sent]
        assert await store.last_position() == result.position

    async def test_namespaces_on_one_server_never_see_each_other(
        self, fake: FakeEventStoreDB
    ) -> None:
        async with (
            EsdbEventStore(fake.url, namespace="one") as one,
            EsdbEventStore(fake.url, namespace="two") as two,
        ):
            await one.append("s", [new_event(n=1)])
            await two.append("s", [new_event(n=2)])

            assert [event.data["n"] for event in await one.read("s")] == [1]
            assert [event.data["n"] for event in await _all(two)] == [2]
            assert [event.stream for event in await _all(two)] == ["s"]
            assert await one.last_position() < await two.last_position()

    def test_a_namespace_with_a_dot_raises_config_error(self) -> None:
        with pytest.raises(ConfigError):
            EsdbEventStore("esdb://localhost:2113?Tls=false", namespace="a.b")


class TestSubscriptionLifecycle:
    @pytest.mark.parametrize("history", [0, 1], ids=["while-subscribing", "while-live"])
    async def test_cancelling_a_waiting_subscriber_raises_cancelled_error(
        self, store: EsdbEventStore, history: int
    ) -> None:
        # esdbclient turns cancellation into the end of iteration; the store must not.
        for _ in range(history):
            await store.append("s", [new_event()])
        subscription = store.subscribe()
        try:
            await _take(subscription, history)
            waiting = asyncio.ensure_future(anext(subscription))
            for _ in range(5):
                await asyncio.sleep(0)  # let it reach its wait, whichever that is
            waiting.cancel()

            with pytest.raises(asyncio.CancelledError):
                await waiting
        finally:
            await subscription.aclose()

    async def test_events_other_writers_stored_as_non_json_are_wrapped(
        self, fake: FakeEventStoreDB, store: EsdbEventStore
    ) -> None:
        await _write_directly(
            fake,
            "s",
            EsdbNewEvent("Raw", b"\x00\x01", content_type="application/octet-stream"),
            EsdbNewEvent("List", b"[1, 2]", metadata=b"not json"),
        )

        raw, listed = await store.read("s")

        assert raw.data == {"base64": "AAE="}
        assert listed.data == {"value": [1, 2]}
        assert listed.metadata["base64"]


# -- the fake, through esdbclient's own clients --------------------------------------------------


class TestFakeEventStoreDB:
    def test_it_answers_the_single_event_append_rpc(self, fake: FakeEventStoreDB) -> None:
        # The synchronous client sends one event through Streams.Append, not BatchAppend.
        client = SyncClient(fake.url)
        try:
            client.append_to_stream(
                "s", current_version=StreamState.NO_STREAM, events=EsdbNewEvent("A", b"{}")
            )
            with pytest.raises(WrongCurrentVersion, match="last event is 0"):
                client.append_to_stream(
                    "s", current_version=StreamState.NO_STREAM, events=EsdbNewEvent("B", b"{}")
                )
            assert client.get_current_version("s") == 0
        finally:
            client.close()

    def test_a_retried_single_event_append_is_idempotent(self, fake: FakeEventStoreDB) -> None:
        client = SyncClient(fake.url)
        try:
            event = EsdbNewEvent("A", b"{}")
            first = client.append_to_stream(
                "s", current_version=StreamState.NO_STREAM, events=event
            )
            again = client.append_to_stream(
                "s", current_version=StreamState.NO_STREAM, events=event
            )
            assert again == first
            assert len(client.get_stream("s")) == 1
        finally:
            client.close()

    def test_a_partly_stored_append_is_a_wrong_expected_version(
        self, fake: FakeEventStoreDB
    ) -> None:
        client = SyncClient(fake.url)
        try:
            stored = EsdbNewEvent("A", b"{}")
            client.append_to_stream("s", current_version=StreamState.NO_STREAM, events=[stored])
            with pytest.raises(WrongCurrentVersion):
                client.append_to_stream(
                    "s",
                    current_version=StreamState.NO_STREAM,
                    events=[stored, EsdbNewEvent("B", b"{}")],
                )
        finally:
            client.close()

    def test_gossip_names_the_fake_as_the_leader(self, fake: FakeEventStoreDB) -> None:
        # Two targets make the client discover the leader through Gossip.Read.
        client = SyncClient(f"esdb://127.0.0.1:{fake.port},127.0.0.1:{fake.port}?Tls=false")
        try:
            [member] = client.read_gossip()
            assert (member.state, member.port) == ("NODE_STATE_LEADER", fake.port)
            client.append_to_stream(
                "s", current_version=StreamState.ANY, events=[EsdbNewEvent("A", b"{}")]
            )
        finally:
            client.close()

    async def test_reading_all_from_a_position_where_no_event_starts_is_refused(
        self, fake: FakeEventStoreDB
    ) -> None:
        client = AsyncClient(fake.url)
        await client.connect()
        try:
            await client.append_to_stream(
                "s", current_version=StreamState.ANY, events=[EsdbNewEvent("A", b"{}")]
            )
            with pytest.raises(GrpcError, match="invalid position"):
                _ = [event async for event in await client.read_all(commit_position=1)]
        finally:
            await client.close()

    async def test_a_stream_subscription_delivers_history_then_live_events(
        self, fake: FakeEventStoreDB
    ) -> None:
        client = AsyncClient(fake.url)
        await client.connect()
        try:
            await client.append_to_stream(
                "s",
                current_version=StreamState.NO_STREAM,
                events=[EsdbNewEvent("A", b"{}"), EsdbNewEvent("B", b"{}")],
            )
            subscription = await client.subscribe_to_stream("s", stream_position=0)
            async with asyncio.timeout(DEADLINE):
                first = await anext(subscription)
                await client.append_to_stream(
                    "other", current_version=StreamState.ANY, events=[EsdbNewEvent("X", b"{}")]
                )
                await client.append_to_stream(
                    "s", current_version=1, events=[EsdbNewEvent("C", b"{}")]
                )
                live = await anext(subscription)
            await subscription.stop()
        finally:
            await client.close()

        # From a revision, a subscription starts after it.
        assert [first.type, live.type] == ["B", "C"]

    async def test_read_stream_backwards_with_a_count(self, fake: FakeEventStoreDB) -> None:
        client = AsyncClient(fake.url)
        await client.connect()
        try:
            await client.append_to_stream(
                "s",
                current_version=StreamState.NO_STREAM,
                events=[EsdbNewEvent(t, b"{}") for t in "ABCD"],
            )
            events = await client.get_stream("s", stream_position=2, backwards=True, limit=2)
        finally:
            await client.close()

        assert [event.type for event in events] == ["C", "B"]

    async def test_a_log_kept_in_a_file_is_served_again_after_a_restart(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "esdb.log"
        with FakeEventStoreDB(path=path) as server:
            async with EsdbEventStore(server.url) as store:
                await store.append("s", [new_event(n=1), new_event(n=2)])
                await store.append("t", [new_event(n=3)])
                before = await _all(store)
        # Killed while writing a record: the torn line was never acknowledged.
        with path.open("a") as file:
            file.write('{"id": "torn')

        with FakeEventStoreDB(path=path) as server:
            async with EsdbEventStore(server.url) as store:
                assert await _all(store) == before
                later = await store.append("s", [new_event(n=4)], expected_version=1)
                assert later.position > before[-1].position
            assert server.event_count == 4
