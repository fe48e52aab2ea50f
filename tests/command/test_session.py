"""Sessions: calls that read their own writes, whichever instance serves each."""

from __future__ import annotations

import asyncio
from typing import Any

from test_cross_process import BANK_ENVIRONMENT, BANK_SOURCE

from micro import Context, Micro, Settings
from tests.command.support import PASSWORD, LaggingStore, tally_service


def echo(payload: Any, ctx: Context) -> dict[str, Any]:
    return {"min_position": ctx.min_position, "meta": ctx.meta}


async def test_a_session_sends_the_newest_position_it_saw_and_its_meta(
    micro_settings: Settings, store: LaggingStore
) -> None:
    service = tally_service(micro_settings, store)
    service.add("echo", echo)
    async with service, Micro(micro_settings) as client:
        session = client.session(meta={"token": "t"})
        assert await session.act("echo") == {"min_position": None, "meta": {"token": "t"}}
        added = await session.request("add", {"id": "a", "amount": 1})
        await client.act("add", {"id": "b", "amount": 1})  # not through the session
        assert session.position == added.position == 1
        assert await session.act("echo", meta={"extra": 1}) == {
            "min_position": 1,
            "meta": {"token": "t", "extra": 1},
        }
        assert (await session.act("echo", min_position=2))["min_position"] == 2
        assert session.position == 1  # a reply without a position changes nothing
        assert (await client.session().act("echo"))["min_position"] is None


# A bank instance that learns other instances' events 20 ms late (a busy replica).
LAGGING_BANK_SOURCE = BANK_SOURCE.replace(
    "import runpy\n",
    """import runpy
from micro.eventstore.jetstream import JetStreamEventStore
following = JetStreamEventStore.subscribe
async def lagging(self, from_position=0):
    async for event in following(self, from_position):
        await asyncio.sleep(0.02)
        yield event
JetStreamEventStore.subscribe = lagging
""",
)


async def test_a_customer_session_over_two_bank_instances_always_reads_its_writes(
    spawn, micro_settings: Settings
) -> None:
    assert "lagging" in LAGGING_BANK_SOURCE
    spawn(BANK_SOURCE, **BANK_ENVIRONMENT)
    spawn(LAGGING_BANK_SOURCE, **BANK_ENVIRONMENT)

    async def customer(client: Micro, login: str) -> int:
        # Each call may land on either instance; none passes a position by hand.
        session = client.session()
        await session.act(
            "auth signup",
            {
                "name": login.title(),
                "login": login,
                "password": PASSWORD,
                "password_confirmation": PASSWORD,
            },
        )
        login_reply = await session.act(
            "auth login", {"login": login, "password": PASSWORD, "device": "test"}
        )
        session.meta["token"] = login_reply["token"]
        await session.act("open account", {"id": login, "owner": login})
        for amount in (5, 7):
            await session.act("deposit", {"id": login, "amount": amount})
        balance: int = (await session.act("account balance", {"id": login}))["balance"]
        return balance

    async with Micro(micro_settings) as client:
        balances = await asyncio.gather(*(customer(client, f"customer{n}") for n in range(6)))
    assert balances == [12] * 6
