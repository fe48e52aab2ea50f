"""The NATS Services API (ADR-32) as a raw NATS client sees it."""

import asyncio

import nats
import orjson
import pytest
from nats.micro.service import ServiceInfo, ServicePing, ServiceStats
from pydantic import BaseModel

from micro import ConfigError, Context, Micro, NotFoundError, Settings
from micro.bus.subjects import command_subject
from micro.testing import NatsServer

WINDOW = 1.0  # whole-list assertions: every responder must have answered


async def gather(server: NatsServer, subject: str, namespace: str, body: bytes = b"") -> list[dict]:
    """Replies to one request, gathered on a fresh inbox, kept when of ``namespace``."""
    client = await nats.connect(server.url)
    try:
        inbox = client.new_inbox()
        subscription = await client.subscribe(inbox)
        await client.publish(subject, body, reply=inbox)
        replies = []
        deadline = asyncio.get_running_loop().time() + WINDOW
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            try:
                msg = await subscription.next_msg(timeout=left)
            except nats.errors.TimeoutError:
                break
            if msg.headers and msg.headers.get("Status") == "503":
                break  # no responders: nobody subscribes to the subject at all
            replies.append(orjson.loads(msg.data))
        return [r for r in replies if r["metadata"].get("micro.namespace") == namespace]
    finally:
        await client.close()


class Deposit(BaseModel):
    account: str
    amount: int


class Balance(BaseModel):
    account: str
    balance: int


def deposit(request: Deposit) -> Balance:
    return Balance(account=request.account, balance=request.amount)


def untyped(request):
    return request


async def test_ping_info_and_stats_answer_with_the_adr32_shapes(
    nats_server: NatsServer, micro_settings: Settings
) -> None:
    service = Micro(
        micro_settings,
        service="bank",
        version="1.2.3-beta.1",
        description="Keeps accounts",
        metadata={"team": "payments"},
    ).add("deposit", deposit)
    async with service:
        namespace = micro_settings.namespace
        [ping] = await gather(nats_server, "$SRV.PING", namespace)
        [info] = await gather(nats_server, "$SRV.INFO", namespace)
        [stats] = await gather(nats_server, "$SRV.STATS", namespace)

    identity = {
        "name": "bank",
        "id": service.instance_id,
        "version": "1.2.3-beta.1",
        "metadata": {"team": "payments", "micro.namespace": namespace},
    }
    assert ping == {"type": "io.nats.micro.v1.ping_response", **identity}
    assert info["type"] == "io.nats.micro.v1.info_response"
    assert {key: info[key] for key in identity} == identity
    assert info["description"] == "Keeps accounts"
    [endpoint] = info["endpoints"]
    assert endpoint["name"] == "deposit"
    assert endpoint["subject"] == command_subject(namespace, "deposit")
    assert endpoint["queue_group"] == "bank"
    assert stats["type"] == "io.nats.micro.v1.stats_response"
    assert {key: stats[key] for key in identity} == identity
    assert set(stats["endpoints"][0]) == {
        "name",
        "subject",
        "queue_group",
        "num_requests",
        "num_errors",
        "last_error",
        "processing_time",
        "average_processing_time",
        "data",
    }
    # nats.py's own ADR-32 implementation reads all three replies
    assert ServicePing.from_dict(ping).id == service.instance_id
    assert ServiceInfo.from_dict(info).endpoints[0].queue_group == "bank"
    assert ServiceStats.from_dict(stats).started.year >= 2024


async def test_name_and_id_forms_reach_only_that_service_or_instance(
    nats_server: NatsServer, micro_settings: Settings
) -> None:
    first = Micro(micro_settings, service="alpha").add("a", untyped)
    second = Micro(micro_settings, service="alpha").add("a", untyped)
    other = Micro(micro_settings, service="beta").add("b", untyped)
    namespace = micro_settings.namespace
    async with first, second, other:
        for verb in ("PING", "INFO", "STATS"):
            everyone = await gather(nats_server, f"$SRV.{verb}", namespace)
            by_name = await gather(nats_server, f"$SRV.{verb}.alpha", namespace)
            by_id = await gather(nats_server, f"$SRV.{verb}.alpha.{second.instance_id}", namespace)
            assert sorted(r["name"] for r in everyone) == ["alpha", "alpha", "beta"]
            assert sorted(r["id"] for r in by_name) == sorted(
                [first.instance_id, second.instance_id]
            )
            assert [r["id"] for r in by_id] == [second.instance_id]


async def test_endpoint_metadata_carries_the_command_name_kind_and_json_schemas(
    nats_server: NatsServer, micro_settings: Settings
) -> None:
    service = (
        Micro(micro_settings, service="bank")
        .add("make deposit", deposit, metadata={"owner": "ana"}, idempotent=True)
        .add("echo.anything", untyped)
    )
    async with service:
        [info] = await gather(nats_server, "$SRV.INFO", micro_settings.namespace)
    endpoints = {e["metadata"]["micro.command"]: e for e in info["endpoints"]}
    typed, plain = endpoints["make deposit"], endpoints["echo.anything"]
    # ADR-32 endpoint names allow only letters, digits, '-' and '_'
    assert typed["name"] == "make_deposit"
    assert plain["name"] == "echo_anything"
    assert typed["metadata"]["micro.kind"] == "command"
    assert typed["metadata"]["owner"] == "ana"
    assert typed["metadata"]["micro.idempotent"] == "true"
    assert orjson.loads(typed["metadata"]["micro.request_schema"]) == Deposit.model_json_schema()
    assert orjson.loads(typed["metadata"]["micro.reply_schema"]) == Balance.model_json_schema()
    assert all(isinstance(value, str) for value in typed["metadata"].values())
    assert "micro.request_schema" not in plain["metadata"]
    assert "micro.reply_schema" not in plain["metadata"]


async def test_stats_count_requests_errors_and_processing_time(
    nats_server: NatsServer, micro_settings: Settings
) -> None:
    async def lookup(request: dict, ctx: Context) -> str:
        if request["id"] == "missing":
            raise NotFoundError("no account 'missing'")
        await asyncio.sleep(0.002)  # measurable processing time
        return request["id"]

    async with (
        Micro(micro_settings, service="bank").add("lookup", lookup),
        Micro(micro_settings, service="caller") as caller,
    ):
        for _ in range(3):
            await caller.act("lookup", {"id": "a1"})
        for _ in range(2):
            with pytest.raises(NotFoundError):
                await caller.act("lookup", {"id": "missing"})
        [stats] = await gather(nats_server, "$SRV.STATS.bank", micro_settings.namespace)
    [endpoint] = stats["endpoints"]
    assert endpoint["num_requests"] == 5
    assert endpoint["num_errors"] == 2
    assert endpoint["last_error"] == "not_found: no account 'missing'"
    assert endpoint["processing_time"] >= 3 * 2_000_000
    assert endpoint["average_processing_time"] == endpoint["processing_time"] // 5


async def test_a_micro_that_serves_nothing_stays_out_of_discovery(
    nats_server: NatsServer, micro_settings: Settings
) -> None:
    async with Micro(micro_settings, service="client-only"):
        assert await gather(nats_server, "$SRV.PING", micro_settings.namespace) == []


async def test_a_service_with_only_event_listeners_is_discoverable(
    nats_server: NatsServer, micro_settings: Settings
) -> None:
    async with Micro(micro_settings, service="listener").on("tick", untyped):
        [ping] = await gather(nats_server, "$SRV.PING", micro_settings.namespace)
    assert ping["name"] == "listener"


async def test_a_closed_service_leaves_discovery(
    nats_server: NatsServer, micro_settings: Settings
) -> None:
    service = Micro(micro_settings, service="brief").add("a", untyped)
    async with service:
        assert len(await gather(nats_server, "$SRV.PING", micro_settings.namespace)) == 1
    assert await gather(nats_server, "$SRV.PING", micro_settings.namespace) == []


async def test_malformed_srv_requests_get_no_reply_and_the_service_keeps_answering(
    nats_server: NatsServer, micro_settings: Settings
) -> None:
    namespace = micro_settings.namespace
    service = Micro(micro_settings, service="sturdy").add("a", untyped)
    async with service:
        client = await nats.connect(nats_server.url)
        try:
            # no inbox to answer to: must not crash the responder
            await client.publish("$SRV.INFO.sturdy", b"")
            await client.flush()
        finally:
            await client.close()
        assert await gather(nats_server, "$SRV.BOGUS", namespace) == []
        assert await gather(nats_server, "$SRV.BOGUS.sturdy", namespace) == []
        assert await gather(nats_server, "$SRV.ping.sturdy", namespace) == []
        assert await gather(nats_server, "$SRV.INFO.sturdy.not-its-id", namespace) == []
        # the body is never read: garbage in it changes nothing
        [ping] = await gather(nats_server, "$SRV.PING.sturdy", namespace, b"\xff{not json")
        assert ping["id"] == service.instance_id
        async with Micro(micro_settings, service="caller") as caller:
            assert await caller.act("a", {"still": "serving"}) == {"still": "serving"}


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"service": "bank account"}, "service"),
        ({"service": "bank.v2"}, "service"),
        ({"service": ""}, "service"),
        ({"version": "1.2"}, "semantic version"),
        ({"version": "v1.2.3"}, "semantic version"),
        ({"metadata": {"team": 7}}, "strings"),
        ({"metadata": "not json"}, "not a JSON object"),
        ({"metadata": '["a list"]'}, "strings"),
        ({"metadata": {"micro.namespace": "x"}}, "reserved"),
    ],
)
def test_invalid_service_identity_is_refused_at_construction(
    micro_settings: Settings, overrides: dict, reason: str
) -> None:
    with pytest.raises(ConfigError, match=reason):
        Micro(micro_settings, **overrides)


def test_metadata_from_the_environment_must_be_a_json_object_of_strings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MICRO_METADATA", "{oops")
    with pytest.raises(ConfigError, match="metadata is not a JSON object"):
        Micro()
    monkeypatch.setenv("MICRO_METADATA", '{"team": "payments"}')
    assert Micro().settings.metadata == {"team": "payments"}


def test_endpoint_metadata_must_be_strings_and_not_use_micro_keys(
    micro_settings: Settings,
) -> None:
    micro = Micro(micro_settings)
    with pytest.raises(TypeError, match="strings to strings"):
        micro.add("a", untyped, metadata={"retries": 3})
    with pytest.raises(ValueError, match="reserved"):
        micro.add("b", untyped, metadata={"micro.kind": "view"})
    assert micro.endpoints == {}
