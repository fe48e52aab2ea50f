"""``micro permissions APP [--json]``: least privilege computed from the app."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import nats
import pytest

from micro.testing import NatsServer
from tests.security.support import ROOT, ROOT_ENV

BANK = ROOT / "samples" / "bank"


def _run(*args: str) -> str:
    printed = subprocess.run(
        [sys.executable, "-m", "micro.cli", "permissions", *args],
        env={**os.environ, **ROOT_ENV},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return printed.stdout


def test_the_json_names_every_jetstream_resource_and_never_a_bare_wildcard() -> None:
    printed = json.loads(_run(str(BANK), "--json"))
    assert printed["service"] == "bank"
    blocks = [printed["permissions"], printed["caller"]["permissions"]]
    blocks.append(printed["gateway"]["permissions"])
    for block in blocks:
        for allowed in block["publish"]["allow"] + block["subscribe"]["allow"]:
            assert allowed not in {">", "$JS.API.>", "$KV.>", "$O.>", "_INBOX.>", "micro.ev.>"}
    service = printed["permissions"]
    events = [s for s in service["publish"]["allow"] if s.startswith("micro.ev.")]
    assert events == ["micro.ev.bank.>"]
    assert "_INBOX_bank.>" in service["subscribe"]["allow"]
    assert "micro.cmd.deposit" in service["subscribe"]["allow"]
    assert "$JS.API.STREAM.INFO.MICRO_EVENTS" in service["publish"]["allow"]
    assert "_INBOX_cli.>" in printed["caller"]["permissions"]["subscribe"]["allow"]
    assert "micro.srv.*" in printed["caller"]["permissions"]["subscribe"]["allow"]
    assert "micro.srv.*" in service["publish"]["allow"]
    gateway = printed["gateway"]["permissions"]["publish"]["allow"]
    assert not [
        s for s in gateway if s.startswith("micro.ev.") or s.endswith("CREATE.MICRO_EVENTS")
    ]


def test_the_printed_config_is_one_nats_server_accepts_and_enforces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _run(str(BANK))
    assert config.startswith("# nats-server.conf")
    for user in ("BANK", "CLI", "GATEWAY"):
        monkeypatch.setenv(f"{user}_PASSWORD", f"pw-{user.lower()}-0123456789")
    server = NatsServer(store_dir=tmp_path, extra_config=config).start()
    try:

        async def check() -> list[str]:
            errors: list[str] = []
            refused = asyncio.Event()

            async def on_error(error: Exception) -> None:
                errors.append(str(error))
                refused.set()

            client = await nats.connect(
                server.url,
                user="cli",
                password="pw-cli-0123456789",
                inbox_prefix="_INBOX_cli",
                error_cb=on_error,
            )
            try:
                await client.publish("micro.ev.bank.account-1", b"{}")
                await client.flush()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(refused.wait(), 5)
            finally:
                await client.close()
            return errors

        errors = asyncio.run(check())
    finally:
        server.stop()
    assert any("permissions violation for publish" in error.lower() for error in errors)


def test_the_config_shown_in_the_production_docs_is_what_the_command_prints() -> None:
    docs = (ROOT / "docs" / "production.md").read_text()
    start = docs.index("# nats-server.conf: least privilege for 'bank'")
    shown = docs[start : docs.index("```", start)]
    assert shown == _run(str(BANK))


def test_a_custom_inbox_prefix_and_the_config_module_are_in_the_service_block() -> None:
    from micro import Micro
    from micro.permissions import service_permissions

    micro = Micro(service="settings-owner", nats_inbox_prefix="_R.settings-owner")
    micro.modules.want(["config"])
    block = service_permissions(micro)
    assert "_R.settings-owner.>" in block["subscribe"]["allow"]
    assert "_INBOX_settings-owner.>" not in block["subscribe"]["allow"]
    assert "$KV.micro_config.>" in block["publish"]["allow"]
    assert "$JS.API.STREAM.INFO.KV_micro_config" in block["publish"]["allow"]


def test_a_service_holding_the_fallback_may_serve_it_and_every_caller_may_reach_it() -> None:
    from micro import Micro
    from micro.permissions import caller_permissions, service_permissions

    micro = Micro(service="catch-all").fallback(lambda request: None)
    assert "micro.fallback" in service_permissions(micro)["subscribe"]["allow"]
    caller = caller_permissions(micro.settings)
    assert "micro.fallback" in caller["publish"]["allow"]
    assert "micro.fallback" not in caller["subscribe"]["allow"]
