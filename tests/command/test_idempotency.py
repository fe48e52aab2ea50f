"""Idempotency keys: a retried command appends nothing and gets the first reply."""

from __future__ import annotations

import asyncio
import types
from typing import Any

import pytest
import structlog
from pydantic import BaseModel

from micro import (
    EventStoreUnavailableError,
    Micro,
    MicroError,
    NotFoundError,
    RuleViolation,
    Settings,
    ValidationError,
)
from micro.command.pipeline import event_id
from micro.eventstore import RecordedEvent, open_event_store
from micro.readmodel import Event
from tests.command.support import LaggingStore, run_command, tally_service


async def test_a_retry_appends_nothing_and_returns_the_same_reply(
    micro_settings: Settings, store: LaggingStore
) -> None:
    async with tally_service(micro_settings, store), Micro(micro_settings) as client:
        first = await client.request("add", {"id": "a", "amount": 600}, idempotency_key="k1")
        await client.act("add", {"id": "a", "amount": 1})
        # Decided again, this one would break the limit: the key returns the first outcome.
        again = await client.request("add", {"id": "a", "amount": 600}, idempotency_key="k1")
    assert again == first
    assert first.value == {"id": "a", "total": 600, "count": 1}
    assert [event.metadata.get("idempotency_key") for event in await store.events()] == [
        "k1",
        None,
    ]


async def test_event_ids_derive_from_the_key(micro_settings: Settings, store: LaggingStore) -> None:
    async with tally_service(micro_settings, store), Micro(micro_settings) as client:
        await client.act("mark", {"label": "x", "copies": 2}, idempotency_key="marks-1")
    ids = [event.id for event in await store.events()]
    assert ids == [event_id("marks-1", "mark", 0), event_id("marks-1", "mark", 1)]


async def test_the_same_key_twice_at_once_runs_the_command_once(
    micro_settings: Settings, store: LaggingStore
) -> None:
    async with tally_service(micro_settings, store), Micro(micro_settings) as client:
        replies = await asyncio.gather(
            *(
                client.request("add", {"id": "a", "amount": 600}, idempotency_key="twice")
                for _ in range(5)
            )
        )
    assert {reply.position for reply in replies} == {1}
    assert all(reply.value == {"id": "a", "total": 600, "count": 1} for reply in replies)
    assert await store.last_position() == 1


async def test_a_key_is_known_to_another_instance_of_the_service(
    micro_settings: Settings, store: LaggingStore
) -> None:
    async with tally_service(micro_settings, store), Micro(micro_settings) as client:
        first = await client.request("mark", {"label": "x", "copies": 2}, idempotency_key="m")
        await client.act("add", {"id": "a", "amount": 999}, idempotency_key="a")
    # A restarted (or any other) instance has no memory of the replies; it has the events.
    async with tally_service(micro_settings, store), Micro(micro_settings) as client:
        again = await client.request("mark", {"label": "x", "copies": 2}, idempotency_key="m")
        added = await client.request("add", {"id": "a", "amount": 999}, idempotency_key="a")
    assert again == first
    assert first.value == {"stream": "marks", "position": 2, "events": ["Marked", "Marked"]}
    assert added.position == 3
    assert added.value == {"id": "a", "total": 999, "count": 1}
    assert await store.last_position() == 3


async def test_retries_spread_over_two_live_instances_append_once(
    micro_settings: Settings, store: LaggingStore
) -> None:
    one = tally_service(micro_settings, store)
    two = tally_service(micro_settings, store)
    async with one, two, Micro(micro_settings) as client:
        replies = [
            await client.request("add", {"id": "a", "amount": 600}, idempotency_key="spread")
            for _ in range(12)
        ]
        answered = await asyncio.gather(
            *(
                client.request("add", {"id": "b", "amount": 700}, idempotency_key=f"b{n % 3}")
                for n in range(30)
            ),
            return_exceptions=True,
        )
    assert {reply.position for reply in replies} == {1}
    assert all(reply.value["total"] == 600 for reply in replies)
    # three keys, three events at most; the limit (1000) lets only the first of them in
    assert sum(1 for event in await store.events() if event.stream == "tally-b") == 1
    successes = [a for a in answered if not isinstance(a, Exception)]
    assert {a.position for a in successes} == {2}
    assert len(successes) == 10


async def test_a_key_used_for_another_command_is_refused(
    micro_settings: Settings, store: LaggingStore
) -> None:
    async with tally_service(micro_settings, store), Micro(micro_settings) as client:
        await client.act("add", {"id": "a", "amount": 1}, idempotency_key="shared")
        with pytest.raises(ValidationError) as same_instance:
            await client.act("mark", {"label": "x"}, idempotency_key="shared")
    async with tally_service(micro_settings, store), Micro(micro_settings) as client:
        with pytest.raises(ValidationError) as other_instance:
            await client.act("mark", {"label": "x"}, idempotency_key="shared")
    for raised in (same_instance, other_instance):
        assert "already used for 'add'" in str(raised.value)
        assert raised.value.details["fields"][0]["field"] == "idempotency_key"
    assert await store.last_position() == 1


# -- refusals ---------------------------------------------------------------------------------

WITH_TAKE = ("add", "take")


@pytest.fixture(params=["memory", "jetstream"])
def shared(request: pytest.FixtureRequest, store: LaggingStore) -> LaggingStore | None:
    """The store the instances share: a memory store, or (None) the JetStream one they open."""
    return store if request.param == "memory" else None


async def stored(settings: Settings, shared: LaggingStore | None) -> list[RecordedEvent]:
    if shared is not None:
        return await shared.events()
    async with open_event_store(settings) as events:
        return [event async for event in events.read_all()]


def outcome(error: BaseException) -> tuple[str, str, str, dict[str, Any]]:
    """What a caller can tell of a refusal: its class, code, message and details."""
    assert isinstance(error, MicroError)
    return type(error).__name__, error.code, error.message, error.details


class Gate:
    """Holds back the appends of one instance, as a stalled network would."""

    def __init__(self, micro: Micro) -> None:
        pipeline = micro.commander.pipeline
        assert pipeline is not None
        self.store = pipeline.store
        self.opened = asyncio.Event()
        self.reached = asyncio.Event()
        pipeline.store = self  # type: ignore[assignment]

    async def append(self, *args: Any) -> Any:
        self.reached.set()
        await self.opened.wait()
        return await self.store.append(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


async def test_a_refusal_stands_for_its_key_after_the_state_changed_and_a_restart(
    micro_settings: Settings, shared: LaggingStore | None
) -> None:
    take = {"id": "a", "amount": 50}
    async with (
        tally_service(micro_settings, shared, commands=WITH_TAKE),
        Micro(micro_settings) as client,
    ):
        await client.act("add", {"id": "a", "amount": 10})
        with pytest.raises(RuleViolation) as first:
            await client.act("take", take, idempotency_key="t")
        await client.act("add", {"id": "a", "amount": 100})
        # Decided again, it would pass now: the key returns the first outcome.
        with pytest.raises(RuleViolation) as again:
            await client.act("take", take, idempotency_key="t")
        after_retry = await stored(micro_settings, shared)
    async with (
        tally_service(micro_settings, shared, commands=WITH_TAKE),
        Micro(micro_settings) as client,
    ):
        with pytest.raises(RuleViolation) as restarted:
            await client.act("take", take, idempotency_key="t")
        # A new key has the command decided again.
        taken = await client.act("take", take, idempotency_key="t2")
    assert outcome(first.value) == (
        "TallyShort",
        "tally_short",
        "tally a holds 10, less than 50",
        {"id": "a", "total": 10, "asked": 50},
    )
    assert outcome(again.value) == outcome(restarted.value) == outcome(first.value)
    assert taken == {"id": "a", "total": 60, "count": 3}
    events = await stored(micro_settings, shared)
    assert events[:3] == after_retry
    assert [event.type for event in events] == ["Added", "micro.CommandRefused", "Added", "Taken"]
    marker = events[1]
    assert marker.stream == "micro-refusals"
    assert marker.id == event_id("t", "take", 0)
    assert marker.data == {
        "command": "take",
        "error": {
            "code": "tally_short",
            "message": "tally a holds 10, less than 50",
            "details": {"id": "a", "total": 10, "asked": 50},
        },
    }
    assert marker.metadata["idempotency_key"] == "t"
    assert marker.metadata["command"] == "take"
    assert {"correlation_id", "causation_id"} <= set(marker.metadata)


async def test_a_refusal_on_one_instance_is_the_answer_of_another(
    micro_settings: Settings, shared: LaggingStore | None
) -> None:
    one = tally_service(micro_settings, shared, commands=WITH_TAKE)
    two = tally_service(micro_settings, shared, commands=WITH_TAKE)
    take = {"id": "a", "amount": 50}
    async with one, two, Micro(micro_settings) as client:
        _, position = await run_command(one, "add", {"id": "a", "amount": 10})
        with pytest.raises(RuleViolation) as first:
            await run_command(one, "take", take, idempotency_key="t")
        _, position = await run_command(
            two, "add", {"id": "a", "amount": 100}, min_position=position
        )
        with pytest.raises(RuleViolation) as elsewhere:
            await run_command(two, "take", take, idempotency_key="t", min_position=position)
        over_the_bus = await asyncio.gather(
            *(client.act("take", take, idempotency_key="t") for _ in range(6)),
            return_exceptions=True,
        )
    assert outcome(elsewhere.value) == outcome(first.value)
    assert [outcome(answer) for answer in over_the_bus] == [outcome(first.value)] * 6
    events = await stored(micro_settings, shared)
    assert [event.type for event in events] == ["Added", "micro.CommandRefused", "Added"]


async def test_a_refusal_in_pre_validation_is_remembered_too(
    micro_settings: Settings, store: LaggingStore
) -> None:
    async with (
        tally_service(micro_settings, store, commands=WITH_TAKE),
        Micro(micro_settings) as client,
    ):
        with pytest.raises(RuleViolation, match="no tally ever holds 5000") as first:
            await client.act("take", {"id": "a", "amount": 5000}, idempotency_key="big")
        with pytest.raises(RuleViolation) as again:
            await client.act("take", {"id": "a", "amount": 5000}, idempotency_key="big")
    async with (
        tally_service(micro_settings, store, commands=WITH_TAKE),
        Micro(micro_settings) as client,
    ):
        with pytest.raises(RuleViolation) as restarted:
            await client.act("take", {"id": "a", "amount": 5000}, idempotency_key="big")
    assert outcome(again.value) == outcome(restarted.value) == outcome(first.value)
    assert [(event.type, event.id) for event in await store.events()] == [
        ("micro.CommandRefused", event_id("big", "take", 0))
    ]


async def test_a_refusal_that_loses_the_race_to_a_success_answers_with_the_success(
    micro_settings: Settings, shared: LaggingStore | None
) -> None:
    one = tally_service(micro_settings, shared, commands=WITH_TAKE)
    two = tally_service(micro_settings, shared, commands=WITH_TAKE)
    take = {"id": "a", "amount": 50}
    async with one, two:
        _, position = await run_command(one, "add", {"id": "a", "amount": 10})
        gate = Gate(one)
        refusing = asyncio.create_task(run_command(one, "take", take, idempotency_key="t"))
        await asyncio.wait_for(gate.reached.wait(), 5)  # one refused; its marker waits
        _, position = await run_command(
            two, "add", {"id": "a", "amount": 100}, min_position=position
        )
        succeeded = await run_command(two, "take", take, idempotency_key="t")
        gate.opened.set()
        answered = await asyncio.wait_for(refusing, 5)
    assert succeeded[0] == {"id": "a", "total": 60, "count": 3}
    assert answered == succeeded
    events = await stored(micro_settings, shared)
    assert [event.type for event in events] == ["Added", "Added", "Taken"]
    assert events[-1].id == event_id("t", "take", 0)


async def test_a_success_that_loses_the_race_to_a_refusal_gets_the_refusal(
    micro_settings: Settings, shared: LaggingStore | None
) -> None:
    one = tally_service(micro_settings, shared, commands=WITH_TAKE)
    two = tally_service(micro_settings, shared, commands=WITH_TAKE)
    async with one, two:
        _, position = await run_command(one, "add", {"id": "a", "amount": 10})
        gate = Gate(one)
        taking = asyncio.create_task(
            run_command(one, "take", {"id": "a", "amount": 5}, idempotency_key="t")
        )
        await asyncio.wait_for(gate.reached.wait(), 5)  # one decided to take; its append waits
        _, position = await run_command(
            two, "take", {"id": "a", "amount": 8}, min_position=position
        )
        with pytest.raises(RuleViolation) as refused:
            await run_command(two, "take", {"id": "a", "amount": 5}, idempotency_key="t")
        gate.opened.set()
        with pytest.raises(RuleViolation) as lost:
            await asyncio.wait_for(taking, 5)
    assert outcome(refused.value)[2] == "tally a holds 2, less than 5"
    assert outcome(lost.value) == outcome(refused.value)
    events = await stored(micro_settings, shared)
    assert [event.type for event in events] == ["Added", "Taken", "micro.CommandRefused"]


class Claim(BaseModel):
    id: str


class Claimed(Event):
    id: str


def claim_rule() -> types.ModuleType:
    """A rule whose refusal is not a RuleViolation: the tally it names does not exist."""
    rule = types.ModuleType("claim_rule")
    rule.Request = Claim  # type: ignore[attr-defined]
    rule.Claimed = Claimed  # type: ignore[attr-defined]
    rule.stream = lambda request: f"claim-{request.id}"  # type: ignore[attr-defined]

    def validation(request: Claim, models: Any) -> None:
        if request.id not in models.tally:
            raise NotFoundError(f"no tally {request.id}")

    rule.validation = validation  # type: ignore[attr-defined]
    rule.events = lambda request, models: [Claimed(id=request.id)]  # type: ignore[attr-defined]
    return rule


async def test_a_not_found_decided_by_the_rule_is_remembered_like_a_refusal(
    micro_settings: Settings, store: LaggingStore
) -> None:
    service = tally_service(micro_settings, store)
    service.commander.add_command("claim", claim_rule(), {})
    async with service, Micro(micro_settings) as client:
        with pytest.raises(NotFoundError, match="no tally a"):
            await client.act("claim", {"id": "a"}, idempotency_key="c")
        await client.act("add", {"id": "a", "amount": 1})
        with pytest.raises(NotFoundError, match="no tally a"):
            await client.act("claim", {"id": "a"}, idempotency_key="c")
        assert await client.act("claim", {"id": "a"}, idempotency_key="c2")
    assert [event.type for event in await store.events()] == [
        "micro.CommandRefused",
        "Added",
        "Claimed",
    ]


async def test_an_unkeyed_refusal_stores_nothing(
    micro_settings: Settings, store: LaggingStore
) -> None:
    async with (
        tally_service(micro_settings, store, commands=WITH_TAKE),
        Micro(micro_settings) as client,
    ):
        with pytest.raises(RuleViolation):
            await client.act("take", {"id": "a", "amount": 50})
        with pytest.raises(RuleViolation):
            await client.act("take", {"id": "a", "amount": 5000})
    assert await store.events() == []


async def test_a_schema_error_under_a_key_stores_nothing_and_is_not_remembered(
    micro_settings: Settings, store: LaggingStore
) -> None:
    async with (
        tally_service(micro_settings, store, commands=WITH_TAKE),
        Micro(micro_settings) as client,
    ):
        with pytest.raises(ValidationError):
            await client.act("take", {"id": "A!", "amount": 5}, idempotency_key="bad")
        with pytest.raises(ValidationError, match="note is not allowed"):
            await client.act(
                "add", {"id": "a", "amount": 5, "note": "forbidden"}, idempotency_key="note"
            )
        assert await store.events() == []
        # The same keys with a payload that reads are decided as new commands.
        await client.act("add", {"id": "a", "amount": 5}, idempotency_key="note")
        taken = await client.act("take", {"id": "a", "amount": 5}, idempotency_key="bad")
    assert taken == {"id": "a", "total": 0, "count": 2}
    assert [event.type for event in await store.events()] == ["Added", "Taken"]


async def test_a_refusal_whose_marker_cannot_be_stored_is_still_the_answer(
    micro_settings: Settings, store: LaggingStore
) -> None:
    class NoRefusals(LaggingStore):
        async def append(self, stream: str, *args: Any) -> Any:
            if stream == "micro-refusals":
                raise EventStoreUnavailableError("the store went away")
            return await super().append(stream, *args)

    failing = NoRefusals()
    async with (
        tally_service(micro_settings, failing, commands=WITH_TAKE),
        Micro(micro_settings) as client,
    ):
        await client.act("add", {"id": "a", "amount": 10})
        with (
            structlog.testing.capture_logs() as logs,
            pytest.raises(RuleViolation, match="holds 10, less than 50"),
        ):
            await client.act("take", {"id": "a", "amount": 50}, idempotency_key="t")
        # Nothing was stored for the key, so a retry is decided again.
        await client.act("add", {"id": "a", "amount": 100})
        taken = await client.act("take", {"id": "a", "amount": 50}, idempotency_key="t")
    assert taken == {"id": "a", "total": 60, "count": 3}
    assert [line["event"] for line in logs if line["log_level"] == "warning"] == [
        "refusal of a keyed command not stored"
    ]
    assert [event.type for event in await failing.events()] == ["Added", "Added", "Taken"]
