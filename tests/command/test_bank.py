"""samples/bank end to end: accounts, overdraft protection, transfers with compensation."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from micro import ConcurrencyError, Micro, RuleViolation, Settings
from micro.eventstore.base import ANY, NewEvent
from micro.testing import wait_until as until
from tests.command.support import LaggingStore, bank_service, customer

pytestmark = pytest.mark.usefixtures("bank_environment")


async def finished(client: Micro, transfer: str, timeout: float = 10) -> dict[str, Any]:
    """The transfer once its process completed or failed it."""
    status: dict[str, Any] = {}

    async def done() -> bool:
        status.update(await client.act("transfer status", {"id": transfer}))
        return status["status"] in ("completed", "failed")

    await until(done, timeout, what=f"transfer {transfer} to finish")
    return status


async def balances(client: Micro) -> dict[str, int]:
    return {account["id"]: account["balance"] for account in await client.act("accounts")}


async def open_accounts(client: Micro, meta: dict[str, Any], **deposits: int) -> None:
    for account, amount in deposits.items():
        await client.act("open account", {"id": account, "owner": "ann"}, meta=meta)
        if amount:
            await client.act("deposit", {"id": account, "amount": amount}, meta=meta)


async def test_a_transfer_moves_the_money(micro_settings: Settings, store: LaggingStore) -> None:
    async with bank_service(store), Micro(micro_settings) as client:
        meta = await customer(client)
        await open_accounts(client, meta, a1=100, a2=0)
        requested = await client.act(
            "transfer", {"id": "t1", "source": "a1", "target": "a2", "amount": 30}, meta=meta
        )
        assert requested["status"] == "requested"
        assert (await finished(client, "t1"))["status"] == "completed"
        assert await balances(client) == {"a1": 70, "a2": 30}


async def test_a_transfer_the_source_cannot_pay_fails_and_moves_nothing(
    micro_settings: Settings, store: LaggingStore
) -> None:
    async with bank_service(store), Micro(micro_settings) as client:
        meta = await customer(client)
        await open_accounts(client, meta, a1=10, a2=0)
        await client.act(
            "transfer", {"id": "t1", "source": "a1", "target": "a2", "amount": 30}, meta=meta
        )
        status = await finished(client, "t1")
        assert await balances(client) == {"a1": 10, "a2": 0}
    assert status["status"] == "failed"
    assert "insufficient funds" in status["reason"]


async def test_a_credit_refused_is_compensated_by_a_refund(
    micro_settings: Settings, store: LaggingStore
) -> None:
    async with bank_service(store), Micro(micro_settings) as client:
        meta = await customer(client)
        await open_accounts(client, meta, a1=100, a2=999_999_990)
        await client.act(
            "transfer", {"id": "t1", "source": "a1", "target": "a2", "amount": 20}, meta=meta
        )
        status = await finished(client, "t1")
        assert await balances(client) == {"a1": 100, "a2": 999_999_990}
    assert status["status"] == "failed"
    assert "exceed the limit" in status["reason"]
    a1 = [(e.type, e.data.get("amount")) for e in await store.events() if e.stream == "account-a1"]
    assert a1 == [("AccountOpened", None), ("Deposited", 100), ("Withdrawn", 20), ("Deposited", 20)]


async def test_bad_transfers_are_refused_up_front(
    micro_settings: Settings, store: LaggingStore
) -> None:
    async with bank_service(store), Micro(micro_settings) as client:
        meta = await customer(client)
        await open_accounts(client, meta, a1=5)
        with pytest.raises(RuleViolation, match="account nowhere does not exist"):
            await client.act(
                "transfer",
                {"id": "t1", "source": "a1", "target": "nowhere", "amount": 1},
                meta=meta,
            )
        with pytest.raises(ValueError, match="different accounts"):
            await client.act(
                "transfer", {"id": "t2", "source": "a1", "target": "a1", "amount": 1}, meta=meta
            )


async def test_many_concurrent_transfers_conserve_the_money(
    micro_settings: Settings, store: LaggingStore
) -> None:
    accounts = {f"a{n}": 100 for n in range(5)}
    rng = random.Random(7)
    async with bank_service(store), Micro(micro_settings) as client:
        meta = await customer(client)
        await open_accounts(client, meta, **accounts)
        plans = []
        for number in range(40):
            source, target = rng.sample(sorted(accounts), 2)
            plans.append(
                {
                    "id": f"t{number}",
                    "source": source,
                    "target": target,
                    "amount": rng.randint(1, 80),
                }
            )
        await asyncio.gather(*(client.act("transfer", plan, meta=meta) for plan in plans))
        outcomes = [await finished(client, plan["id"], 20) for plan in plans]
        final = await balances(client)
    assert sum(final.values()) == sum(accounts.values())
    assert min(final.values()) >= 0
    expected = dict(accounts)
    for plan, outcome in zip(plans, outcomes, strict=True):
        if outcome["status"] == "completed":
            expected[plan["source"]] -= plan["amount"]
            expected[plan["target"]] += plan["amount"]
    assert final == expected


async def test_a_transfer_left_pending_by_a_crash_is_carried_out_after_the_restart(
    micro_settings: Settings, store: LaggingStore
) -> None:
    # What a bank that crashed right after accepting the transfer left in the store.
    opened = {"recorded_at": "2025-01-01T00:00:00Z"}
    await store.append(
        "account-a1", [NewEvent("AccountOpened", {"id": "a1", "owner": "ann"}, opened)], ANY
    )
    await store.append(
        "account-a2", [NewEvent("AccountOpened", {"id": "a2", "owner": "bob"}, opened)], ANY
    )
    await store.append("account-a1", [NewEvent("Deposited", {"id": "a1", "amount": 50})], ANY)
    await store.append(
        "transfer-t1",
        [NewEvent("TransferRequested", {"id": "t1", "source": "a1", "target": "a2", "amount": 50})],
        ANY,
    )
    async with bank_service(store), Micro(micro_settings) as client:
        assert (await finished(client, "t1"))["status"] == "completed"
        assert await balances(client) == {"a1": 0, "a2": 50}


async def test_concurrent_withdrawals_over_two_instances_never_overdraw(
    micro_settings: Settings, store: LaggingStore
) -> None:
    async with (
        bank_service(store) as one,
        bank_service(store) as two,
        Micro(micro_settings) as client,
    ):
        meta = await customer(client)
        await open_accounts(client, meta, a1=60)
        outcomes = await asyncio.gather(
            *(
                client.act("withdraw", {"id": "a1", "amount": 1}, meta=meta, timeout=30)
                for _ in range(100)
            ),
            return_exceptions=True,
        )
        last = await store.last_position()
        for instance in (one, two):
            await until(lambda instance=instance: instance.commander.projector.position == last)
        balance = (await client.act("account balance", {"id": "a1"}))["balance"]
    served = [o for o in outcomes if isinstance(o, dict)]
    refused = [o for o in outcomes if isinstance(o, RuleViolation)]
    lost_races = [o for o in outcomes if isinstance(o, ConcurrencyError)]
    assert len(served) + len(refused) + len(lost_races) == 100, outcomes
    withdrawn = [e for e in await store.events() if e.type == "Withdrawn"]
    assert len(withdrawn) == len(served)  # every success stored exactly once
    assert balance == 60 - len(served) >= 0
    assert len(served) == 60 or lost_races  # only a race lost too often leaves money behind
