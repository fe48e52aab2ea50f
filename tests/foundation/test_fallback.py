"""micro.fallback: one service of a namespace answers the commands nobody serves."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from micro import ConfigError, Context, Micro, NotFoundError, ServiceNotFoundError, ValidationError


class Payment(BaseModel):
    amount: int


def removed(payload: object, ctx: Context) -> None:
    raise NotFoundError(f"{ctx.command!r} was removed in 2.0: use 'pay'")


async def test_a_command_nobody_serves_is_answered_by_the_fallback(micro_settings) -> None:
    shim = Micro(micro_settings, service="shim").fallback(removed)
    async with shim, Micro(micro_settings, service="caller") as caller:
        with pytest.raises(NotFoundError, match="'pay by cheque' was removed in 2.0"):
            await caller.act("pay by cheque", {"amount": 3})


async def test_the_fallback_may_answer_with_a_value(micro_settings) -> None:
    def upgrade(payload: dict, ctx: Context) -> dict:
        return {"asked": ctx.command, "payload": payload}

    async with (
        Micro(micro_settings, service="shim").fallback(upgrade),
        Micro(micro_settings, service="caller") as caller,
    ):
        assert await caller.act("old name", {"x": 1}) == {"asked": "old name", "payload": {"x": 1}}


async def test_served_commands_never_reach_the_fallback(micro_settings) -> None:
    reached: list[str] = []

    def record(payload: object, ctx: Context) -> str:
        reached.append(ctx.command)
        return "fallback"

    service = Micro(micro_settings, service="shop").add("price", lambda: 3).fallback(record)
    async with service, Micro(micro_settings, service="caller") as caller:
        assert [await caller.act("price") for _ in range(20)] == [3] * 20
        assert await caller.act("discount") == "fallback"
    assert reached == ["discount"]


async def test_without_a_fallback_nobody_serving_is_still_service_not_found(micro_settings) -> None:
    async with Micro(micro_settings, service="caller") as caller:
        with pytest.raises(ServiceNotFoundError):
            await caller.act("nobody serves this")


async def test_a_second_service_holding_a_fallback_fails_to_start(micro_settings) -> None:
    first = Micro(micro_settings, service="shim").fallback(removed)
    async with first:
        rival = Micro(micro_settings, service="other-shim").fallback(removed)
        with pytest.raises(ConfigError, match="'shim' already holds the fallback"):
            await rival.open()
        # more instances of the service that holds it are fine: they share the load
        async with Micro(micro_settings, service="shim").fallback(removed):
            pass


async def test_the_fallback_validates_an_annotated_payload(micro_settings) -> None:
    def pay(payment: Payment, ctx: Context) -> int:
        return payment.amount

    async with (
        Micro(micro_settings, service="shim").fallback(pay),
        Micro(micro_settings, service="caller") as caller,
    ):
        assert await caller.act("pay later", {"amount": 5}) == 5
        with pytest.raises(ValidationError, match="payload for 'pay later'.*amount"):
            await caller.act("pay later", {"amount": "lots"})


async def test_discovery_shows_the_fallback_and_the_gateway_gives_it_no_route(
    micro_settings,
) -> None:
    from micro.gateway import RouteTable

    async with (
        Micro(micro_settings, service="shim").add("keep", lambda: 1).fallback(removed) as shim
    ):
        records = await shim.services()
    kinds = {endpoint.name: endpoint.kind for record in records for endpoint in record.endpoints}
    assert kinds == {"keep": "command", "*": "fallback"}
    table = RouteTable.build(records, prefix="/api")
    assert table.commands == {"keep"}


def test_a_micro_takes_one_fallback() -> None:
    micro = Micro(service="shim").fallback(removed)
    with pytest.raises(ValueError, match="already has a fallback"):
        micro.fallback(removed)
