from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator

import orjson
import pytest
from typer.testing import CliRunner

from micro.cli.events import events_app
from micro.eventstore.jetstream import JetStreamEventStore
from micro.testing import NatsServer
from micro.testing.eventstore_contract import new_event

DEADLINE = 10.0


@pytest.fixture
def environment(nats_server: NatsServer, micro_namespace: str) -> dict[str, str]:
    return {
        "NATS_URL": nats_server.url,
        "MICRO_NAMESPACE": micro_namespace,
        "MICRO_EMBEDDED": "false",
    }


@pytest.fixture
async def store(
    nats_server: NatsServer, micro_namespace: str
) -> AsyncIterator[JetStreamEventStore]:
    async with JetStreamEventStore(url=nats_server.url, namespace=micro_namespace) as store:
        yield store


async def _invoke(args: list[str], environment: dict[str, str]) -> tuple[int, str, str]:
    # The command runs its own event loop, so it runs in a thread of its own here.
    result = await asyncio.to_thread(CliRunner().invoke, events_app, args, env=environment)
    return result.exit_code, result.stdout, result.stderr


async def test_show_prints_a_stream_one_line_per_event(
    store: JetStreamEventStore, environment: dict[str, str]
) -> None:
    await store.append("account-1", [new_event("Opened", owner="ada"), new_event("Deposited")])
    await store.append("account-2", [new_event("Opened")])

    code, out, _ = await _invoke(["show", "account-1"], environment)

    lines = out.splitlines()
    assert code == 0
    assert len(lines) == 2
    assert "account-1@0" in lines[0]
    assert "Opened" in lines[0]
    assert '{"owner":"ada"}' in lines[0]
    assert "Deposited" in lines[1]


async def test_show_json_prints_whole_events(
    store: JetStreamEventStore, environment: dict[str, str]
) -> None:
    sent = new_event("Opened", owner="ada")
    result = await store.append("account-1", [sent])

    code, out, _ = await _invoke(["show", "account-1", "--json"], environment)

    [line] = out.splitlines()
    event = orjson.loads(line)
    assert code == 0
    assert event["id"] == str(sent.id)
    assert event["position"] == result.position
    assert event["data"] == {"owner": "ada"}
    assert "recorded_at" in event["metadata"]


async def test_an_invalid_stream_name_is_one_line_and_exit_1(
    store: JetStreamEventStore, environment: dict[str, str]
) -> None:
    code, out, err = await _invoke(["show", "a.b"], environment)

    assert code == 1
    assert out == ""
    assert err.startswith("error: stream name 'a.b'")
    assert len(err.splitlines()) == 1


async def test_an_unreachable_server_is_one_line_unless_verbose() -> None:
    environment = {"NATS_URL": "nats://127.0.0.1:1", "MICRO_EMBEDDED": "false"}

    code, _, err = await _invoke(["show", "s"], environment)
    verbose_code, _, verbose_err = await _invoke(["show", "s", "--verbose"], environment)

    assert code == verbose_code == 1
    assert err.startswith("error: cannot connect to NATS")
    assert len(err.splitlines()) == 1
    assert "Traceback" in verbose_err


async def test_invalid_settings_are_one_line_and_exit_1() -> None:
    code, _, err = await _invoke(["show", "s"], {"MICRO_NAMESPACE": "no spaces allowed"})

    assert code == 1
    assert err.startswith("error: invalid settings: namespace")


async def test_tail_follows_new_events_of_one_stream(
    store: JetStreamEventStore, environment: dict[str, str]
) -> None:
    first = await store.append("watched", [new_event("Before")])
    await store.append("other", [new_event("Elsewhere")])
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from micro.cli.events import events_app; events_app()",
        "tail",
        "watched",
        "--from",
        str(first.position),
        "--json",
        env={**os.environ, **environment},
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(DEADLINE):
            before = orjson.loads(await process.stdout.readline())
            live = new_event("Live")
            await store.append("other", [new_event("Elsewhere")])
            await store.append("watched", [live])
            after = orjson.loads(await process.stdout.readline())
    finally:
        process.terminate()
        await process.wait()

    assert before["type"] == "Before"
    assert after["id"] == str(live.id)
    assert after["stream"] == "watched"
