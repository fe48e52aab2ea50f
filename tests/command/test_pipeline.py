"""The command pipeline: validate, decide, append, wait for the reducers, reply."""

from __future__ import annotations

import asyncio

import pytest

from micro import (
    ConcurrencyError,
    InternalError,
    Micro,
    RuleViolation,
    ServiceNotFoundError,
    Settings,
    TimeoutError,
    ValidationError,
)
from micro.eventstore.base import NO_STREAM, NewEvent
from micro.testing import wait_until as until
from tests.command.support import LaggingStore, run_command, tally_service


async def test_a_reply_comes_after_the_reducer_applied_and_carries_the_position(
    micro_settings: Settings, store: LaggingStore
) -> None:
    async with tally_service(micro_settings, store) as tally, Micro(micro_settings) as client:
        first = await client.request("add", {"id": "a", "amount": 5})
        assert tally.commander.projector.position >= first.position  # applied before replying
        second = await client.request("add", {"id": "a", "amount": 7})
    assert first.value == {"id": "a", "total": 5, "count": 1}
    assert second.value == {"id": "a", "total": 12, "count": 2}  # respond read the new state
    assert (first.position, second.position) == (1, 2)
    assert [event.type for event in await store.events()] == ["Added", "Added"]


async def test_the_default_reply_names_the_stream_position_and_events(
    micro_settings: Settings, store: LaggingStore
) -> None:
    async with tally_service(micro_settings, store), Micro(micro_settings) as client:
        reply = await client.request("mark", {"label": "x", "copies": 3})
    assert reply.value == {"stream": "marks", "position": 3, "events": ["Marked"] * 3}
    assert reply.position == 3
    events = await store.events()
    assert [(e.stream, e.version) for e in events] == [("marks", 0), ("marks", 1), ("marks", 2)]


async def test_events_carry_the_command_and_trace_in_their_metadata(
    micro_settings: Settings, store: LaggingStore
) -> None:
    async with tally_service(micro_settings, store), Micro(micro_settings) as client:
        await client.act("add", {"id": "a", "amount": 1}, idempotency_key="k-1")
    (event,) = await store.events()
    assert event.metadata["command"] == "add"
    assert event.metadata["idempotency_key"] == "k-1"
    assert len(event.metadata["correlation_id"]) == 16
    assert "recorded_at" in event.metadata


class TestBadInput:
    async def test_wrong_types_are_a_validation_error_naming_each_field(
        self, micro_settings: Settings, store: LaggingStore
    ) -> None:
        async with tally_service(micro_settings, store), Micro(micro_settings) as client:
            with pytest.raises(ValidationError) as raised:
                await client.act("add", {"id": 7, "amount": "many", "note": ["x"]})
        fields = {item["field"]: item["reason"] for item in raised.value.details["fields"]}
        assert set(fields) == {"id", "amount", "note"}
        assert "string" in fields["id"]
        assert "integer" in fields["amount"]
        assert await store.last_position() == 0

    async def test_missing_fields_are_named_too(
        self, micro_settings: Settings, store: LaggingStore
    ) -> None:
        async with tally_service(micro_settings, store), Micro(micro_settings) as client:
            with pytest.raises(ValidationError) as missing:
                await client.act("add", {})
            with pytest.raises(ValidationError) as no_payload:
                await client.act("add")
            with pytest.raises(ValidationError) as not_an_object:
                await client.act("add", [1, 2])
        for raised in (missing, no_payload):
            assert {item["field"] for item in raised.value.details["fields"]} == {"id", "amount"}
            assert {item["type"] for item in raised.value.details["fields"]} == {"missing"}
        assert not_an_object.value.details["fields"]
        assert await store.last_position() == 0

    async def test_field_constraints_are_checked(
        self, micro_settings: Settings, store: LaggingStore
    ) -> None:
        async with tally_service(micro_settings, store), Micro(micro_settings) as client:
            with pytest.raises(ValidationError) as raised:
                await client.act("add", {"id": "UPPER CASE", "amount": 0})
        fields = [item["field"] for item in raised.value.details["fields"]]
        assert fields == ["id", "amount"]

    async def test_a_stateless_check_failing_is_a_validation_error(
        self, micro_settings: Settings, store: LaggingStore
    ) -> None:
        async with tally_service(micro_settings, store), Micro(micro_settings) as client:
            with pytest.raises(ValidationError, match="that note is not allowed"):
                await client.act("add", {"id": "a", "amount": 1, "note": "forbidden"})
        assert await store.last_position() == 0

    async def test_an_unknown_command_is_service_not_found(
        self, micro_settings: Settings, store: LaggingStore
    ) -> None:
        async with tally_service(micro_settings, store), Micro(micro_settings) as client:
            with pytest.raises(ServiceNotFoundError):
                await client.act("subtract", {"id": "a", "amount": 1}, timeout=2)

    async def test_a_rule_violation_reaches_the_caller_with_its_message(
        self, micro_settings: Settings, store: LaggingStore
    ) -> None:
        async with tally_service(micro_settings, store), Micro(micro_settings) as client:
            await client.act("add", {"id": "a", "amount": 900})
            with pytest.raises(RuleViolation) as raised:
                await client.act("add", {"id": "a", "amount": 101})
            assert await client.act("tally", {"id": "a"}) == {"id": "a", "total": 900, "count": 1}
        assert str(raised.value) == "tally a would pass its limit of 1000 (at 900)"
        assert raised.value.status == 422
        assert await store.last_position() == 1

    @pytest.mark.parametrize("where", ["validation", "events"])
    async def test_a_rule_raising_unexpectedly_is_an_internal_error_and_changes_nothing(
        self, micro_settings: Settings, store: LaggingStore, where: str
    ) -> None:
        # "events": the rule builds an event that fails the event's own schema.
        service = tally_service(micro_settings, store, commands=("add", "explode"))
        async with service as tally, Micro(micro_settings) as client:
            await client.act("add", {"id": "a", "amount": 3})
            with pytest.raises(InternalError) as raised:
                await client.act("explode", {"id": "a", "where": where})
            assert await client.act("add", {"id": "a", "amount": 4}) == {
                "id": "a",
                "total": 7,
                "count": 2,
            }  # still serving, the model as if the bad command never came
            assert tally.health()["models"]["status"] == "ok"
        assert "internal error in 'explode'" in str(raised.value)
        assert "a bug in the rule" not in str(raised.value)  # no internals leak to callers
        assert [event.type for event in await store.events()] == ["Added", "Added"]

    async def test_a_rule_returning_no_list_is_an_internal_error(
        self, micro_settings: Settings, store: LaggingStore
    ) -> None:
        service = tally_service(micro_settings, store, commands=("explode",))
        async with service, Micro(micro_settings) as client:
            with pytest.raises(InternalError, match="must return a list of events"):
                await client.act("explode", {"id": "a", "where": "not a list"})
        assert await store.last_position() == 0

    async def test_a_rule_deciding_nothing_happens_is_a_rule_violation(
        self, micro_settings: Settings, store: LaggingStore
    ) -> None:
        service = tally_service(micro_settings, store, commands=("explode",))
        async with service, Micro(micro_settings) as client:
            with pytest.raises(RuleViolation, match="decided that nothing happens"):
                await client.act("explode", {"id": "a", "where": "nothing"})
        assert await store.last_position() == 0

    async def test_a_deadline_passing_while_the_reducer_lags_says_the_event_was_stored(
        self, micro_settings: Settings, store: LaggingStore
    ) -> None:
        async with tally_service(micro_settings, store) as tally, Micro(micro_settings) as client:
            # While the command's append is on its way, another writer stores an event ahead
            # of it that this instance does not get to see: the command's own event cannot
            # be applied before the one ahead of it.
            store.blocked_appends["tally-a"] = asyncio.Event()
            first = asyncio.create_task(
                client.act("add", {"id": "a", "amount": 5}, timeout=2.0, idempotency_key="k")
            )
            await until(lambda: "tally-a" in store.waiting, what="the append to start")
            store.hold()
            await store.append("tally-b", [NewEvent("Added", {"id": "b", "amount": 1})], NO_STREAM)
            store.blocked_appends.pop("tally-a").set()
            with pytest.raises(TimeoutError) as raised:
                await first
            assert raised.value.details == {"stored": True, "position": 2}
            assert "WAS stored (position 2)" in str(raised.value)
            assert tally.commander.projector.position == 0
            store.release()
            # The advice in the message works: the same key returns the stored outcome.
            again = await client.request("add", {"id": "a", "amount": 5}, idempotency_key="k")
            assert tally.commander.projector.position == 2
        assert again.position == 2
        assert again.value == {"id": "a", "total": 5, "count": 1}
        assert len(await store.events()) == 2


class TestOwnEvents:
    async def test_a_command_applies_its_own_events_without_waiting_for_the_subscription(
        self, micro_settings: Settings, store: LaggingStore
    ) -> None:
        async with tally_service(micro_settings, store) as tally, Micro(micro_settings) as client:
            store.hold()  # nothing comes back through the subscription
            first = await client.request("add", {"id": "a", "amount": 5}, timeout=2)
            second = await client.act("add", {"id": "a", "amount": 2}, timeout=2)
            assert second == {"id": "a", "total": 7, "count": 2}
            assert await client.act("tally", {"id": "a"}) == second
            assert tally.commander.projector.position == first.position + 1
            store.release()
            # The subscription brings the same events back later: they are not applied twice.
            third = await client.request("add", {"id": "b", "amount": 1})
            await until(lambda: store.delivered >= third.position, what="the held events")
            assert await client.act("tally", {"id": "a"}) == second
            assert tally.commander.projector.applied == 3


class TestConcurrency:
    async def test_the_expected_version_is_the_one_the_models_know(
        self, micro_settings: Settings, store: LaggingStore
    ) -> None:
        async with tally_service(micro_settings, store), Micro(micro_settings) as client:
            for _ in range(3):
                await client.act("add", {"id": "a", "amount": 1})
            await client.act("add", {"id": "b", "amount": 1})
        assert store.appends == [
            ("tally-a", NO_STREAM),
            ("tally-a", 0),
            ("tally-a", 1),
            ("tally-b", NO_STREAM),
        ]

    async def test_commands_on_one_stream_are_serialised_within_an_instance(
        self, micro_settings: Settings, store: LaggingStore
    ) -> None:
        async with tally_service(micro_settings, store), Micro(micro_settings) as client:
            replies = await asyncio.gather(
                *(client.act("add", {"id": "a", "amount": 1}) for _ in range(40))
            )
        # each decided on the state the one before left: no race lost, no total twice
        assert store.conflicts == 0
        assert sorted(reply["total"] for reply in replies) == list(range(1, 41))

    async def test_commands_on_other_streams_do_not_wait_for_a_slow_one(
        self, micro_settings: Settings, store: LaggingStore
    ) -> None:
        async with tally_service(micro_settings, store), Micro(micro_settings) as client:
            store.blocked_appends["tally-slow"] = asyncio.Event()
            slow = asyncio.create_task(client.act("add", {"id": "slow", "amount": 1}))
            await until(lambda: "tally-slow" in store.waiting, what="the slow append to start")
            fast = await client.act("add", {"id": "fast", "amount": 2})
            assert fast == {"id": "fast", "total": 2, "count": 1}
            assert not slow.done()
            store.blocked_appends["tally-slow"].set()
            assert (await slow)["total"] == 1

    async def test_a_command_that_lost_a_race_catches_up_and_decides_again(
        self, micro_settings: Settings, store: LaggingStore
    ) -> None:
        service = tally_service(micro_settings, store)
        await service.commander.start()
        try:
            store.hold()  # this instance will not see what another one writes meanwhile
            await store.append("tally-a", [NewEvent("Added", {"id": "a", "amount": 10})], NO_STREAM)
            racing = asyncio.create_task(run_command(service, "add", {"id": "a", "amount": 5}))
            await until(lambda: store.conflicts == 1, what="the command to lose the race")
            store.release()
            reply, position = await racing
        finally:
            await service.commander.stop()
        assert reply == {"id": "a", "total": 15, "count": 2}
        assert position == 2
        assert store.appends == [("tally-a", NO_STREAM), ("tally-a", NO_STREAM), ("tally-a", 0)]

    async def test_the_retry_validates_again_against_what_the_winner_wrote(
        self, micro_settings: Settings, store: LaggingStore
    ) -> None:
        service = tally_service(micro_settings, store)
        await service.commander.start()
        try:
            store.hold()
            await store.append(
                "tally-a", [NewEvent("Added", {"id": "a", "amount": 600})], NO_STREAM
            )
            racing = asyncio.create_task(run_command(service, "add", {"id": "a", "amount": 600}))
            await until(lambda: store.conflicts == 1, what="the command to lose the race")
            store.release()
            with pytest.raises(RuleViolation, match="would pass its limit"):
                await racing
        finally:
            await service.commander.stop()
        assert await store.last_position() == 1

    async def test_a_race_lost_more_times_than_allowed_is_a_concurrency_error(
        self, micro_settings: Settings, store: LaggingStore
    ) -> None:
        service = tally_service(micro_settings, store, command_retries=0)
        await service.commander.start()
        try:
            store.hold()
            await store.append("tally-a", [NewEvent("Added", {"id": "a", "amount": 1})], NO_STREAM)
            with pytest.raises(ConcurrencyError):
                await run_command(service, "add", {"id": "a", "amount": 1})
        finally:
            store.release()
            await service.commander.stop()
