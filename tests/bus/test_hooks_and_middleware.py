"""Hooks around requests, calls and the service life cycle; middleware around one command."""

import pytest

from micro import (
    Context,
    ForbiddenError,
    InternalError,
    Micro,
    MicroError,
    NotFoundError,
    Settings,
    UnauthorizedError,
)


def echo(request):
    return request


async def test_on_request_sees_every_request_with_its_context(micro_settings: Settings) -> None:
    seen: list[tuple[object, str, str]] = []
    service = Micro(micro_settings, service="svc").add("echo", echo)
    service.hook("on_request", lambda payload, ctx: seen.append((payload, ctx.command, ctx.caller)))
    async with service, Micro(micro_settings, service="caller") as caller:
        assert await caller.act("echo", {"n": 1}) == {"n": 1}
    assert seen == [({"n": 1}, "echo", None)]


async def test_pre_handler_can_reject_a_request_like_an_auth_guard(
    micro_settings: Settings,
) -> None:
    handled: list[object] = []

    def guard(payload, ctx: Context) -> None:
        if ctx.meta.get("token") != "secret":
            raise UnauthorizedError("a valid token is required")

    service = Micro(micro_settings, service="svc").add("echo", lambda r: handled.append(r) or r)
    service.hook("pre_handler", guard)
    async with service, Micro(micro_settings, service="caller") as caller:
        with pytest.raises(UnauthorizedError, match="valid token"):
            await caller.act("echo", {"n": 1})
        assert handled == []
        assert await caller.act("echo", {"n": 2}, meta={"token": "secret"}) == {"n": 2}
    assert handled == [{"n": 2}]


async def test_on_response_may_replace_the_reply_and_none_keeps_it(
    micro_settings: Settings,
) -> None:
    async def wrap(reply, ctx: Context):
        return {"data": reply, "trace": ctx.trace_id}

    service = Micro(micro_settings, service="svc").add("echo", echo)
    service.hook("on_response", lambda reply, ctx: None)  # an observer: keeps the reply
    service.hook("on_response", wrap)
    async with service, Micro(micro_settings, service="caller") as caller:
        reply = await caller.act("echo", [1, 2])
    assert reply["data"] == [1, 2]
    assert len(reply["trace"]) == 16


async def test_on_error_sees_handler_errors_and_rejections(micro_settings: Settings) -> None:
    errors: list[tuple[str, str]] = []

    def lookup(request):
        raise NotFoundError(f"no {request['id']}")

    def guard(payload, ctx):
        if payload == "forbidden":
            raise ForbiddenError("no")

    service = Micro(micro_settings, service="svc").add("lookup", lookup).add("echo", echo)
    service.hook("pre_handler", guard)
    service.hook("on_error", lambda error, ctx: errors.append((error.code, ctx.command)))
    async with service, Micro(micro_settings, service="caller") as caller:
        with pytest.raises(NotFoundError):
            await caller.act("lookup", {"id": "x"})
        with pytest.raises(ForbiddenError):
            await caller.act("echo", "forbidden")
    assert errors == [("not_found", "lookup"), ("forbidden", "echo")]


async def test_on_act_and_on_act_finished_wrap_every_call_of_a_client(
    micro_settings: Settings,
) -> None:
    calls: list[tuple] = []
    service = Micro(micro_settings, service="svc").add("echo", echo)
    service.add("fail", lambda: (_ for _ in ()).throw(NotFoundError("gone")))
    caller = Micro(micro_settings, service="caller")
    caller.hook("on_act", lambda name, payload, ctx: calls.append(("act", name, payload, ctx)))
    caller.hook(
        "on_act_finished",
        lambda name, outcome, seconds: calls.append(("done", name, outcome, seconds >= 0)),
    )
    async with service, caller:
        await caller.act("echo", 7)
        with pytest.raises(NotFoundError):
            await caller.act("fail")
        assert [m async for m in caller.act_stream("echo", 8)] == [8]
    assert calls[0] == ("act", "echo", 7, None)
    assert calls[1] == ("done", "echo", 7, True)
    assert calls[2] == ("act", "fail", None, None)
    assert calls[3][:2] == ("done", "fail")
    assert isinstance(calls[3][2], NotFoundError)
    assert calls[4:] == [("act", "echo", 8, None), ("done", "echo", 8, True)]


async def test_on_act_inside_a_handler_gets_the_requests_context(
    micro_settings: Settings,
) -> None:
    parents: list[str | None] = []
    service = Micro(micro_settings, service="svc").add("echo", echo)

    async def relay(request, ctx: Context):
        return await ctx.act("echo", request)

    service.add("relay", relay)
    service.hook("on_act", lambda name, payload, ctx: parents.append(ctx and ctx.command))
    async with service, Micro(micro_settings, service="caller") as caller:
        assert await caller.act("relay", 3) == 3
    assert parents == ["relay"]


async def test_a_failing_on_act_finished_hook_does_not_change_the_outcome(
    micro_settings: Settings,
) -> None:
    caller = Micro(micro_settings, service="caller")
    caller.hook("on_act_finished", lambda name, outcome, seconds: 1 / 0)
    async with Micro(micro_settings, service="svc").add("echo", echo), caller:
        assert await caller.act("echo", 5) == 5


async def test_on_start_and_on_stop_run_once_each_around_serving(
    micro_settings: Settings,
) -> None:
    events: list[tuple[str, bool]] = []
    service = Micro(micro_settings, service="svc").add("echo", echo)
    service.hook("on_start", lambda micro: events.append(("start", micro.serving)))

    async def stopping(micro: Micro) -> None:
        events.append(("stop", micro is service))

    service.hook("on_stop", stopping)
    async with service:
        assert events == [("start", True)]
    assert events == [("start", True), ("stop", True)]


async def test_a_failing_on_start_hook_fails_open_and_leaves_nothing_serving(
    micro_settings: Settings,
) -> None:
    def broken(micro: Micro) -> None:
        raise RuntimeError("cannot warm the cache")

    service = Micro(micro_settings, service="svc").add("echo", echo).hook("on_start", broken)
    with pytest.raises(RuntimeError, match="warm the cache"):
        await service.open()
    assert not service.serving
    async with Micro(micro_settings, service="caller") as caller:
        assert await caller.services() == []


@pytest.mark.parametrize("kind", ["on_request", "pre_handler", "on_response"])
async def test_a_hook_that_raises_becomes_a_typed_error_and_the_service_keeps_serving(
    micro_settings: Settings, kind: str
) -> None:
    broken = {"yes": True}

    async def flaky(first, ctx):
        if broken["yes"]:
            raise KeyError("bug in a hook")

    service = Micro(micro_settings, service="svc").add("echo", echo).hook(kind, flaky)
    async with service, Micro(micro_settings, service="caller") as caller:
        with pytest.raises(InternalError, match="internal error in 'echo'") as caught:
            await caller.act("echo", 1)
        assert caught.value.service == "svc"
        assert "bug in a hook" not in str(caught.value)  # no internals leak to callers
        broken["yes"] = False
        assert await caller.act("echo", 2) == 2


async def test_a_failing_on_error_hook_is_logged_and_the_error_reply_still_goes_out(
    micro_settings: Settings,
) -> None:
    service = Micro(micro_settings, service="svc")
    service.add("lookup", lambda: (_ for _ in ()).throw(NotFoundError("gone")))
    service.hook("on_error", lambda error, ctx: 1 / 0)
    async with service, Micro(micro_settings, service="caller") as caller:
        with pytest.raises(NotFoundError, match="gone"):
            await caller.act("lookup")


async def test_hooks_added_while_serving_apply_to_the_next_request(
    micro_settings: Settings,
) -> None:
    service = Micro(micro_settings, service="svc").add("echo", echo)
    async with service, Micro(micro_settings, service="caller") as caller:
        assert await caller.act("echo", 1) == 1
        service.hook("on_response", lambda reply, ctx: reply * 10)
        assert await caller.act("echo", 1) == 10


@pytest.mark.parametrize(
    ("kind", "hook", "error", "message"),
    [
        ("on_request", lambda payload: None, TypeError, r"\(payload, ctx\)"),
        ("on_act", lambda name, payload: None, TypeError, r"\(name, payload, ctx\)"),
        ("on_start", lambda: None, TypeError, r"\(micro\)"),
        ("on_error", lambda error, ctx, extra: None, TypeError, r"\(error, ctx\)"),
        ("on_response", "not a function", TypeError, "not callable"),
        ("on_reply", lambda reply, ctx: None, ValueError, "unknown hook 'on_reply'"),
    ],
)
def test_bad_hooks_are_refused_at_registration(
    micro_settings: Settings, kind: str, hook, error: type, message: str
) -> None:
    micro = Micro(micro_settings)
    with pytest.raises(error, match=message):
        micro.hook(kind, hook)
    assert not any(getattr(micro.hooks, name, None) for name in ("on_request", "on_act"))


def test_hooks_with_optional_or_variadic_parameters_are_accepted(
    micro_settings: Settings,
) -> None:
    micro = Micro(micro_settings)
    micro.hook("on_request", lambda *args: None)
    micro.hook("on_response", lambda reply, ctx=None, extra=1: None)
    assert len(micro.hooks.on_request) == 1
    assert len(micro.hooks.on_response) == 1


async def test_middleware_wraps_a_command_outermost_first(micro_settings: Settings) -> None:
    order: list[str] = []

    def tracing(label: str):
        async def middleware(payload, ctx, call_next):
            order.append(f"{label} in")
            reply = await call_next(payload, ctx)
            order.append(f"{label} out")
            return reply

        return middleware

    service = Micro(micro_settings, service="svc")
    service.add("echo", lambda r: order.append("handler") or r, middleware=[tracing("a")])
    service.use("echo", tracing("b"))
    async with service, Micro(micro_settings, service="caller") as caller:
        assert await caller.act("echo", 4) == 4
    assert order == ["a in", "b in", "handler", "b out", "a out"]


async def test_middleware_may_answer_without_calling_the_handler(
    micro_settings: Settings,
) -> None:
    cache = {"k": "cached"}

    async def cached(payload, ctx, call_next):
        if payload in cache:
            return cache[payload]
        return await call_next(payload, ctx)

    def plain(payload, ctx, call_next):  # a plain function returning call_next(...) works too
        return call_next(payload, ctx)

    service = Micro(micro_settings, service="svc").add(
        "get", lambda key: f"computed {key}", middleware=[plain, cached]
    )
    async with service, Micro(micro_settings, service="caller") as caller:
        assert await caller.act("get", "k") == "cached"
        assert await caller.act("get", "z") == "computed z"


def test_bad_middleware_is_refused_at_registration(micro_settings: Settings) -> None:
    micro = Micro(micro_settings).add("echo", echo)
    with pytest.raises(TypeError, match=r"\(payload, ctx, call_next\)"):
        micro.use("echo", lambda payload, ctx: payload)
    with pytest.raises(TypeError, match="not callable"):
        micro.add("other", echo, middleware=[42])  # type: ignore[list-item]
    with pytest.raises(KeyError, match="add it first"):
        micro.use("missing", lambda payload, ctx, call_next: None)
    assert "other" not in micro.endpoints


async def test_an_error_raised_by_middleware_reaches_the_caller_typed(
    micro_settings: Settings,
) -> None:
    async def deny(payload, ctx, call_next):
        raise ForbiddenError("read-only today")

    service = Micro(micro_settings, service="svc").add("echo", echo, middleware=[deny])
    async with service, Micro(micro_settings, service="caller") as caller:
        with pytest.raises(MicroError) as caught:
            await caller.act("echo", 1)
    assert isinstance(caught.value, ForbiddenError)
