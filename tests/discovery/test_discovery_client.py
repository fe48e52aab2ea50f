"""micro.services() and micro.discover(): the Python client of the NATS Services API."""

import asyncio
import time

import nats
import orjson
import pytest
from pydantic import BaseModel

from micro import DiscoveryTimeoutError, Micro, Settings, ValidationError
from micro.bus.connection import confirm
from micro.bus.subjects import command_subject
from micro.discovery import ServiceRecord
from micro.testing import NatsServer


class Order(BaseModel):
    item: str
    quantity: int = 1


def place(order: Order) -> str:
    return f"{order.quantity} x {order.item}"


async def test_services_lists_typed_records_with_endpoints_and_schemas(
    micro_settings: Settings,
) -> None:
    shop = Micro(micro_settings, service="shop", version="2.0.0", description="Sells")
    shop.add("place order", place)
    async with shop, Micro(micro_settings, service="caller") as caller:
        [record] = await caller.services()
    assert isinstance(record, ServiceRecord)
    assert (record.service, record.version, record.id) == ("shop", "2.0.0", shop.instance_id)
    assert record.description == "Sells"
    assert record.namespace == micro_settings.namespace
    endpoint = record.endpoint("place order")
    assert endpoint is not None
    assert endpoint.subject == command_subject(micro_settings.namespace, "place order")
    assert endpoint.request_schema == Order.model_json_schema()
    assert endpoint.reply_schema == {"type": "string"}
    assert endpoint.stats is None  # statistics only on demand


async def test_services_with_stats_reports_each_endpoints_counters(
    micro_settings: Settings,
) -> None:
    shop = Micro(micro_settings, service="shop").add("place order", place)
    async with shop, Micro(micro_settings, service="caller") as caller:
        for _ in range(4):
            await caller.act("place order", {"item": "tea"})
        [record] = await caller.services(stats=True)
    endpoint = record.endpoint("place order")
    assert endpoint is not None
    assert endpoint.stats is not None
    assert endpoint.stats.requests == 4
    assert endpoint.stats.errors == 0
    assert endpoint.stats.average_processing_time_ns > 0
    assert record.started is not None


async def test_services_keeps_its_own_namespace_unless_asked_for_all(
    micro_settings: Settings,
) -> None:
    other = micro_settings.model_copy(update={"namespace": micro_settings.namespace + "x"})
    async with (
        Micro(micro_settings, service="mine").add("a", lambda: 1),
        Micro(other, service="theirs").add("a", lambda: 2),
        Micro(micro_settings, service="caller") as caller,
    ):
        assert [r.service for r in await caller.services()] == ["mine"]
        everywhere = {(r.service, r.namespace) for r in await caller.services(all_namespaces=True)}
    assert ("mine", micro_settings.namespace) in everywhere
    assert ("theirs", other.namespace) in everywhere


async def test_services_by_name_lists_every_instance_of_that_service(
    micro_settings: Settings,
) -> None:
    first = Micro(micro_settings, service="worker").add("work", lambda: 1)
    second = Micro(micro_settings, service="worker").add("work", lambda: 1)
    async with first, second, Micro(micro_settings, service="boss").add("x", lambda: 0) as boss:
        records = await boss.services("worker")
    assert sorted(r.id for r in records) == sorted([first.instance_id, second.instance_id])


async def test_discover_waits_for_a_service_that_starts_in_another_process(
    spawn, micro_settings: Settings
) -> None:
    async with Micro(micro_settings, service="caller") as caller:
        waiting = asyncio.create_task(caller.discover(wait_for=["late"], timeout=20))
        await asyncio.to_thread(
            spawn,
            """
            micro = Micro(service="late")
            micro.add("hello", lambda: "hi")
            micro.hook("on_start", announce)
            micro.start()
            """,
        )
        records = await waiting
        assert "late" in {record.service for record in records}
        assert await caller.act("hello") == "hi"


async def test_discover_returns_at_once_when_every_service_already_runs(
    micro_settings: Settings,
) -> None:
    async with (
        Micro(micro_settings, service="bank").add("a", lambda: 1),
        Micro(micro_settings, service="auth").add("b", lambda: 1),
        Micro(micro_settings, service="caller") as caller,
    ):
        started = time.monotonic()
        records = await caller.discover(wait_for=["bank", "auth"], timeout=5)
        assert time.monotonic() - started < 3
    assert {"bank", "auth"} <= {record.service for record in records}


async def test_discover_times_out_naming_only_the_services_still_missing(
    micro_settings: Settings,
) -> None:
    async with (
        Micro(micro_settings, service="bank").add("a", lambda: 1),
        Micro(micro_settings, service="caller") as caller,
    ):
        started = time.monotonic()
        with pytest.raises(DiscoveryTimeoutError) as caught:
            await caller.discover(
                wait_for=["bank", "ghost", "auth"], timeout=3.0, delay=0.05, max_delay=0.2
            )
        elapsed = time.monotonic() - started
    assert caught.value.details["missing"] == ["auth", "ghost"]
    assert "auth, ghost" in str(caught.value)
    assert "bank" not in str(caught.value)
    assert isinstance(caught.value, TimeoutError)
    # Bounded: the deadline holds, whatever the backoff (generous upper bound: a busy CI).
    assert 3.0 <= elapsed < 6.0


@pytest.mark.parametrize(
    "options",
    [{"timeout": 0}, {"delay": -1}, {"max_delay": 0}, {"factor": 0.5}, {"timeout": "soon"}],
)
async def test_discover_refuses_nonsense_backoff_settings(
    micro_settings: Settings, options: dict
) -> None:
    async with Micro(micro_settings, service="caller") as caller:
        with pytest.raises(ValidationError):
            await caller.discover(wait_for=["x"], **options)


async def test_discovery_needs_a_connected_micro(micro_settings: Settings) -> None:
    with pytest.raises(RuntimeError, match="not connected"):
        await Micro(micro_settings).services()


async def test_malformed_answers_from_other_responders_are_skipped(
    nats_server: NatsServer, micro_settings: Settings
) -> None:
    namespace = {"micro.namespace": micro_settings.namespace}
    junk = [
        b"not json",
        b"[1, 2]",
        orjson.dumps({"type": "io.nats.micro.v1.info_response", "name": "no-id"}),
        orjson.dumps(
            {
                "type": "io.nats.micro.v1.info_response",
                "name": "odd",
                "id": "odd-1",
                "version": "1.0.0",
                "metadata": namespace,
                "endpoints": 5,
            }
        ),
        orjson.dumps(
            {
                "type": "io.nats.micro.v1.info_response",
                "name": "odder",
                "id": "odder-1",
                "version": "1.0.0",
                "metadata": namespace,
                "endpoints": [7, {"name": "e", "metadata": {"micro.request_schema": "{bad"}}],
            }
        ),
    ]
    rogue = await nats.connect(nats_server.url)

    async def answer(msg) -> None:
        for body in junk:
            await rogue.publish(msg.reply, body)

    await rogue.subscribe("$SRV.INFO", cb=answer)
    await confirm(rogue, 5)
    try:
        async with (
            Micro(micro_settings, service="fine").add("a", lambda: 1),
            Micro(micro_settings, service="caller") as caller,
        ):
            records = {record.service: record for record in await caller.services()}
    finally:
        await rogue.close()
    assert set(records) == {"fine", "odd", "odder"}
    assert records["odd"].endpoints == []
    [endpoint] = records["odder"].endpoints
    assert endpoint.name == "e"
    assert endpoint.request_schema is None
