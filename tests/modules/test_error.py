"""The error module: stable codes for common exceptions, fatal errors stop the service."""

from __future__ import annotations

import asyncio
import builtins
import gc

import nats.errors
import pydantic
import pytest
from pydantic import BaseModel

from micro import (
    BadRequestError,
    ForbiddenError,
    InternalError,
    Micro,
    NotFoundError,
    ServiceNotFoundError,
    Settings,
    TimeoutError,
    UnavailableError,
    ValidationError,
)
from micro.modules.error import EXIT_FATAL, FatalError, classify, to_micro_error
from tests.modules.support import LogLines


class Amount(BaseModel):
    value: int


def pydantic_error() -> pydantic.ValidationError:
    try:
        Amount.model_validate({"value": "many"})
    except pydantic.ValidationError as error:
        return error
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (builtins.TimeoutError(), TimeoutError),
        (ConnectionRefusedError("refused"), UnavailableError),
        (PermissionError("no"), ForbiddenError),
        (FileNotFoundError("gone"), NotFoundError),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"), BadRequestError),
        (nats.errors.NoRespondersError(), ServiceNotFoundError),
        (nats.errors.TimeoutError(), TimeoutError),
        (nats.errors.ConnectionClosedError(), UnavailableError),
        (KeyError("a bug, not a 404"), InternalError),
        (ValueError("a bug too"), InternalError),
        (MemoryError(), FatalError),
    ],
)
def test_common_exceptions_map_to_stable_codes(error: Exception, expected: type) -> None:
    mapped = to_micro_error(error)
    assert type(mapped) is expected
    assert mapped.__cause__ is error


def test_pydantic_errors_become_validation_errors_with_fields() -> None:
    mapped = to_micro_error(pydantic_error())
    assert isinstance(mapped, ValidationError)
    assert mapped.fields[0]["field"] == "value"


def test_fatal_errors_are_told_apart_even_when_wrapped() -> None:
    wrapped = InternalError("internal")
    wrapped.__cause__ = MemoryError()
    assert classify(wrapped) == "fatal"
    assert classify(FatalError("stop")) == "fatal"
    assert classify(TimeoutError("slow")) == "operational"
    assert classify(ValueError("bug")) == "operational"


async def test_handlers_raising_common_exceptions_reply_with_their_code(
    micro_settings: Settings,
) -> None:
    def read_file() -> None:
        raise FileNotFoundError("no such ledger")

    def connect_bank() -> None:
        raise ConnectionRefusedError("bank is down")

    service = Micro(micro_settings, service="files")
    service.add("read file", read_file).add("connect bank", connect_bank)
    service.modules.want(["error"])
    service.modules.get("error")
    async with service, Micro(micro_settings, service="client") as client:
        with pytest.raises(NotFoundError, match="no such ledger"):
            await client.act("read file")
        with pytest.raises(UnavailableError):
            await client.act("connect bank")


async def test_a_stray_task_error_is_logged_with_its_context(
    micro_settings: Settings, log_lines: LogLines
) -> None:
    service = Micro(micro_settings, service="stray")
    service.modules.want(["error"])
    service.modules.get("error")

    async def forgotten() -> None:
        raise RuntimeError("nobody awaited me")

    async with service:
        task = asyncio.get_running_loop().create_task(forgotten(), name="the forgotten task")
        await asyncio.wait({task})
        del task
        gc.collect()  # the loop reports a never-retrieved exception when the task is freed
        [line] = [r for r in log_lines.records() if r["event"].startswith("unhandled error")]
    assert line["task"] == "the forgotten task"
    assert "forgotten" in line["coroutine"]
    assert "nobody awaited me" in line["exception"]
    assert line["level"] == "error"


async def test_a_fatal_error_closes_the_service_with_the_reason(
    micro_settings: Settings, log_lines: LogLines
) -> None:
    def corrupt() -> None:
        raise MemoryError("ledger arena exhausted")

    service = Micro(micro_settings, service="ledger")
    service.add("corrupt", corrupt)
    service.modules.want(["error"])
    errors = service.modules.get("error")
    errors.exit_process = False  # in process: close, but leave pytest running
    async with Micro(micro_settings, service="client") as client:
        await service.open()
        with pytest.raises(FatalError):
            await client.act("corrupt")
        await errors.wait_stopped(timeout=10)
    assert not service.serving
    assert "MemoryError" in (errors.reason or "")
    [line] = [r for r in log_lines.records() if r["level"] == "critical"]
    assert line["reason"] == errors.reason


async def test_a_fatal_error_exits_the_process_non_zero_after_draining(
    spawn, micro_settings: Settings
) -> None:
    service = spawn(
        """
        from micro.modules.error import FatalError

        exploded = asyncio.Event()

        async def slow():
            print("slow started", flush=True)
            await exploded.wait()  # still in flight when the fatal error comes
            await asyncio.sleep(0.1)
            return "finished"

        def explode():
            exploded.set()
            raise FatalError("the disk is gone")

        micro = Micro(service="fragile")
        micro.add("slow", slow).add("explode", explode)
        micro.modules.want(["error"])
        micro.modules.get("error")
        micro.hook("on_start", announce)
        micro.start()
        """
    )
    async with Micro(micro_settings, service="client") as client:
        slow = asyncio.ensure_future(client.act("slow"))
        assert "slow started" in await asyncio.to_thread(service.process.stdout.readline)
        with pytest.raises(FatalError):
            await client.act("explode")
        assert await slow == "finished"  # the request in flight was drained, not dropped
    assert await asyncio.to_thread(service.wait, 20) == EXIT_FATAL
    _, errors = service.stop()
    assert "the disk is gone" in errors
