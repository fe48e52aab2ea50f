"""Idempotency keys: a retried command appends nothing and gets the first reply."""

from __future__ import annotations

import asyncio

import pytest
from harness import TestStore, tally_service

from micro import Micro, Settings, ValidationError
from micro.command.pipeline import event_id


async def test_a_retry_appends_nothing_and_returns_the_same_reply(
    micro_settings: Settings, store: TestStore
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


async def test_event_ids_derive_from_the_key(micro_settings: Settings, store: TestStore) -> None:
    async with tally_service(micro_settings, store), Micro(micro_settings) as client:
        await client.act("mark", {"label": "x", "copies": 2}, idempotency_key="marks-1")
    ids = [event.id for event in await store.events()]
    assert ids == [event_id("marks-1", "mark", 0), event_id("marks-1", "mark", 1)]


async def test_the_same_key_twice_at_once_runs_the_command_once(
    micro_settings: Settings, store: TestStore
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
    micro_settings: Settings, store: TestStore
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
    micro_settings: Settings, store: TestStore
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
    micro_settings: Settings, store: TestStore
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
