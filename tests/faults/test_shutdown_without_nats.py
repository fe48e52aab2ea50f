"""A service asked to stop while NATS is gone still stops cleanly."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from micro.testing import NatsServer
from tests.faults.support import BankInstance


async def test_a_bank_stopped_while_its_nats_server_is_down_exits_cleanly(
    own_server: NatsServer, tmp_path: Path
) -> None:
    bank = await BankInstance("b1", own_server.url, "down", tmp_path).start()
    try:
        own_server.kill()
        assert bank.process is not None
        bank.process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(bank.process.wait, 30)
    finally:
        bank.stop()
    assert "Traceback" not in bank.log.read_text()
    assert code == 0
