"""The blocking client: shared across threads, inside a WSGI app, typed errors, clean close."""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from wsgiref.simple_server import WSGIRequestHandler, make_server

import orjson
import pytest

from micro import BlockingClient, RuleViolation, ServiceNotFoundError, Settings, connect

SERVICE = """
from micro import RuleViolation

def add(request: dict) -> int:
    return request["a"] + request["b"]

def refuse(request: dict) -> None:
    raise RuleViolation("accounts are closed today", details={"reason": "holiday"})

async def count(request: dict, ctx) -> str:
    for number in range(3):
        await ctx.send({"step": number})
    return "counted"

micro = Micro(service="calc")
micro.add("add", add).add("refuse", refuse).add("count", count)
micro.hook("on_start", announce)
micro.start()
"""


@pytest.fixture
def client(micro_settings: Settings, spawn) -> Iterator[BlockingClient]:  # type: ignore[no-untyped-def]
    spawn(SERVICE)
    with connect(micro_settings, service="blocking-test") as client:
        yield client


def _client_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "micro-blocking-client"]


def test_one_client_serves_eight_threads_at_once(client: BlockingClient) -> None:
    start = threading.Barrier(8)

    def work(worker: int) -> list[int]:
        start.wait(timeout=10)
        return [client.act("add", {"a": worker, "b": step}) for step in range(25)]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(8)))
    assert results == [[worker + step for step in range(25)] for worker in range(8)]
    assert len(_client_threads()) == 1


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_wsgi_app_served_in_a_thread_calls_a_service(client: BlockingClient) -> None:
    def app(environ, start_response):  # type: ignore[no-untyped-def]
        a = int(environ["QUERY_STRING"].partition("=")[2])
        try:
            body = {"sum": client.act("add", {"a": a, "b": 1})}
            status = "200 OK"
        except RuleViolation as error:
            body, status = {"error": error.message}, "409 Conflict"
        start_response(status, [("Content-Type", "application/json")])
        return [orjson.dumps(body)]

    server = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    try:
        port = server.server_address[1]
        for a in (1, 41):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/?a={a}", timeout=10) as reply:
                assert orjson.loads(reply.read()) == {"sum": a + 1}
    finally:
        server.shutdown()
        serving.join(10)
        server.server_close()


def test_typed_errors_cross_to_the_calling_thread(client: BlockingClient) -> None:
    with pytest.raises(RuleViolation) as refused:
        client.act("refuse", {})
    assert refused.value.message == "accounts are closed today"
    assert refused.value.details == {"reason": "holiday"}
    with pytest.raises(ServiceNotFoundError):
        client.act("nobody serves this", {}, timeout=2)


def test_act_stream_is_an_iterator_of_messages_then_the_reply(client: BlockingClient) -> None:
    assert list(client.act_stream("count", {})) == [
        {"step": 0},
        {"step": 1},
        {"step": 2},
        "counted",
    ]
    # Leaving early ends the stream and the client goes on working.
    for message in client.act_stream("count", {}):
        assert message == {"step": 0}
        break
    assert client.request("add", {"a": 2, "b": 2}).value == 4


def test_close_leaves_no_thread_or_loop_running(micro_settings: Settings, spawn) -> None:  # type: ignore[no-untyped-def]
    spawn(SERVICE)
    before = len(_client_threads())
    client = connect(micro_settings)
    assert client.act("add", {"a": 1, "b": 1}) == 2
    loop = client._loop
    assert loop is not None
    assert loop.is_running()
    assert len(_client_threads()) == before + 1
    client.close()
    assert loop.is_closed()
    assert len(_client_threads()) == before
    assert client.closed
    client.close()  # a second close is harmless
    with pytest.raises(RuntimeError, match="closed"):
        client.act("add", {"a": 1, "b": 1})


def test_a_client_never_used_starts_no_thread(micro_settings: Settings) -> None:
    before = len(_client_threads())
    with connect(micro_settings):
        assert len(_client_threads()) == before
    assert len(_client_threads()) == before


async def test_inside_a_running_event_loop_it_refuses_instead_of_deadlocking(
    micro_settings: Settings,
) -> None:
    client = connect(micro_settings)
    with pytest.raises(RuntimeError, match="use 'async with Micro"):
        client.act("add", {"a": 1, "b": 1})
    with pytest.raises(RuntimeError, match="use 'async with Micro"):
        next(iter(client.act_stream("count", {})))
    await asyncio.to_thread(client.close)


def test_bad_settings_fail_where_they_are_given() -> None:
    from micro import ConfigError

    with pytest.raises(ConfigError, match="request_timeout"):
        connect(request_timeout=-1)


def test_a_client_left_open_is_closed_at_interpreter_exit(
    micro_settings: Settings,
    spawn,  # type: ignore[no-untyped-def]
) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    spawn(SERVICE)
    # atexit runs hooks last-in first-out: this one, registered before the client's, runs
    # after it and reports what the client's hook left behind.
    script = (
        "import atexit, threading\n"
        "from micro import connect\n"
        "def report():\n"
        "    alive = [t for t in threading.enumerate() if t.name == 'micro-blocking-client']\n"
        "    print('closed' if client.closed and not alive else 'left open', flush=True)\n"
        "atexit.register(report)\n"
        "client = connect(service='forgetful')\n"
        "print(client.act('add', {'a': 20, 'b': 22}), flush=True)\n"
    )
    environment = {
        **os.environ,
        "NATS_URL": micro_settings.nats_url or "",
        "MICRO_NAMESPACE": micro_settings.namespace,
        "MICRO_EMBEDDED": "false",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "PYTHONWARNINGS": "error",
    }
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-c", script],
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["42", "closed"]
    assert "Traceback" not in result.stderr
    assert "was destroyed" not in result.stderr
    assert "never awaited" not in result.stderr


def test_an_unreachable_server_raises_a_typed_error_and_leaves_no_thread(
    micro_settings: Settings,
) -> None:
    import socket as sockets

    from micro import UnavailableError

    with sockets.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again at once: nothing listens there
    before = len(_client_threads())
    client = connect(micro_settings, nats_url=f"nats://127.0.0.1:{port}", connect_timeout=1)
    with pytest.raises(UnavailableError):
        client.act("add", {"a": 1, "b": 1})
    assert len(_client_threads()) == before
    client.close()
