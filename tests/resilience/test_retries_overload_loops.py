"""Resilience: retries of idempotent commands, the in-flight cap, the loop guard."""

import asyncio
import time
from collections.abc import Callable

import nats
import orjson
import pytest

from micro import (
    Context,
    LoopDetectedError,
    Micro,
    NotFoundError,
    OverloadedError,
    RetryPolicy,
    Settings,
    TimeoutError,
    UnavailableError,
)
from micro.bus import headers as h
from micro.bus.subjects import command_subject
from micro.testing import NatsServer
from micro.testing import wait_until as until


class Flaky:
    """A handler that fails with ``error`` the first ``failures`` times."""

    def __init__(self, failures: int, error: Callable[[], Exception]) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    def __call__(self, request: object) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error()
        return f"ok after {self.calls}"


# -- the in-flight cap ------------------------------------------------------------------


async def test_requests_beyond_max_in_flight_are_refused_as_retryable_overload(
    micro_settings: Settings,
) -> None:
    release = asyncio.Event()

    async def blocked(request: object) -> str:
        await release.wait()
        return "done"

    service = Micro(micro_settings, service="busy", max_in_flight=2).add("work", blocked)
    async with service, Micro(micro_settings, service="caller") as caller:
        held = [asyncio.create_task(caller.act("work", n)) for n in range(2)]
        await until(lambda: service._responder.in_flight == 2)
        started = time.monotonic()
        with pytest.raises(OverloadedError, match="limit 2") as caught:
            await caller.act("work", "third")
        assert time.monotonic() - started < 3  # refused at once, not held until the call times out
        assert caught.value.retryable
        assert caught.value.service == "busy"
        release.set()
        assert await asyncio.gather(*held) == ["done", "done"]
        assert await caller.act("work", "fourth") == "done"  # capacity is back


async def test_a_burst_is_cut_at_exactly_max_in_flight(micro_settings: Settings) -> None:
    release = asyncio.Event()

    async def blocked(request: object) -> int:
        await release.wait()
        return 1

    service = Micro(micro_settings, service="busy", max_in_flight=3).add("work", blocked)
    async with service, Micro(micro_settings, service="caller") as caller:
        burst = [asyncio.create_task(caller.act("work", n)) for n in range(10)]
        # the seven beyond the cap fail at once, while the first three still wait
        await until(lambda: sum(task.done() for task in burst) == 7)
        release.set()
        outcomes = await asyncio.gather(*burst, return_exceptions=True)
    assert sum(outcome == 1 for outcome in outcomes) == 3
    assert sum(isinstance(outcome, OverloadedError) for outcome in outcomes) == 7


# -- retries ----------------------------------------------------------------------------


async def test_an_idempotent_command_is_retried_on_retryable_errors_until_it_succeeds(
    micro_settings: Settings,
) -> None:
    flaky = Flaky(2, lambda: UnavailableError("database restarting"))
    service = Micro(micro_settings, service="svc").add("read", flaky, idempotent=True)
    # the caller declares nothing: the error reply says the command is idempotent
    async with service, Micro(micro_settings, service="caller") as caller:
        assert await caller.act("read", {}) == "ok after 3"
    assert flaky.calls == 3


async def test_a_command_not_declared_idempotent_is_never_retried(
    micro_settings: Settings,
) -> None:
    flaky = Flaky(1, lambda: UnavailableError("database restarting"))
    service = Micro(micro_settings, service="svc").add("write", flaky)
    async with service, Micro(micro_settings, service="caller") as caller:
        with pytest.raises(UnavailableError):
            await caller.act("write", {})
    assert flaky.calls == 1


async def test_errors_that_are_not_retryable_are_not_retried(micro_settings: Settings) -> None:
    flaky = Flaky(1, lambda: NotFoundError("no such thing"))
    service = Micro(micro_settings, service="svc").add("read", flaky, idempotent=True)
    async with service, Micro(micro_settings, service="caller") as caller:
        with pytest.raises(NotFoundError):
            await caller.act("read", {})
    assert flaky.calls == 1


async def test_retries_are_bounded_by_the_policys_attempts(micro_settings: Settings) -> None:
    flaky = Flaky(100, lambda: UnavailableError("down"))
    service = Micro(micro_settings, service="svc").add("read", flaky)
    caller = Micro(micro_settings, service="caller")
    caller.retry("read", RetryPolicy(attempts=4, delay=0.01))
    async with service, caller:
        with pytest.raises(UnavailableError):
            await caller.act("read", {})
    assert flaky.calls == 4


async def test_retries_never_outlive_the_calls_deadline(micro_settings: Settings) -> None:
    flaky = Flaky(10_000, lambda: UnavailableError("down"))
    service = Micro(micro_settings, service="svc").add("read", flaky)
    caller = Micro(micro_settings, service="caller")
    caller.retry("read", RetryPolicy(attempts=1000, delay=0.05, max_delay=0.1))
    async with service, caller:
        started = time.monotonic()
        # The last error, or a timeout when the last attempt reached the service too late.
        with pytest.raises((UnavailableError, TimeoutError)):
            await caller.act("read", {}, timeout=0.5)
        # Far below the thousand attempts' worth of pauses (~100 s).
        assert time.monotonic() - started < 2.0
    assert 2 <= flaky.calls < 1000


async def test_a_caller_declared_retry_rides_out_an_overloaded_service(
    micro_settings: Settings,
) -> None:
    release = asyncio.Event()

    async def blocked(request: object) -> str:
        await release.wait()
        return "served"

    service = Micro(micro_settings, service="busy", max_in_flight=1).add("work", blocked)
    caller = Micro(micro_settings, service="caller")
    caller.retry("work", RetryPolicy(attempts=50, delay=0.02, max_delay=0.05))
    async with service, caller:
        first = asyncio.create_task(caller.act("work", 1))
        await until(lambda: service._responder.in_flight == 1)
        second = asyncio.create_task(caller.act("work", 2))
        stats = service._responder.served["work"].stats
        await until(lambda: stats.errors >= 1)  # the second was refused at least once
        release.set()
        assert await asyncio.gather(first, second) == ["served", "served"]


async def test_retries_also_apply_to_calls_made_inside_handlers(
    micro_settings: Settings,
) -> None:
    flaky = Flaky(2, lambda: OverloadedError("busy"))
    backend = Micro(micro_settings, service="backend").add("fetch", flaky)
    front = Micro(micro_settings, service="front")
    front.retry("fetch", RetryPolicy(attempts=3, delay=0.01))

    async def proxy(request: object, ctx: Context) -> str:
        return await ctx.act("fetch", request)

    front.add("proxy", proxy)
    async with backend, front, Micro(micro_settings, service="caller") as caller:
        assert await caller.act("proxy", {}) == "ok after 3"


async def test_discovery_teaches_which_commands_are_idempotent(
    micro_settings: Settings,
) -> None:
    service = Micro(micro_settings, service="svc").add("read", lambda: 1, idempotent=True)
    service.add("write", lambda: 1)
    async with service, Micro(micro_settings, service="caller") as caller:
        assert caller._caller.policy("read") is None
        await caller.discover("svc", timeout=10)
        assert caller._caller.policy("read") is not None
        assert caller._caller.policy("write") is None


def test_retry_pauses_grow_exponentially_with_full_jitter_and_a_cap() -> None:
    policy = RetryPolicy(attempts=10, delay=0.1, factor=2, max_delay=0.5)
    for attempt, bound in [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.5), (8, 0.5)]:
        pauses = [policy.pause(attempt) for _ in range(200)]
        assert all(0 <= pause <= bound for pause in pauses)
        assert max(pauses) > bound / 2  # jitter spreads over the whole range
        assert len(set(pauses)) > 100


@pytest.mark.parametrize(
    "options", [{"attempts": 0}, {"attempts": 1.5}, {"delay": -1}, {"factor": 0.5}]
)
def test_nonsense_retry_policies_are_refused(options: dict) -> None:
    with pytest.raises((ValueError, TypeError)):
        RetryPolicy(**options)


# -- the loop guard ---------------------------------------------------------------------


async def test_a_command_that_calls_itself_stops_with_loop_detected(
    micro_settings: Settings,
) -> None:
    depth: list[int] = []

    async def recurse(request: object, ctx: Context) -> object:
        depth.append(ctx.hops)
        return await ctx.act("recurse", request)

    service = Micro(micro_settings, service="svc", max_hops=5).add("recurse", recurse)
    async with service, Micro(micro_settings, service="caller") as caller:
        with pytest.raises(LoopDetectedError, match="limit 5") as caught:
            await caller.act("recurse", {})
    assert depth == [0, 1, 2, 3, 4]
    assert caught.value.hops == 5


async def test_a_loop_between_two_processes_is_stopped(spawn, micro_settings: Settings) -> None:
    spawn(
        """
        from micro import Context
        async def ping(request, ctx: Context):
            return await ctx.act("pong", request)
        micro = Micro(service="pinger", max_hops=6)
        micro.add("ping", ping)
        micro.hook("on_start", announce)
        micro.start()
        """
    )

    async def pong(request: object, ctx: Context) -> object:
        return await ctx.act("ping", request)

    async with (
        Micro(micro_settings, service="ponger", max_hops=6).add("pong", pong),
        Micro(micro_settings, service="caller") as caller,
    ):
        with pytest.raises(LoopDetectedError):
            await caller.act("ping", {}, timeout=5)


async def test_a_request_arriving_past_max_hops_is_refused_by_the_service(
    nats_server: NatsServer, micro_settings: Settings
) -> None:
    handled: list[object] = []
    service = Micro(micro_settings, service="svc", max_hops=4).add("echo", handled.append)
    async with service:
        client = await nats.connect(nats_server.url)
        try:
            reply = await client.request(
                command_subject(micro_settings.namespace, "echo"),
                b"{}",
                headers={h.HOPS: "4"},
                timeout=5,
            )
        finally:
            await client.close()
    assert reply.headers[h.SERVICE_ERROR_CODE] == "508"
    assert orjson.loads(reply.data)["error"]["code"] == "loop_detected"
    assert handled == []
