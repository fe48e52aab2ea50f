"""Discovery at scale: gathering that ends when the answers do, and a directory that follows it.

The slow instances here are a test service on raw NATS whose ``$SRV.INFO`` handler waits
before answering (or stays silent for a round): the way a loaded machine answers late.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import nats
import orjson
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from pydantic import BaseModel
from typer.testing import CliRunner

from micro import Micro, Settings
from micro.bus.connection import confirm
from micro.bus.subjects import command_subject
from micro.cli import app as cli
from micro.directory import Directory
from micro.discovery import LEAN_INFO_REQUEST, list_services
from micro.gateway import Gateway
from micro.testing import NatsServer, wait_until


class SlowInstances:
    """``count`` instances of ``service`` answering ``$SRV.INFO``: the first after ``delay``
    seconds, each next one ``spacing`` seconds later (or after the next of ``pauses``)."""

    def __init__(
        self,
        client: Client,
        namespace: str,
        *,
        service: str = "slow",
        count: int = 1,
        delay: float = 0.0,
        spacing: float = 0.0,
        pauses: list[float] | None = None,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.service = service
        self.ids = [f"{service}-{number}" for number in range(count)]
        self.delay = delay
        self.spacing = spacing
        self.pauses = pauses or []
        self._tasks: set[asyncio.Task[None]] = set()

    def info(self, instance: str) -> dict[str, Any]:
        return {
            "type": "io.nats.micro.v1.info_response",
            "name": self.service,
            "id": instance,
            "version": "1.0.0",
            "metadata": {"micro.namespace": self.namespace},
            "endpoints": [
                {
                    "name": "hello",
                    "subject": command_subject(self.namespace, "hello"),
                    "queue_group": self.service,
                    "metadata": {"micro.command": "hello", "micro.kind": "command"},
                }
            ],
        }

    async def __aenter__(self) -> SlowInstances:
        for subject in ("$SRV.INFO", f"$SRV.INFO.{self.service}", f"$SRV.INFO.{self.service}.*"):
            await self.client.subscribe(subject, cb=self._on_request)
        await confirm(self.client, 5)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    async def _on_request(self, msg: Msg) -> None:
        if not msg.reply:
            return
        parts = msg.subject.split(".")
        ids = [parts[3]] if len(parts) == 4 else self.ids
        task = asyncio.create_task(self._answer(msg.reply, [i for i in ids if i in self.ids]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, inbox: str, ids: list[str]) -> None:
        await asyncio.sleep(self.delay)
        for number, instance in enumerate(ids):
            if number:
                pauses = self.pauses
                await asyncio.sleep(pauses[number - 1] if number <= len(pauses) else self.spacing)
            await self.client.publish(inbox, orjson.dumps(self.info(instance)))
            await self.client.flush()


@pytest.fixture
async def raw(nats_server: NatsServer):
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


@pytest.fixture
async def asker(nats_server: NatsServer):
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


async def test_answers_that_keep_trickling_in_are_all_counted(
    raw: Client, asker: Client, micro_settings: Settings
) -> None:
    # 20 instances answering over 1.9 s: a fixed quarter-second window saw three of them.
    async with SlowInstances(raw, micro_settings.namespace, count=20, spacing=0.1) as slow:
        found = await list_services(asker, namespace=micro_settings.namespace, gap=0.5, deadline=30)
    assert sorted(record.id for record in found) == sorted(slow.ids)
    assert not found.partial


async def test_pauses_that_grow_widen_the_quiet_gap(
    raw: Client, asker: Client, micro_settings: Settings
) -> None:
    # The last pause is longer than the gap, but not than twice the pause before it: on a
    # loaded machine that is how answers come, and the look waits for them.
    async with SlowInstances(raw, micro_settings.namespace, count=3, pauses=[0.5, 0.7]) as slow:
        found = await list_services(
            asker, namespace=micro_settings.namespace, gap=0.55, deadline=30
        )
    assert sorted(record.id for record in found) == slow.ids
    assert not found.partial


async def test_an_instance_whose_handler_waits_is_counted_within_the_deadline(
    raw: Client, asker: Client, micro_settings: Settings
) -> None:
    async with (
        Micro(micro_settings, service="quick").add("a", lambda: 1),
        SlowInstances(raw, micro_settings.namespace, delay=0.8) as slow,
    ):
        found = await list_services(asker, namespace=micro_settings.namespace, gap=2.5, deadline=30)
    assert {record.service for record in found} == {"quick", "slow"}
    assert [r.id for r in found if r.service == "slow"] == slow.ids
    assert not found.partial


async def test_a_deadline_too_short_for_the_answers_flags_the_result_partial(
    raw: Client, asker: Client, micro_settings: Settings
) -> None:
    async with SlowInstances(raw, micro_settings.namespace, count=20, spacing=0.1):
        found = await list_services(
            asker, namespace=micro_settings.namespace, gap=1.0, deadline=0.3
        )
    assert found.partial
    assert len(found) < 20


async def test_micro_services_prints_a_line_when_the_answer_is_partial(
    raw: Client, micro_settings: Settings
) -> None:
    env = {
        "NATS_URL": micro_settings.nats_url,
        "MICRO_NAMESPACE": micro_settings.namespace,
        "COLUMNS": "200",
    }
    async with SlowInstances(raw, micro_settings.namespace, count=20, spacing=0.1):
        cut = await asyncio.to_thread(
            CliRunner().invoke, cli, ["services", "--wait", "0.3", "--gap", "1"], env=env
        )
        whole = await asyncio.to_thread(
            CliRunner().invoke, cli, ["services", "--gap", "1"], env=env
        )
    assert cut.exit_code == 0, cut.output
    assert "partial" in cut.output
    assert whole.exit_code == 0, whole.output
    assert "partial" not in whole.output
    assert "20" in whole.output  # instances column


async def test_a_known_instance_that_answers_late_is_awaited_not_dropped(
    raw: Client, asker: Client, micro_settings: Settings
) -> None:
    # One missed look would drop it: it stays only because the look waited for it.
    directory = Directory(
        asker, namespace=micro_settings.namespace, gap=0.2, deadline=30, missed_rounds=1
    )
    async with SlowInstances(raw, micro_settings.namespace) as slow:
        assert [record.id for record in await directory.look()] == slow.ids
        slow.delay = 1.0  # five quiet gaps
        assert [record.id for record in await directory.look()] == slow.ids
    assert not directory.partial


async def test_the_directory_keeps_an_instance_through_missed_rounds_then_lets_it_go(
    raw: Client, asker: Client, micro_settings: Settings
) -> None:
    # The deadline leaves the quick instance ample time: a look is partial (and counts no
    # misses) only if an answer was still arriving when it ended.
    directory = Directory(
        asker, namespace=micro_settings.namespace, gap=0.1, deadline=1.5, missed_rounds=3
    )
    async with (
        Micro(micro_settings, service="quick").add("a", lambda: 1),
        SlowInstances(raw, micro_settings.namespace) as slow,
    ):

        async def services() -> list[str]:
            return [record.service for record in await directory.look()]

        assert await services() == ["quick", "slow"]
        slow.delay = 5.0  # after the deadline: the look misses it
        assert await services() == ["quick", "slow"]
        assert await services() == ["quick", "slow"]
        assert await services() == ["quick"]
        assert not directory.partial


async def test_the_gateway_keeps_routes_when_one_round_misses_an_instance(
    raw: Client, micro_settings: Settings
) -> None:
    settings = micro_settings.model_copy(
        update={"discovery_gap": 0.1, "discovery_deadline": 1.5, "discovery_missed_rounds": 2}
    )
    async with (
        Micro(settings, service="quick").add("a", lambda: 1),
        Micro(settings, service="gateway") as micro,
        SlowInstances(raw, settings.namespace) as slow,
    ):
        gateway = Gateway(micro)
        await gateway.refresh()
        assert gateway.table.match("POST", "/api/slow/hello") is not None
        slow.delay = 5.0  # after the deadline: the look misses it
        await gateway.refresh()
        assert gateway.table.match("POST", "/api/slow/hello") is not None
        await gateway.refresh()
        assert gateway.table.match("POST", "/api/slow/hello") is None


async def test_instances_show_on_their_start_and_leave_on_their_stop_without_a_look(
    asker: Client, micro_settings: Settings
) -> None:
    directory = Directory(asker, namespace=micro_settings.namespace)
    await directory.start()
    try:
        assert await directory.look() == []
        shop = Micro(micro_settings, service="shop").add("buy", lambda: 1)
        async with shop:
            await wait_until(lambda: directory.services() == {"shop"}, what="started shown")
            [record] = directory.records
            assert record.id == shop.instance_id
            assert record.endpoint("buy") is not None
        await wait_until(lambda: directory.records == [], what="stopped gone")
        assert directory.rounds == 1
    finally:
        await directory.stop()


class Item(BaseModel):
    name: str


async def test_looks_ask_lean_answers_and_keep_the_schemas_fetched_once(
    asker: Client, micro_settings: Settings
) -> None:
    def buy(item: Item) -> str:
        return item.name

    async with Micro(micro_settings, service="shop").add("buy", buy):
        lean = await asker.request("$SRV.INFO.shop", LEAN_INFO_REQUEST, timeout=5)
        full = await asker.request("$SRV.INFO.shop", b"", timeout=5)
        [lean_endpoint] = orjson.loads(lean.data)["endpoints"]
        [full_endpoint] = orjson.loads(full.data)["endpoints"]
        assert "micro.request_schema" not in lean_endpoint["metadata"]
        assert "micro.request_schema" in full_endpoint["metadata"]
        assert len(lean.data) < len(full.data)

        directory = Directory(asker, namespace=micro_settings.namespace)
        for _ in range(3):
            [record] = await directory.look()
            endpoint = record.endpoint("buy")
            assert endpoint is not None
            assert endpoint.request_schema == Item.model_json_schema()


async def test_a_look_with_nothing_serving_ends_at_once_and_whole(
    micro_settings: Settings,
) -> None:
    # A Micro that serves nothing stays off $SRV, so the server answers "no responders"
    # instead of the look waiting out its (here very long) deadline.
    async with Micro(micro_settings, service="caller") as caller:
        started = asyncio.get_running_loop().time()
        found = await caller.services(deadline=120)
        elapsed = asyncio.get_running_loop().time() - started
    assert found == []
    assert not found.partial
    assert elapsed < 60
