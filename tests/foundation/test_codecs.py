"""msgpack beside JSON: the caller names its codec in a header and is answered in it."""

from __future__ import annotations

import msgspec
import nats
import orjson
import pytest
from pydantic import BaseModel

from micro import BadRequestError, Context, InternalError, Micro, RuleViolation, Settings
from micro.bus import headers as h
from micro.bus.subjects import command_subject


class Order(BaseModel):
    item: str
    quantity: int


def serve(settings: Settings) -> Micro:
    service = Micro(settings, service="shop")

    def total(order: Order) -> dict[str, object]:
        return {"item": order.item, "total": order.quantity * 3}

    def blob() -> bytes:
        return b"\x00\xff"

    async def count(limit: int, ctx: Context) -> int:
        for number in range(limit):
            await ctx.send({"n": number})
        return limit

    def refuse() -> None:
        raise RuleViolation("closed on Sundays")

    service.add("total", total)
    service.add("blob", blob)
    service.add("count", count)
    service.add("refuse", refuse)
    return service


async def test_a_msgpack_caller_gets_the_same_values_as_a_json_caller(micro_settings) -> None:
    packed = micro_settings.model_copy(update={"codec": "msgpack"})
    async with (
        serve(micro_settings),
        Micro(packed) as msgpack_caller,
        Micro(micro_settings) as json_caller,
    ):
        order = {"item": "tea", "quantity": 2}
        assert await msgpack_caller.act("total", order) == {"item": "tea", "total": 6}
        assert await json_caller.act("total", order) == {"item": "tea", "total": 6}


async def test_msgpack_carries_bytes_that_json_cannot(micro_settings) -> None:
    packed = micro_settings.model_copy(update={"codec": "msgpack"})
    async with (
        serve(micro_settings),
        Micro(packed) as msgpack_caller,
        Micro(micro_settings) as json_caller,
    ):
        assert await msgpack_caller.act("blob") == b"\x00\xff"
        with pytest.raises(InternalError, match="cannot be sent"):
            await json_caller.act("blob")


async def test_the_reply_is_msgpack_on_the_wire_with_the_header(micro_settings) -> None:
    async with serve(micro_settings):
        client = await nats.connect(micro_settings.nats_url)
        try:
            reply = await client.request(
                command_subject(micro_settings.namespace, "total"),
                msgspec.msgpack.encode({"item": "tea", "quantity": 1}),
                headers={h.CODEC: "msgpack"},
                timeout=5,
            )
        finally:
            await client.close()
    assert reply.headers is not None
    assert reply.headers[h.CODEC] == "msgpack"
    assert msgspec.msgpack.decode(reply.data)["total"] == 3


async def test_streamed_messages_follow_the_request_codec(micro_settings) -> None:
    packed = micro_settings.model_copy(update={"codec": "msgpack"})
    async with serve(micro_settings), Micro(packed) as caller:
        received = [message async for message in caller.act_stream("count", 3)]
    assert received == [{"n": 0}, {"n": 1}, {"n": 2}, 3]


async def test_an_error_reply_stays_json_and_keeps_its_type(micro_settings) -> None:
    packed = micro_settings.model_copy(update={"codec": "msgpack"})
    async with serve(micro_settings), Micro(packed) as caller:
        with pytest.raises(RuleViolation, match="closed on Sundays"):
            await caller.act("refuse")
        client = await nats.connect(micro_settings.nats_url)
        try:
            reply = await client.request(
                command_subject(micro_settings.namespace, "refuse"),
                b"",
                headers={h.CODEC: "msgpack"},
                timeout=5,
            )
        finally:
            await client.close()
    assert orjson.loads(reply.data)["error"]["code"] == "rule_violation"


@pytest.mark.parametrize(
    ("codec", "body", "named"),
    [
        ("msgpack", b"\xc1", "not valid msgpack"),  # 0xc1 is never used in msgpack
        ("cbor", b"\xa0", "unknown codec 'cbor'"),
    ],
)
async def test_a_body_that_does_not_decode_is_a_400_naming_the_codec(
    micro_settings, codec: str, body: bytes, named: str
) -> None:
    async with serve(micro_settings):
        client = await nats.connect(micro_settings.nats_url)
        try:
            reply = await client.request(
                command_subject(micro_settings.namespace, "total"),
                body,
                headers={h.CODEC: codec},
                timeout=5,
            )
        finally:
            await client.close()
    assert reply.headers is not None
    assert reply.headers[h.SERVICE_ERROR_CODE] == "400"
    error = orjson.loads(reply.data)["error"]
    assert error["code"] == BadRequestError.code
    assert named in error["message"]
    assert error["details"]["codec"] == codec


def test_the_codec_setting_rejects_an_unknown_codec() -> None:
    with pytest.raises(ValueError, match="codec"):
        Settings(codec="cbor")
