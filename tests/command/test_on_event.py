"""on_event handlers: each group handles every event once, and resumes after a restart."""

from __future__ import annotations

import pytest

from micro import Micro, RuleViolation, Settings
from micro.eventstore.base import ANY, NewEvent
from micro.readmodel import AppliedEvent
from micro.testing import wait_until as until
from tests.command.support import LaggingStore, tally_service


class Journal:
    def __init__(self) -> None:
        self.seen: list[tuple[str, int, int]] = []

    def handler(self, label: str):
        async def handle(event: AppliedEvent) -> None:
            self.seen.append((label, event.position, event.data.amount))

        return handle

    def of(self, label: str) -> list[int]:
        return [position for who, position, _ in self.seen if who == label]


async def add_raw(store: LaggingStore, count: int) -> None:
    for _ in range(count):
        await store.append("tally-a", [NewEvent("Added", {"id": "a", "amount": 1})], ANY)


async def test_each_group_handles_every_event_once_with_typed_data(
    micro_settings: Settings, store: LaggingStore
) -> None:
    journal = Journal()
    tally = tally_service(micro_settings, store)
    tally.on_event("Added", journal.handler("audit"), group="audit")
    tally.on_event("Added", journal.handler("mail"), group="mail")
    tally.on_event("Marked", journal.handler("never"), group="mail")
    async with tally, Micro(micro_settings) as client:
        for amount in (1, 2, 3):
            await client.act("add", {"id": "a", "amount": amount})
        await until(
            lambda: all(g["handled"] == 3 for g in tally.health()["event_handlers"].values()),
            what="both groups to handle 3 events",
        )
        health = tally.health()["event_handlers"]
    assert journal.of("audit") == journal.of("mail") == [1, 2, 3]
    assert [amount for who, _, amount in journal.seen if who == "audit"] == [1, 2, 3]
    assert health["audit"] == {"status": "ok", "position": 3, "handled": 3, "reason": None}


async def test_a_restarted_group_resumes_after_its_durable_checkpoint(
    micro_settings: Settings, store: LaggingStore
) -> None:
    journal = Journal()
    first = tally_service(micro_settings, store)
    first.on_event("Added", journal.handler("first"), group="audit")
    async with first:
        await add_raw(store, 4)
        await until(lambda: first.health()["event_handlers"]["audit"]["handled"] == 4)
    await add_raw(store, 2)  # while no instance of the group runs
    second = tally_service(micro_settings, store)
    second.on_event("Added", journal.handler("second"), group="audit")
    async with second:
        await until(lambda: len(journal.of("second")) == 2)
        await add_raw(store, 1)
        await until(lambda: len(journal.of("second")) == 3)
    assert journal.of("first") == [1, 2, 3, 4]
    assert journal.of("second") == [5, 6, 7]


async def test_two_instances_of_a_group_never_handle_past_the_checkpoint_twice(
    micro_settings: Settings, store: LaggingStore
) -> None:
    journal = Journal()
    one = tally_service(micro_settings, store)
    one.on_event("Added", journal.handler("one"), group="audit")
    async with one:
        await add_raw(store, 3)
        await until(lambda: one.health()["event_handlers"]["audit"]["handled"] == 3)
        two = tally_service(micro_settings, store)
        two.on_event("Added", journal.handler("two"), group="audit")
        async with two:  # joins late: starts from the group's checkpoint, not from zero
            await add_raw(store, 3)
            await until(
                lambda: sorted(set(journal.of("one") + journal.of("two"))) == [1, 2, 3, 4, 5, 6]
            )
    assert journal.of("two") == [] or min(journal.of("two")) > 3


async def test_a_handler_that_keeps_failing_stops_its_group_loudly(
    micro_settings: Settings, store: LaggingStore
) -> None:
    attempts: list[int] = []

    def flaky(event: AppliedEvent) -> None:
        attempts.append(event.position)
        if event.position == 2:
            raise RuntimeError("the mail server is down")

    tally = tally_service(micro_settings, store)
    tally.on_event("Added", flaky, group="mail")
    tally.modules.get("app_stream").attempts = 3
    async with tally:
        await add_raw(store, 3)
        await until(lambda: tally.health()["event_handlers"]["mail"]["status"] == "failed")
        health = tally.health()["event_handlers"]["mail"]
    assert attempts == [1, 2, 2, 2]  # retried, then stopped: event 3 was not skipped to
    assert "failed on Added at position 2: the mail server is down" in health["reason"]
    assert health["handled"] == 1


async def test_a_handler_that_fails_once_is_retried(
    micro_settings: Settings, store: LaggingStore
) -> None:
    attempts: list[int] = []

    def flaky(event: AppliedEvent) -> None:
        attempts.append(event.position)
        if attempts.count(event.position) == 1:
            raise ConnectionError("try again")

    tally = tally_service(micro_settings, store)
    tally.on_event("Added", flaky, group="mail")
    async with tally:
        await add_raw(store, 2)
        await until(lambda: tally.health()["event_handlers"]["mail"]["handled"] == 2)
    assert attempts == [1, 1, 2, 2]


async def test_refusals_reach_only_the_handlers_that_ask_for_them_by_name(
    micro_settings: Settings, store: LaggingStore
) -> None:
    journal = Journal()
    refusals: list[AppliedEvent] = []
    tally = tally_service(micro_settings, store, commands=("add", "take"))
    tally.on_event("Added", journal.handler("audit"), group="audit")
    tally.on_event("micro.CommandRefused", refusals.append, group="refusals")
    async with tally, Micro(micro_settings) as client:
        await client.act("add", {"id": "a", "amount": 1})
        with pytest.raises(RuleViolation):
            await client.act("take", {"id": "a", "amount": 5}, idempotency_key="t")
        await client.act("add", {"id": "a", "amount": 2})
        await until(lambda: tally.health()["event_handlers"]["audit"]["handled"] == 2)
        await until(lambda: len(refusals) == 1)
        total = await client.act("tally", {"id": "a"})
    assert journal.of("audit") == [1, 3]
    assert refusals[0].position == 2
    assert refusals[0].data["command"] == "take"
    assert refusals[0].data["error"]["code"] == "tally_short"
    assert total == {"id": "a", "total": 3, "count": 2}  # the reducers never saw it
