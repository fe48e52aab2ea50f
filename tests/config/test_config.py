"""The config module: the KV bucket, the typed live client, schemas, and the CLI."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import nats
import orjson
import pytest
from pydantic import BaseModel, Field
from structlog.testing import capture_logs
from typer.testing import CliRunner

from micro import ConfigError, Micro, NotFoundError, Settings, ValidationError
from micro.cli import app
from micro.modules.config import ConfigClient, ConfigStore, bucket_name

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class BankConfig(BaseModel):
    max_transfer: int = Field(default=1000, gt=0)
    currency: str = "EUR"


@pytest.fixture
async def store(micro_settings: Settings) -> AsyncIterator[ConfigStore]:
    client = await nats.connect(micro_settings.nats_url)
    yield ConfigStore(client, micro_settings.namespace, history=5)
    await client.close()


def bank(micro_settings: Settings, model: type[BaseModel] | None = BankConfig) -> Micro:
    micro = Micro(micro_settings, service="bank")
    micro.modules.want(["config"])
    config: ConfigClient = micro.modules.get("config")
    if model is not None:
        config.use(model)
    return micro


async def test_values_are_set_read_listed_and_their_history_kept(store: ConfigStore) -> None:
    await store.set("currency", "EUR")
    await store.set("currency", "CHF")
    await store.set("max_transfer", 50, service="bank")
    assert await store.get("currency") == "CHF"
    assert await store.get("max_transfer", service="bank") == 50
    with pytest.raises(NotFoundError):
        await store.get("max_transfer")  # the service's key is not global
    listed = await store.entries("bank")
    assert [(e.service, e.key, e.value) for e in listed] == [
        (None, "currency", "CHF"),
        ("bank", "max_transfer", 50),
    ]
    assert [c.value for c in await store.history("currency")] == ["EUR", "CHF"]
    await store.delete("currency")
    with pytest.raises(NotFoundError):
        await store.get("currency")
    assert store.bucket == bucket_name(store.bucket.removesuffix("_config"))


async def test_bad_keys_and_non_json_values_are_refused(store: ConfigStore) -> None:
    for key in ("has.dot", "1st", "", "with space"):
        with pytest.raises(ValidationError):
            await store.set(key, 1)
    with pytest.raises(ValidationError):
        await store.set("when", object())


async def test_the_typed_client_loads_at_start_with_service_keys_overriding_global(
    store: ConfigStore, micro_settings: Settings
) -> None:
    await store.set("currency", "CHF")
    await store.set("max_transfer", 10)
    await store.set("max_transfer", 20, service="bank")
    await store.set("unrelated", True)  # another service's global key: ignored by the model
    micro = bank(micro_settings)
    async with micro:
        config = micro.modules.get("config")
        assert config.value == BankConfig(max_transfer=20, currency="CHF")


async def test_the_client_reloads_live_and_calls_its_callbacks(
    store: ConfigStore, micro_settings: Settings
) -> None:
    micro = bank(micro_settings)
    config = micro.modules.get("config")
    seen: list[tuple[int, int]] = []
    config.on_change(lambda new, old: seen.append((old.max_transfer, new.max_transfer)))

    async def also_async(new: BankConfig, old: BankConfig) -> None:
        seen.append((-1, new.max_transfer))

    config.on_change(also_async)
    async with micro:
        assert config.value.max_transfer == 1000
        await store.set("max_transfer", 5, service="bank")
        await config.wait_for_changes(1)
        assert config.value.max_transfer == 5
        await store.delete("max_transfer", service="bank")
        await config.wait_for_changes(2)
        assert config.value.max_transfer == 1000  # back to the default
    assert seen == [(1000, 5), (-1, 5), (5, 1000), (-1, 1000)]


async def test_a_value_of_the_wrong_type_is_refused_at_set_once_a_schema_is_registered(
    store: ConfigStore, micro_settings: Settings
) -> None:
    async with bank(micro_settings):
        pass  # registering the schema is enough
    for key, value, service in (
        ("max_transfer", "a lot", "bank"),
        ("max_transfer", -5, "bank"),
        ("max_transfer", "a lot", None),  # global keys are checked against every schema
    ):
        with pytest.raises(ValidationError) as refused:
            await store.set(key, value, service)
        assert refused.value.fields[0]["field"] == "max_transfer"
    with pytest.raises(NotFoundError):
        await store.get("max_transfer", service="bank")  # nothing stored
    await store.set("max_transfer", 7, service="bank")


async def test_a_client_receiving_an_invalid_value_keeps_its_config_and_says_why(
    store: ConfigStore, micro_settings: Settings
) -> None:
    micro = bank(micro_settings)
    config = micro.modules.get("config")
    calls: list[object] = []
    config.on_change(lambda new, old: calls.append(new))
    async with micro:
        kv = await store.open()
        with capture_logs() as logs:
            # Written past the schema check, as an old client or another tool could.
            await kv.put("service.bank.max_transfer", orjson.dumps("lots"))
            await config.wait_for_changes(1)
        assert config.value.max_transfer == 1000
        assert calls == []
        [refusal] = [line for line in logs if "refused" in line["event"]]
        assert refusal["log_level"] == "warning"
        assert "max_transfer" in refusal["problems"][0]
        await store.set("currency", "USD")
        await config.wait_for_changes(2)
        assert config.value == BankConfig(max_transfer=1000, currency="USD")


async def test_a_service_does_not_start_on_an_invalid_stored_config(
    store: ConfigStore, micro_settings: Settings
) -> None:
    kv = await store.open()
    await kv.put("service.bank.max_transfer", orjson.dumps("lots"))
    micro = bank(micro_settings)
    with pytest.raises(ConfigError, match="max_transfer"):
        await micro.open()
    assert not micro.serving


async def test_without_a_model_the_config_is_a_dict(
    store: ConfigStore, micro_settings: Settings
) -> None:
    await store.set("feature", {"on": True})
    micro = bank(micro_settings, model=None)
    async with micro:
        config = micro.modules.get("config")
        assert config.value == {"feature": {"on": True}}
        await config.set("limit", 3)
        await config.wait_for_changes(1)
        assert config.get("limit") == 3


async def test_a_watch_tells_current_values_from_changes(store: ConfigStore) -> None:
    for number in range(20):  # many current values: some are still on their way at start
        await store.set(f"key{number}", number)
    ready = asyncio.Event()

    async def changes(include_current: bool) -> list[tuple[str, object]]:
        seen = []
        async for change in store.watch(include_current=include_current, on_ready=ready.set):
            seen.append((change.key, change.value))
            if change.key == "after":
                return seen
        raise AssertionError("the watch ended")

    only_changes = asyncio.create_task(changes(False))
    await ready.wait()
    ready.clear()
    everything = asyncio.create_task(changes(True))
    await ready.wait()
    await store.set("after", "yes")

    assert await asyncio.wait_for(only_changes, 10) == [("after", "yes")]
    current = await asyncio.wait_for(everything, 10)
    assert sorted(current[:-1]) == sorted((f"key{n}", n) for n in range(20))
    assert current[-1] == ("after", "yes")


@pytest.fixture
def run_cli(micro_settings: Settings):
    runner = CliRunner()
    env = {
        "NATS_URL": micro_settings.nats_url,
        "MICRO_NAMESPACE": micro_settings.namespace,
        "COLUMNS": "200",
    }

    def run(*args: str):
        return runner.invoke(app, ["config", *args], env=env)

    return run


def test_the_cli_sets_gets_and_lists_values(run_cli) -> None:
    assert run_cli("set", "currency", "CHF").exit_code == 0
    assert run_cli("set", "max_transfer", "25", "--service", "bank").exit_code == 0
    assert run_cli("set", "max_transfer", "30", "--service", "bank").exit_code == 0
    assert run_cli("get", "currency").output.strip() == '"CHF"'
    assert run_cli("get", "max_transfer", "-s", "bank").output.strip() == "30"
    listed = orjson.loads(run_cli("ls", "--service", "bank", "--json").output)
    assert [(e["service"], e["key"], e["value"]) for e in listed] == [
        (None, "currency", "CHF"),
        ("bank", "max_transfer", 30),
    ]
    history = run_cli("history", "max_transfer", "-s", "bank").output.splitlines()
    assert [line.split("\t")[1] for line in history] == ["25", "30"]
    missing = run_cli("get", "nothing")
    assert missing.exit_code == 1
    assert "not_found" in missing.output


def test_the_cli_refuses_a_value_failing_the_schema(run_cli, micro_settings) -> None:
    async def register_schema() -> None:
        async with bank(micro_settings):
            pass

    asyncio.run(register_schema())
    refused = run_cli("set", "max_transfer", '"many"', "--service", "bank")
    assert refused.exit_code == 1
    assert "validation" in refused.output


def test_the_cli_watches_changes(run_cli, micro_settings: Settings) -> None:
    environment = {
        **os.environ,
        "NATS_URL": micro_settings.nats_url or "",
        "MICRO_NAMESPACE": micro_settings.namespace,
        "PYTHONPATH": ROOT,
    }
    watcher = subprocess.Popen(
        [sys.executable, "-m", "micro.cli", "config", "watch", "--count", "2"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stderr is not None
        assert "watching" in watcher.stderr.readline()
        assert run_cli("set", "currency", "GBP").exit_code == 0
        assert run_cli("delete", "currency").exit_code == 0
        out, _ = watcher.communicate(timeout=20)
    finally:
        watcher.kill()
    assert out.splitlines() == ['global.currency = "GBP"', "global.currency = (deleted)"]
