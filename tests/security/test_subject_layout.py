"""Event subjects carry the owning service; streams stored under the first layout still work."""

from __future__ import annotations

import nats
from nats.aio.client import Client

from micro.eventstore import NO_STREAM, JetStreamEventStore, NewEvent
from micro.testing import NatsServer


async def _last_subject(server: NatsServer, stream_name: str, subject: str) -> str:
    client: Client = await nats.connect(server.url)
    try:
        message = await client.jetstream().get_last_msg(stream_name, subject)
        return str(message.subject)
    finally:
        await client.close()


async def test_a_service_appends_under_its_own_name_and_reads_plain_stream_names(
    nats_server: NatsServer, micro_namespace: str
) -> None:
    async with JetStreamEventStore(
        url=nats_server.url, namespace=micro_namespace, owner="bank"
    ) as store:
        await store.append("account-1", [NewEvent("AccountOpened", {"id": "1"})], NO_STREAM)
        subject = f"{micro_namespace}.ev.bank.account-1"
        assert await _last_subject(nats_server, store.stream_name, subject) == subject
        [event] = await store.read("account-1")
        assert event.stream == "account-1"
        assert [e.stream async for e in store.read_all()] == ["account-1"]
        assert await store.stream_version("account-1") == 0


async def test_two_services_may_use_the_same_stream_name_without_mixing_them(
    nats_server: NatsServer, micro_namespace: str
) -> None:
    url, namespace = nats_server.url, micro_namespace
    async with (
        JetStreamEventStore(url=url, namespace=namespace, owner="bank") as bank,
        JetStreamEventStore(url=url, namespace=namespace, owner="shop") as shop,
    ):
        await bank.append("ledger", [NewEvent("Opened", {})], NO_STREAM)
        await shop.append("ledger", [NewEvent("Opened", {})], NO_STREAM)
        assert await bank.stream_version("ledger") == 0
        assert await shop.stream_version("ledger") == 0


async def test_streams_of_the_first_layout_are_still_read_and_appended_in_place(
    nats_server: NatsServer, micro_namespace: str
) -> None:
    url, namespace = nats_server.url, micro_namespace
    async with JetStreamEventStore(url=url, namespace=namespace) as old:
        await old.append("account-1", [NewEvent("AccountOpened", {})], NO_STREAM)
    async with JetStreamEventStore(url=url, namespace=namespace, owner="bank") as store:
        # The stream exists already, in the first layout...
        assert await store.stream_version("account-1") == 0
        result = await store.append("account-1", [NewEvent("Deposited", {"amount": 5})], 0)
        assert result.version == 1
        legacy = f"{namespace}.ev.account-1"
        assert await _last_subject(nats_server, store.stream_name, legacy) == legacy
        assert [e.type for e in await store.read("account-1")] == ["AccountOpened", "Deposited"]
        # ...and a new stream takes the owner's layout.
        await store.append("account-2", [NewEvent("AccountOpened", {})], NO_STREAM)
        owned = f"{namespace}.ev.bank.account-2"
        assert await _last_subject(nats_server, store.stream_name, owned) == owned
        streams = [event.stream async for event in store.read_all()]
        assert streams == ["account-1", "account-1", "account-2"]
