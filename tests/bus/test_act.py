import asyncio
import builtins
import os
import signal
import time

import nats
import orjson
import pytest
import structlog
from pydantic import BaseModel

from micro import (
    ConfigError,
    Context,
    InternalError,
    Micro,
    PayloadTooLargeError,
    ServiceNotFoundError,
    Settings,
    TimeoutError,
    UnavailableError,
    ValidationError,
)
from micro.bus.subjects import command_subject
from micro.log import configure_logging


async def test_act_calls_a_service_in_another_process(spawn, micro_settings: Settings) -> None:
    spawn(
        """
        micro = Micro(service="calc")
        micro.add("multiply two numbers", lambda req: req["first"] * req["second"])
        micro.hook("on_start", announce)
        micro.start()
        """
    )
    async with Micro(micro_settings, service="caller") as micro:
        assert await micro.act("multiply two numbers", {"first": 5, "second": 3}) == 15


async def test_two_instances_of_one_service_share_the_load(spawn, micro_settings) -> None:
    source = """
        micro = Micro(service="worker")
        micro.add("whoami", lambda: os.getpid())
        micro.hook("on_start", announce)
        micro.start()
        """
    first, second = spawn(source), spawn(source)
    async with Micro(micro_settings, service="caller") as micro:
        answers = await asyncio.gather(*(micro.act("whoami") for _ in range(200)))
    counts = {pid: answers.count(pid) for pid in set(answers)}
    assert set(counts) == {first.pid, second.pid}
    assert min(counts.values()) > 20  # both took a real share, not a stray request


async def test_two_services_never_receive_each_others_requests(micro_settings) -> None:
    seen: dict[str, list[str]] = {"a": [], "b": []}
    service_a = Micro(micro_settings, service="a").add("ask a", lambda: seen["a"].append("a"))
    service_b = Micro(micro_settings, service="b").add("ask b", lambda: seen["b"].append("b"))
    async with service_a, service_b, Micro(micro_settings, service="caller") as caller:
        for _ in range(20):
            await caller.act("ask a")
            await caller.act("ask b")
    assert seen == {"a": ["a"] * 20, "b": ["b"] * 20}


async def test_graceful_stop_answers_every_request_in_flight(spawn, micro_settings) -> None:
    service = spawn(
        """
        micro = Micro(service="slow")
        started = 0
        async def slow(req):
            global started
            started += 1
            if started == 20:
                print("all-started", flush=True)
            await asyncio.sleep(0.5)
            return req["n"]
        micro.add("slow echo", slow)
        micro.hook("on_start", announce)
        micro.start()
        """
    )
    async with Micro(micro_settings, service="caller") as micro:
        calls = [asyncio.create_task(micro.act("slow echo", {"n": n})) for n in range(20)]
        line = await asyncio.to_thread(service.process.stdout.readline)
        assert line.strip() == "all-started"
        service.signal(signal.SIGTERM)
        assert await asyncio.gather(*calls) == list(range(20))
    assert await asyncio.to_thread(service.wait) == 0


async def test_nobody_serving_fails_fast_with_service_not_found(micro_settings) -> None:
    async with Micro(micro_settings) as micro:
        started = time.monotonic()
        with pytest.raises(ServiceNotFoundError, match="nobody|no service"):
            await micro.act("unknown command", {}, timeout=10)
        assert time.monotonic() - started < 3


async def test_a_slow_service_raises_timeout_naming_the_command(micro_settings) -> None:
    release = asyncio.Event()

    async def stuck() -> None:
        await release.wait()

    async with Micro(micro_settings, service="stuck").add("stuck", stuck) as micro:
        with pytest.raises(TimeoutError, match="'stuck' did not reply within 0.200s") as caught:
            await micro.act("stuck", timeout=0.2)
        assert isinstance(caught.value, builtins.TimeoutError)
        release.set()


async def test_nested_act_carries_trace_meta_and_the_shrinking_deadline(micro_settings) -> None:
    seen: dict[str, object] = {}

    async def inner(req: dict, ctx: Context) -> str:
        seen["inner_trace"] = ctx.trace_id
        seen["inner_meta"] = ctx.meta
        seen["inner_remaining"] = ctx.remaining
        seen["inner_hops"] = ctx.hops
        seen["caller"] = ctx.caller
        return "inner done"

    async def outer(req: dict, ctx: Context) -> str:
        seen["outer_trace"] = ctx.trace_id
        seen["outer_remaining"] = ctx.remaining
        await asyncio.sleep(0.3)  # spend part of the caller's time budget
        return await ctx.act("inner", {}, meta={"extra": 1})

    outer_service = Micro(micro_settings, service="outer").add("outer", outer)
    inner_service = Micro(micro_settings, service="inner").add("inner", inner)
    async with outer_service, inner_service, Micro(micro_settings) as caller:
        reply = await caller.act("outer", {}, timeout=10, meta={"token": "t-1"})
    assert reply == "inner done"
    assert seen["inner_trace"] == seen["outer_trace"]
    assert seen["inner_meta"] == {"token": "t-1", "extra": 1}
    assert seen["inner_hops"] == 1
    assert seen["caller"] == "outer"
    assert 5 < seen["outer_remaining"] <= 10
    assert seen["inner_remaining"] <= seen["outer_remaining"] - 0.3


async def test_plain_micro_act_inside_a_handler_also_propagates(micro_settings) -> None:
    traces: list[str] = []
    service = Micro(micro_settings, service="both")

    async def first(_req: dict, ctx: Context) -> None:
        traces.append(ctx.trace_id)
        await service.act("second")

    service.add("first", first).add("second", lambda _p, ctx: traces.append(ctx.trace_id))
    async with service:
        await service.act("first", {})
    assert len(traces) == 2
    assert traces[0] == traces[1]


class Pair(BaseModel):
    a: int
    b: int


async def test_a_typed_handler_rejects_bad_payloads_with_field_errors(micro_settings) -> None:
    typed = Micro(micro_settings, service="typed")

    def add(pair: Pair) -> int:
        return pair.a + pair.b

    async with typed.add("add", add):
        assert await typed.act("add", {"a": 1, "b": 2}) == 3
        with pytest.raises(ValidationError) as caught:
            await typed.act("add", {"a": "x"})
    fields = {item["field"]: item["reason"] for item in caught.value.fields}
    assert set(fields) == {"a", "b"}
    assert "integer" in fields["a"]
    assert "required" in fields["b"].lower()


class TestBadInput:
    async def test_a_payload_that_is_not_json_is_refused_before_sending(
        self, micro_settings
    ) -> None:
        received = []
        service = Micro(micro_settings, service="s").add("take", received.append)
        async with service:
            with pytest.raises(ValidationError, match="not JSON-serialisable.*set"):
                await service.act("take", {"items": {1, 2}})
            assert await service.act("take", {"ok": True}) is None
        assert received == [{"ok": True}]

    async def test_a_reply_that_is_not_json_is_an_error_naming_the_command(
        self, micro_settings
    ) -> None:
        service = Micro(micro_settings, service="s")
        service.add("bad reply", lambda: object()).add("good", lambda: "fine")
        async with service:
            with pytest.raises(InternalError, match="'bad reply' returned a value"):
                await service.act("bad reply")
            assert await service.act("good") == "fine"

    @pytest.mark.parametrize(
        ("name", "reason"),
        [("", "empty"), ("n" * 201, "limit"), ("bell\x07", "control")],
    )
    def test_invalid_command_names_are_refused_at_add(self, name: str, reason: str) -> None:
        with pytest.raises(ValueError, match=reason):
            Micro().add(name, lambda: None)

    def test_adding_the_same_command_twice_is_an_error(self) -> None:
        micro = Micro().add("once", lambda: None)
        with pytest.raises(ValueError, match="already served"):
            micro.add("once", lambda: None)

    @pytest.mark.parametrize("position", ["abc", -1, 2.5, True])
    async def test_a_min_position_that_is_no_position_is_refused_naming_the_field(
        self, micro_settings, position: object
    ) -> None:
        async with Micro(micro_settings).add("echo", lambda p: p) as micro:
            for caller in (micro, micro.session()):
                with pytest.raises(ValidationError, match="min_position must be") as refused:
                    await caller.act("echo", 1, min_position=position)  # type: ignore[arg-type]
                assert refused.value.fields[0]["field"] == "min_position"
            assert await micro.act("echo", 1, min_position=0) == 1

    async def test_a_payload_over_max_payload_names_the_limit(self, micro_settings) -> None:
        async with Micro(micro_settings).add("big", lambda p: len(p)) as micro:
            limit = micro.client.max_payload
            with pytest.raises(PayloadTooLargeError, match=f"max_payload is {limit} bytes"):
                await micro.act("big", "x" * (limit + 10))
            assert await micro.act("big", "x" * 1000) == 1000

    async def test_a_raw_body_that_is_not_json_gets_bad_request_and_service_lives_on(
        self, micro_settings
    ) -> None:
        async with Micro(micro_settings, service="s").add("echo", lambda p: p) as micro:
            raw = await nats.connect(micro_settings.nats_url)
            try:
                subject = command_subject(micro_settings.namespace, "echo")
                reply = await raw.request(subject, b"{not json", timeout=2)
                assert reply.headers["Nats-Service-Error-Code"] == "400"
                body = orjson.loads(reply.data)
                assert body["error"]["code"] == "bad_request"
            finally:
                await raw.close()
            assert await micro.act("echo", {"still": "serving"}) == {"still": "serving"}

    async def test_an_unexpected_exception_leaks_no_traceback(self, micro_settings) -> None:
        def broken() -> None:
            raise KeyError("secret internals")

        async with Micro(micro_settings, service="s").add("broken", broken) as micro:
            with pytest.raises(InternalError) as caught:
                await micro.act("broken")
        assert "secret internals" not in str(caught.value.to_wire())
        assert "Traceback" not in str(caught.value.to_wire())
        assert caught.value.trace_id in caught.value.message

    async def test_an_unreachable_nats_url_is_one_clear_error(self) -> None:
        started = time.monotonic()
        with pytest.raises(UnavailableError, match="nats://127.0.0.1:9"):
            await Micro(nats_url="nats://127.0.0.1:9", embedded=False).open()
        assert time.monotonic() - started < 3

    def test_invalid_settings_are_a_config_error_naming_the_field(self) -> None:
        with pytest.raises(ConfigError, match="service"):
            Micro(service="bad name!")
        with pytest.raises(ConfigError, match="version"):
            Micro(version="one")

    def test_settings_come_from_the_environment(self, monkeypatch) -> None:
        monkeypatch.setenv("NATS_URL", "nats://example:4222")
        monkeypatch.setenv("MICRO_SERVICE", "from-env")
        micro = Micro()
        assert micro.settings.nats_url == "nats://example:4222"
        assert micro.settings.service == "from-env"


async def test_lines_logged_in_a_handler_carry_service_command_trace_and_span(
    micro_settings,
) -> None:
    log = structlog.get_logger("test")

    def handler(_payload: object, ctx: Context) -> list[str]:
        log.info("inside the handler")
        return [ctx.trace_id, ctx.span_id]

    # Logging is configured once per process, by the first Micro: configured here, at info,
    # so that no Micro reconfigures it inside the capture, whichever test ran first.
    configure_logging("info", force=True)
    with structlog.testing.capture_logs(processors=[_context_processor()]) as captured:
        async with Micro(micro_settings, service="logged").add("log it", handler) as micro:
            trace, span = await micro.act("log it")
    lines = [line for line in captured if line["event"] == "inside the handler"]
    assert lines == [
        {
            "event": "inside the handler",
            "log_level": "info",
            "service": "logged",
            "command": "log it",
            "trace_id": trace,
            "span_id": span,
        }
    ]


def _context_processor():
    from micro.log import _request_context

    return _request_context


def test_start_serves_until_sigterm_then_exits_cleanly(spawn) -> None:
    service = spawn(
        """
        micro = Micro(service="blocking")
        micro.add("noop", lambda: None)
        micro.hook("on_start", announce)
        micro.start()
        print("stopped", flush=True)
        """
    )
    service.signal(signal.SIGTERM)
    assert service.wait() == 0
    out, _ = service.stop()
    assert out.strip() == "stopped"
    assert os.getpid() != service.pid
