"""``micro top --once --json`` shows the load just sent, read from ``$SRV.STATS``."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from micro import Micro, Settings, ValidationError
from micro.cli.top import _table

ROOT = Path(__file__).resolve().parent.parent.parent
TALLY = ROOT / "tests" / "command" / "apps" / "tally"


async def top_once(settings: Settings) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "micro.cli",
        "top",
        "--once",
        "--json",
        "--interval",
        "0.5",
        env={
            **os.environ,
            "NATS_URL": settings.nats_url or "",
            "MICRO_NAMESPACE": settings.namespace,
            "PYTHONPATH": str(ROOT),
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    output, errors = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, errors.decode()[-2000:]
    view: dict[str, Any] = json.loads(output)
    return view


def command(view: dict[str, Any], service: str, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    (found,) = [entry for entry in view["services"] if entry["service"] == service]
    (row,) = [entry for entry in found["commands"] if entry["command"] == name]
    return found, row


async def test_top_once_json_shows_the_rate_latency_errors_and_lag_of_the_load_just_sent(
    micro_settings: Settings,
) -> None:
    service = Micro(micro_settings, service="topped", app_dir=TALLY)
    service.commander.add_command("add")
    sent = 0
    async with service, Micro(micro_settings) as client:
        for _ in range(5):
            await client.act("add", {"id": "a", "amount": 1})
            sent += 1
        for _ in range(2):
            with pytest.raises(ValidationError):
                await client.act("add", {"id": "a", "amount": -1})
        viewing = asyncio.create_task(top_once(micro_settings))
        # a steady load while top samples twice; bounded in count
        while not viewing.done() and sent < 3000:
            await client.act("add", {"id": f"b{sent // 500}", "amount": 1})
            sent += 1
        during = await viewing
        after = await top_once(micro_settings)
    entry, row = command(during, "topped", "add")
    assert entry["instances"] == 1
    assert row["rate"] > 0
    assert 7 <= row["requests"] <= sent + 2
    assert row["errors"] == 2
    assert row["errors_by_code"] == {"validation": 2}
    assert 0 < row["p50_ms"] <= row["p99_ms"]
    entry, row = command(after, "topped", "add")
    assert row["requests"] == sent + 2
    assert row["rate"] == 0
    assert entry["lag"] == 0


async def test_top_json_without_once_is_refused_with_a_clear_line(micro_settings: Settings) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "micro.cli",
        "top",
        "--json",
        env={**os.environ, "NATS_URL": micro_settings.nats_url or "", "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    output, errors = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1
    assert output == b""
    assert "--json prints one snapshot: use it with --once" in errors.decode()


def test_the_live_table_shows_each_command_with_rate_latency_errors_and_lag() -> None:
    view = {
        "at": 0.0,
        "services": [
            {
                "service": "bank",
                "instances": 2,
                "lag": 3,
                "ids": ["a", "b"],
                "commands": [
                    {
                        "command": "deposit",
                        "kind": "command",
                        "requests": 1200,
                        "errors": 4,
                        "errors_by_code": {"rule_violation": 4},
                        "rate": 123.4,
                        "p50_ms": 1.25,
                        "p90_ms": 2.0,
                        "p99_ms": 7.5,
                    }
                ],
            }
        ],
    }
    console = Console(record=True, width=120, color_system=None)
    console.print(_table(view, "demo"))
    text = console.export_text()
    (row,) = [line for line in text.splitlines() if "deposit" in line]
    for figure in ("bank", "2", "123.4", "1200", "1.25", "7.50", "4", "3"):
        assert figure in row
    assert "namespace 'demo'" in text
