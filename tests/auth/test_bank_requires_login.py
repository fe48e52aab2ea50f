"""The bank sample with the auth module: every command needs a login."""

from __future__ import annotations

import runpy
import time
from pathlib import Path
from typing import Any

import pytest

from micro import ForbiddenError, Micro, Settings, UnauthorizedError
from micro.eventstore.memory import MemoryEventStore
from tests.auth.support import FAST_HASHING, SECRET, log_in, sign_up

BANK = Path(__file__).resolve().parents[2] / "samples" / "bank" / "app.py"


@pytest.fixture
def bank(micro_settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Micro:
    """samples/bank/app.py as it is, configured through the environment like any service."""
    environment = {
        "NATS_URL": micro_settings.nats_url or "",
        "MICRO_NAMESPACE": micro_settings.namespace,
        "MICRO_EMBEDDED": "false",
        "MICRO_AUTH_SECRET": SECRET,
        "MICRO_DATA_DIR": str(tmp_path),
        **{f"MICRO_{key.upper()}": str(value) for key, value in FAST_HASHING.items()},
    }
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    micro: Micro = runpy.run_path(str(BANK), run_name="bank_sample")["micro"]
    micro.commander.store = MemoryEventStore()
    return micro


async def test_bank_commands_need_a_login(bank: Micro, micro_settings: Settings) -> None:
    async with bank, Micro(micro_settings, service="client") as client:
        with pytest.raises(UnauthorizedError):
            await client.act("open account", {"id": "a1", "owner": "ann"})
        await sign_up(client)
        token = await log_in(client)
        opened = await client.act(
            "open account", {"id": "a1", "owner": "ann"}, meta={"token": token}
        )
        assert opened["id"] == "a1"
        deposit = await client.act("deposit", {"id": "a1", "amount": 50}, meta={"token": token})
        assert deposit["balance"] == 50
        with pytest.raises(UnauthorizedError):
            await client.act("withdraw", {"id": "a1", "amount": 5})


async def test_only_the_transfer_process_settles_transfers(
    bank: Micro, micro_settings: Settings
) -> None:
    async with bank, Micro(micro_settings, service="client") as client:
        await sign_up(client)
        token = await log_in(client)
        meta: dict[str, Any] = {"token": token}
        for account in ("a1", "a2"):
            await client.act("open account", {"id": account, "owner": "ann"}, meta=meta)
        await client.act("deposit", {"id": "a1", "amount": 100}, meta=meta)
        await client.act(
            "transfer", {"id": "t1", "source": "a1", "target": "a2", "amount": 30}, meta=meta
        )
        with pytest.raises(ForbiddenError):
            await client.act("settle transfer", {"id": "t1", "outcome": "failed"}, meta=meta)
        # The process (acting with the bank's service token) carries the transfer out.
        deadline = time.monotonic() + 10
        while (await client.act("transfer status", {"id": "t1"}))["status"] != "completed":
            assert time.monotonic() < deadline, "the transfer was never completed"
        balance = await client.act("account balance", {"id": "a2"})
        assert balance["balance"] == 30
