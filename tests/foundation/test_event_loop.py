"""The loop micro runs on where it owns the loop: uvloop by default, asyncio on request."""

from __future__ import annotations

import asyncio

import pydantic
import pytest
import uvloop

from micro import ConfigError, Micro, Settings, connect, run
from micro.loop import loop_factory, new_event_loop


async def loop_kind() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def test_auto_takes_uvloop_where_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MICRO_EVENT_LOOP", raising=False)
    assert run(loop_kind()) == "uvloop"


def test_the_setting_chooses_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MICRO_EVENT_LOOP", "asyncio")
    assert run(loop_kind()) == "asyncio"
    assert run(loop_kind(), loop="uvloop") == "uvloop"  # the argument wins


def test_an_unknown_loop_is_a_config_error_naming_the_setting() -> None:
    with pytest.raises(ConfigError) as caught:
        loop_factory("trio")
    assert "MICRO_EVENT_LOOP" in caught.value.message
    assert caught.value.details["fields"][0]["field"] == "event_loop"
    with pytest.raises(pydantic.ValidationError) as invalid:
        Settings(event_loop="trio")  # type: ignore[arg-type]
    assert "event_loop" in str(invalid.value)


def test_an_unknown_loop_closes_the_coroutine_it_was_given() -> None:
    coroutine = loop_kind()
    with pytest.raises(ConfigError):
        run(coroutine, loop="trio")
    assert coroutine.cr_frame is None  # closed: no "never awaited" warning


def test_new_event_loop_makes_the_chosen_kind() -> None:
    for choice, kind in (("uvloop", uvloop.Loop), ("asyncio", asyncio.BaseEventLoop)):
        loop = new_event_loop(choice)
        try:
            assert isinstance(loop, kind)
        finally:
            loop.close()


def test_the_blocking_client_runs_its_loop_as_the_setting_says(micro_settings: Settings) -> None:
    for choice in ("asyncio", "uvloop"):
        with connect(micro_settings, service=f"loop-{choice}", event_loop=choice) as client:
            loop = client._started()
            assert type(loop).__module__.split(".")[0] == choice


SERVICE = """
micro = Micro(service="loops")
micro.add("loop kind", lambda _: type(asyncio.get_running_loop()).__module__.split(".")[0])
micro.hook("on_start", announce)
micro.start()
"""


@pytest.mark.parametrize(("setting", "kind"), [("auto", "uvloop"), ("asyncio", "asyncio")])
async def test_a_started_service_serves_on_the_chosen_loop(
    micro_settings: Settings,
    spawn,
    setting: str,
    kind: str,  # type: ignore[no-untyped-def]
) -> None:
    spawn(SERVICE, MICRO_EVENT_LOOP=setting)
    async with Micro(micro_settings, service="asker") as micro:
        assert await micro.act("loop kind") == kind
