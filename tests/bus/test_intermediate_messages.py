"""Intermediate messages: ctx.send in a handler, act_stream in the caller."""

import asyncio
import time

import pytest

from micro import (
    Context,
    Micro,
    NotFoundError,
    ServiceNotFoundError,
    Settings,
    TimeoutError,
)


async def collect(stream, into: list) -> None:
    async for message in stream:
        into.append(message)


async def count(request: dict, ctx: Context) -> str:
    for index in range(request["n"]):
        await ctx.send({"step": index})
    return "done"


async def test_act_stream_yields_messages_in_order_then_the_final_reply(
    micro_settings: Settings,
) -> None:
    async with (
        Micro(micro_settings, service="svc").add("count", count),
        Micro(micro_settings, service="caller") as caller,
    ):
        received = [m async for m in caller.act_stream("count", {"n": 50})]
    assert received == [{"step": index} for index in range(50)] + ["done"]


async def test_a_plain_act_gets_only_the_final_reply(micro_settings: Settings) -> None:
    async with (
        Micro(micro_settings, service="svc").add("count", count),
        Micro(micro_settings, service="caller") as caller,
    ):
        assert await caller.act("count", {"n": 5}) == "done"
        # nothing from the stream lingers for the next call either
        assert await caller.act("count", {"n": 0}) == "done"


async def test_an_error_after_some_messages_is_raised_typed_at_the_end(
    micro_settings: Settings,
) -> None:
    async def partial(request, ctx: Context) -> None:
        await ctx.send("first")
        raise NotFoundError("the rest is gone")

    async with (
        Micro(micro_settings, service="svc").add("partial", partial),
        Micro(micro_settings, service="caller") as caller,
    ):
        received = []
        with pytest.raises(NotFoundError, match="the rest is gone"):
            await collect(caller.act_stream("partial"), received)
    assert received == ["first"]


async def test_send_after_the_handler_replied_raises(micro_settings: Settings) -> None:
    outcome: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
    tasks: set[asyncio.Task[None]] = set()
    replied = asyncio.Event()

    async def late(ctx: Context) -> None:
        await replied.wait()
        try:
            await ctx.send("too late")
        except RuntimeError as error:
            outcome.set_result(error)
        else:
            outcome.set_result(None)

    async def hasty(request, ctx: Context) -> str:
        task = asyncio.create_task(late(ctx))
        tasks.add(task)
        return "replied"

    async with (
        Micro(micro_settings, service="svc").add("hasty", hasty),
        Micro(micro_settings, service="caller") as caller,
    ):
        assert [m async for m in caller.act_stream("hasty")] == ["replied"]
        replied.set()
        error = await asyncio.wait_for(outcome, 5)
    assert isinstance(error, RuntimeError)
    assert "already replied" in str(error)


async def test_a_service_relays_a_stream_from_another_process(
    spawn, micro_settings: Settings
) -> None:
    spawn(
        """
        from micro import Context
        async def produce(request, ctx: Context):
            for index in range(request["n"]):
                await ctx.send(index)
            return "source done"
        micro = Micro(service="source")
        micro.add("produce", produce)
        micro.hook("on_start", announce)
        micro.start()
        """
    )
    relay = Micro(micro_settings, service="relay")

    async def forward(request, ctx: Context) -> str:
        final = None
        async for message in relay.act_stream("produce", request):
            final = message
            if isinstance(message, int):
                await ctx.send({"relayed": message})
        return f"relay saw {final!r}"

    relay.add("forward", forward)
    async with relay, Micro(micro_settings, service="caller") as caller:
        received = [m async for m in caller.act_stream("forward", {"n": 20})]
    assert received == [{"relayed": index} for index in range(20)] + ["relay saw 'source done'"]


async def test_a_consumer_that_stops_reading_does_not_hold_up_the_service(
    micro_settings: Settings,
) -> None:
    finished = asyncio.Event()

    async def flood(request, ctx: Context) -> str:
        for index in range(5000):
            await ctx.send(index)
        finished.set()
        return "all sent"

    service = Micro(micro_settings, service="svc").add("flood", flood).add("ping", lambda: "pong")
    async with service, Micro(micro_settings, service="caller") as caller:

        def stream_inboxes() -> list[str]:
            subjects = [sub.subject for sub in caller.client._subs.values()]
            return [s for s in subjects if s.startswith("_INBOX.") and not s.endswith(".*")]

        stream = caller.act_stream("flood")
        async for message in stream:
            if message == 2:
                break
        # The consumer holds its inbox but reads no more: the service is not held up.
        await asyncio.wait_for(finished.wait(), 10)
        started = time.monotonic()
        assert await caller.act("ping") == "pong"
        assert time.monotonic() - started < 3
        assert len(stream_inboxes()) == 1
        await stream.aclose()  # what the event loop does for an abandoned generator
        assert stream_inboxes() == []


async def test_the_stream_timeout_bounds_the_whole_stream_not_the_gap_between_messages(
    micro_settings: Settings,
) -> None:
    caller_gave_up = asyncio.Event()

    async def trickle(request, ctx: Context) -> str:
        for index in range(100):
            if caller_gave_up.is_set():
                break  # nobody listens any more: end, so closing the service need not wait
            await ctx.send(index)
            await asyncio.sleep(0.05)  # the work being streamed: a message every 50 ms
        return "end"

    async with (
        Micro(micro_settings, service="svc").add("trickle", trickle),
        Micro(micro_settings, service="caller") as caller,
    ):
        received = []
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="did not end within"):
            await collect(caller.act_stream("trickle", timeout=1.0), received)
        elapsed = time.monotonic() - started
        caller_gave_up.set()
    # The gaps are 50 ms, so a per-gap timeout would never fire; the whole takes >= 5 s.
    assert 1.0 <= elapsed < 3.0
    assert 1 <= len(received) < 100


async def test_a_stream_to_a_command_nobody_serves_fails_fast(micro_settings: Settings) -> None:
    async with Micro(micro_settings, service="caller") as caller:
        started = time.monotonic()
        with pytest.raises(ServiceNotFoundError):
            async for _ in caller.act_stream("nobody serves this", timeout=10):
                pass
        assert time.monotonic() - started < 3
