"""A subscription whose consumer lives but delivers nothing starts a new one.

The soak found every instance's event handlers stuck for good after a run of node kills: the
heartbeats of their consumers kept coming, so the subscription never called them broken,
yet no event came (a consumer left on a replica that fell behind). A paused consumer
behaves the same way, heartbeats and all, so it stands in for that replica here.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from contextlib import aclosing

import nats
import orjson

from micro.eventstore.base import ANY
from micro.eventstore.jetstream import JetStreamEventStore
from micro.testing import NatsServer, wait_until
from micro.testing.eventstore_contract import new_event


async def pause_every_consumer(url: str, stream: str) -> int:
    client = await nats.connect(url)
    try:
        names = orjson.loads(
            (await client.request(f"$JS.API.CONSUMER.NAMES.{stream}", b"{}", timeout=5)).data
        )["consumers"]
        until = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
        for name in names:
            reply = await client.request(
                f"$JS.API.CONSUMER.PAUSE.{stream}.{name}",
                orjson.dumps({"pause_until": until}),
                timeout=5,
            )
            assert "error" not in orjson.loads(reply.data), reply.data
        return len(names)
    finally:
        await client.close()


async def test_a_subscription_whose_consumer_stops_delivering_catches_up(
    nats_server: NatsServer, micro_namespace: str
) -> None:
    async with JetStreamEventStore(url=nats_server.url, namespace=micro_namespace) as store:
        await store.append("account-1", [new_event("Opened")], ANY)
        received: list[int] = []

        async def follow() -> None:
            async with aclosing(store.subscribe(1)) as events:
                async for event in events:
                    received.append(event.position)

        following = asyncio.create_task(follow())
        try:
            await wait_until(lambda: received == [1], 10, "the first event")
            assert await pause_every_consumer(nats_server.url, f"{micro_namespace.upper()}_EVENTS")
            second = await store.append("account-1", [new_event("Deposited")], ANY)
            await wait_until(
                lambda: second.position in received, 40, "the event after the consumer stalled"
            )
        finally:
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)
