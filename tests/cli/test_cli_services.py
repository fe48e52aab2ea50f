"""``micro services``: ls (the default), info NAME, stats NAME, with --json for scripts."""

import asyncio

import orjson
import pytest
from typer.testing import CliRunner

from micro import Micro, Settings
from micro.cli import app

SERVICE = """
from pydantic import BaseModel

class Greeting(BaseModel):
    name: str

def hello(request: Greeting) -> str:
    return f"hello {request.name}"

micro = Micro(service="greeter", version="3.1.4", description="Says hello")
micro.add("say hello", hello)
micro.hook("on_start", announce)
micro.start()
"""


@pytest.fixture
def run_cli(micro_settings: Settings):
    runner = CliRunner()
    env = {
        "NATS_URL": micro_settings.nats_url,
        "MICRO_NAMESPACE": micro_settings.namespace,
        "COLUMNS": "200",
    }

    def run(*args: str):
        # Whole-list output: gather long enough that a loaded machine's replies all arrive.
        wait = () if "--wait" in args else ("--wait", "2")
        return runner.invoke(app, ["services", *args, *wait], env=env)

    return run


def test_services_without_a_sub_command_lists_services_instances_and_endpoints(
    spawn, run_cli
) -> None:
    spawn(SERVICE)
    spawn(SERVICE)
    result = run_cli()
    assert result.exit_code == 0, result.output
    [row] = [line for line in result.output.splitlines() if "greeter" in line]
    assert "3.1.4" in row
    assert " 2 " in row  # two instances
    assert "say hello" in row


def test_services_ls_json_prints_one_record_per_instance(spawn, run_cli) -> None:
    process = spawn(SERVICE)
    result = run_cli("ls", "--json")
    assert result.exit_code == 0, result.output
    [record] = orjson.loads(result.output)
    assert record["service"] == "greeter"
    assert record["endpoints"][0]["name"] == "say hello"
    assert process.pid  # the instance answering is the one spawned


def test_services_info_shows_endpoints_with_their_schemas(spawn, run_cli) -> None:
    spawn(SERVICE)
    table = run_cli("info", "greeter")
    assert table.exit_code == 0, table.output
    assert "say hello" in table.output
    assert "Greeting (object)" in table.output
    as_json = run_cli("info", "greeter", "--json")
    [record] = orjson.loads(as_json.output)
    endpoint = record["endpoints"][0]
    assert endpoint["request_schema"]["title"] == "Greeting"
    assert endpoint["reply_schema"] == {"type": "string"}


def test_services_stats_shows_real_request_counts(spawn, run_cli, micro_settings: Settings) -> None:
    spawn(SERVICE)

    async def call() -> None:
        async with Micro(micro_settings, service="caller") as caller:
            for _ in range(3):
                await caller.act("say hello", {"name": "ana"})

    asyncio.run(call())
    result = run_cli("stats", "greeter", "--json")
    assert result.exit_code == 0, result.output
    [record] = orjson.loads(result.output)
    assert record["endpoints"][0]["stats"]["requests"] == 3
    table = run_cli("stats", "greeter")
    assert "say hello" in table.output


def test_services_info_of_an_unknown_service_fails_with_one_line(run_cli) -> None:
    result = run_cli("info", "ghost", "--wait", "0.1")
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1
    assert "no service named 'ghost'" in result.output


def test_services_without_nats_fails_with_one_line() -> None:
    result = CliRunner().invoke(
        app, ["services"], env={"NATS_URL": "nats://127.0.0.1:1", "COLUMNS": "200"}
    )
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1
    assert "cannot connect to NATS" in result.output
