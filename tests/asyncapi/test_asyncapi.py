"""AsyncAPI 3.0 from live discovery: the bank's document validates against the official schema.

The schema comes from ``@asyncapi/specs``, the AsyncAPI Initiative's own package of its JSON
Schemas, installed from npm once per test session; the test is skipped, with the reason,
only when npm is missing.
"""

from __future__ import annotations

import asyncio
import json
import os
import runpy
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from micro import Micro, Settings
from micro.bus.subjects import command_subject
from micro.eventstore.memory import MemoryEventStore
from micro.gateway import Gateway, GatewaySettings
from tests.support import npm_install

ROOT = Path(__file__).resolve().parents[2]
BANK = ROOT / "samples" / "bank" / "app.py"
SPECS = "6.11.1"
BANK_COMMANDS = {"open account", "deposit", "withdraw", "transfer", "settle transfer"}
BANK_VIEWS = {"account balance", "accounts", "transfer status"}


@pytest.fixture(scope="session")
def asyncapi_schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 JSON Schema, as the @asyncapi/specs package ships it."""
    folder = tmp_path_factory.mktemp("asyncapi-specs")
    npm_install(
        folder,
        {"@asyncapi/specs": SPECS},
        purpose="validating AsyncAPI (@asyncapi/specs)",
        tools=("npm",),
    )
    schema_file = (
        folder / "node_modules" / "@asyncapi" / "specs" / "schemas" / "3.0.0-without-$id.json"
    )
    schema: dict[str, Any] = json.loads(schema_file.read_text())
    return schema


def _validate(document: dict[str, Any], schema: dict[str, Any]) -> None:
    validator = jsonschema.Draft7Validator(schema)
    problems = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    assert not problems, "\n".join(
        f"{list(p.absolute_path)}: {p.message[:300]}" for p in problems[:10]
    )


@pytest.fixture
async def bank(
    micro_settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> AsyncIterator[Micro]:
    for key, value in {
        "NATS_URL": micro_settings.nats_url or "",
        "MICRO_NAMESPACE": micro_settings.namespace,
        "MICRO_EMBEDDED": "false",
        "MICRO_DATA_DIR": str(tmp_path),
        "MICRO_AUTH_SECRET": "a-test-secret-that-is-long-enough-0123456789",
    }.items():
        monkeypatch.setenv(key, value)
    micro: Micro = runpy.run_path(str(BANK), run_name="bank_sample")["micro"]
    micro.commander.store = MemoryEventStore()
    async with micro:
        yield micro


async def test_the_gateway_serves_a_valid_document_listing_every_command_and_view_of_the_bank(
    bank: Micro, micro_settings: Settings, asyncapi_schema: dict[str, Any]
) -> None:
    gateway = Gateway(
        Micro(micro_settings, service="gateway"),
        GatewaySettings(port=0, required_services=["bank"]),
    )
    await gateway.start()
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
            response = await client.get("/asyncapi.json")
    finally:
        await gateway.stop()
        await gateway.micro.close()
    assert response.status_code == 200
    document = response.json()
    _validate(document, asyncapi_schema)
    assert document["asyncapi"] == "3.0.0"
    titles = {channel.get("title") for channel in document["channels"].values()}
    assert titles >= BANK_COMMANDS | BANK_VIEWS
    for name in BANK_COMMANDS | BANK_VIEWS:
        key = next(k for k, c in document["channels"].items() if c.get("title") == name)
        assert document["channels"][key]["address"] == command_subject(
            micro_settings.namespace, name
        )
        operation = document["operations"][key]
        assert operation["action"] == "receive"
        assert operation["reply"]["channel"] == {"$ref": f"#/channels/{key}.reply"}
        kind = "view" if name in BANK_VIEWS else "command"
        assert {"name": kind} in operation["tags"]
    deposit = document["components"]["messages"]["deposit.request"]["payload"]
    assert set(deposit["required"]) >= {"id", "amount"}


async def test_micro_asyncapi_prints_the_same_valid_document(
    bank: Micro, micro_settings: Settings, asyncapi_schema: dict[str, Any]
) -> None:
    environment = {
        **os.environ,
        "NATS_URL": micro_settings.nats_url or "",
        "MICRO_NAMESPACE": micro_settings.namespace,
        "MICRO_EMBEDDED": "false",
        "PYTHONPATH": str(ROOT),
    }
    # The bank serves on this test's event loop: the command runs beside it, not blocking it.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *["-m", "micro.cli", "asyncapi", "--wait-for", "bank", "--title", "bank"],
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    document = json.loads(out)
    _validate(document, asyncapi_schema)
    assert document["info"]["title"] == "bank"
    assert {c.get("title") for c in document["channels"].values()} >= BANK_COMMANDS | BANK_VIEWS


def test_a_document_that_breaks_the_schema_is_caught(asyncapi_schema: dict[str, Any]) -> None:
    # The check can fail: an operation without its action is not AsyncAPI 3.0.
    from micro.asyncapi import build_asyncapi

    document = build_asyncapi([], title="empty", version="1.0.0", namespace="x")
    _validate(document, asyncapi_schema)
    document["operations"] = {"broken": {"channel": {"$ref": "#/channels/none"}}}
    with pytest.raises(AssertionError):
        _validate(document, asyncapi_schema)


async def test_a_fallback_handler_is_not_a_channel(
    micro_settings: Settings, asyncapi_schema: dict[str, Any]
) -> None:
    from micro.asyncapi import build_asyncapi

    service = Micro(micro_settings, service="catchall")
    service.add("known", lambda request: "known").fallback(lambda request: "fallback")
    async with service, Micro(micro_settings, service="client") as client:
        records = await client.discover(wait_for=["catchall"])
    document = build_asyncapi(
        records, title="t", version="1.0.0", namespace=micro_settings.namespace
    )
    _validate(document, asyncapi_schema)
    assert [channel.get("title") for channel in document["channels"].values()] == [
        "known",
        None,
    ]
