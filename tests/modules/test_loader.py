"""The module loader: dependency order, reverse stop, clear errors, per-user instances."""

from __future__ import annotations

from typing import Any

import pytest

from micro import ConfigError, Micro, Settings
from micro.modules.loader import ModuleLoader


class Part:
    """A module that writes down when it starts and stops."""

    def __init__(self, name: str, journal: list[str], deps: dict[str, Any]) -> None:
        self.name = name
        self.journal = journal
        self.deps = deps
        self.running = False

    async def start(self) -> None:
        for dependency in self.deps.values():
            if isinstance(dependency, Part):
                assert dependency.running, f"{self.name} started before {dependency.name}"
        self.running = True
        self.journal.append(f"start {self.name}")

    def stop(self) -> None:  # sync on purpose: both forms are called
        self.running = False
        self.journal.append(f"stop {self.name}")


def loader_with(journal: list[str], graph: dict[str, list[str]]) -> ModuleLoader:
    loader = ModuleLoader(micro=None)  # type: ignore[arg-type]  # factories here ignore it
    for name, requires in graph.items():
        loader.register(
            name,
            lambda _micro, deps, name=name: Part(name, journal, deps),
            requires=requires,
        )
    return loader


async def test_modules_start_after_what_they_require_and_stop_in_reverse() -> None:
    journal: list[str] = []
    loader = loader_with(
        journal,
        {"store": [], "cache": ["store"], "api": ["cache", "store"], "unused": []},
    )
    loader.want(["api"])
    await loader.start()
    assert journal == ["start store", "start cache", "start api"]
    await loader.stop()
    assert journal[3:] == ["stop api", "stop cache", "stop store"]


async def test_a_factory_receives_the_instances_it_requires() -> None:
    journal: list[str] = []
    loader = loader_with(journal, {"store": [], "api": ["store"]})
    api = loader.get("api")
    assert set(api.deps) == {"store"}
    assert api.deps["store"] is loader.get("store")
    assert loader.get("api") is api  # a singleton is made once


def test_order_lists_dependencies_first_and_each_module_once() -> None:
    loader = loader_with([], {"a": [], "b": ["a"], "c": ["a", "b"], "d": ["c", "a"]})
    assert loader.order(["d", "b"]) == ["a", "b", "c", "d"]


def test_a_cycle_is_a_config_error_naming_the_whole_chain() -> None:
    loader = loader_with(
        [], {"web": ["auth"], "auth": ["users"], "users": ["audit"], "audit": ["auth"]}
    )
    with pytest.raises(ConfigError) as raised:
        loader.want(["web"])
    assert "auth -> users -> audit -> auth" in str(raised.value)
    assert loader.wanted == []


def test_a_module_requiring_itself_is_a_cycle() -> None:
    loader = loader_with([], {"selfish": ["selfish"]})
    with pytest.raises(ConfigError, match="selfish -> selfish"):
        loader.order(["selfish"])


def test_an_unknown_module_is_a_config_error_listing_the_known_ones() -> None:
    loader = loader_with([], {"store": [], "cache": ["store"]})
    with pytest.raises(ConfigError) as raised:
        loader.want(["stroe"])
    message = str(raised.value)
    assert "'stroe'" in message
    assert "cache, store" in message


def test_an_unknown_requirement_says_who_required_it() -> None:
    loader = loader_with([], {"api": ["cache"], "cache": ["redis"]})
    with pytest.raises(ConfigError) as raised:
        loader.order(["api"])
    assert "unknown module 'redis' (required by api -> cache)" in str(raised.value)


@pytest.mark.parametrize(
    ("name", "options", "reason"),
    [
        ("not a name", {}, "identifier"),
        ("odd", {"scope": "per_request"}, "scope"),
        ("odd", {"factory": 42}, "not callable"),
        ("odd", {"factory": "no colon"}, "import path"),
    ],
)
def test_bad_registrations_are_refused(name: str, options: dict[str, Any], reason: str) -> None:
    loader = ModuleLoader(micro=None)  # type: ignore[arg-type]
    factory = options.pop("factory", lambda _micro, _deps: object())
    with pytest.raises(ConfigError, match=reason):
        loader.register(name, factory, **options)


def test_a_factory_given_by_import_path_is_imported_when_first_loaded() -> None:
    loader = ModuleLoader(micro=None)  # type: ignore[arg-type]
    loader.register("clock", "time:monotonic_ns")
    loader.register("gone", "micro.no_such_module:factory")

    with pytest.raises(TypeError):  # resolved and called: monotonic_ns takes no arguments
        loader.get("clock")
    with pytest.raises(ConfigError, match="module 'gone': cannot load its factory"):
        loader.get("gone")


def test_registering_a_name_twice_needs_replace() -> None:
    loader = ModuleLoader(micro=None)  # type: ignore[arg-type]
    loader.register("clock", lambda _micro, _deps: 1)
    with pytest.raises(ConfigError, match="registered twice"):
        loader.register("clock", lambda _micro, _deps: 2)
    loader.register("clock", lambda _micro, _deps: 2, replace=True)
    assert loader.get("clock") == 2


async def test_per_user_modules_are_one_instance_per_user() -> None:
    journal: list[str] = []
    loader = loader_with(journal, {"store": []})
    loader.register(
        "session",
        lambda _micro, deps: Part(f"session of {deps['user']}", journal, deps),
        requires=["store"],
        scope="per_user",
    )
    ada = loader.get("session", user="ada")
    assert loader.get("session", user="ada") is ada
    bob = loader.get("session", user="bob")
    assert bob is not ada
    assert ada.deps["user"] == "ada"
    assert ada.deps["store"] is bob.deps["store"] is loader.get("store")
    await loader.stop()
    assert sorted(journal) == ["stop session of ada", "stop session of bob"]
    assert loader.get("session", user="ada") is not ada  # a stop forgets them


def test_a_per_user_module_needs_a_user() -> None:
    loader = ModuleLoader(micro=None)  # type: ignore[arg-type]
    loader.register("session", lambda _micro, _deps: object(), scope="per_user")
    with pytest.raises(ConfigError, match="per user"):
        loader.get("session")


def test_a_singleton_cannot_require_a_per_user_module() -> None:
    loader = ModuleLoader(micro=None)  # type: ignore[arg-type]
    loader.register("session", lambda _micro, _deps: object(), scope="per_user")
    loader.register("audit", lambda _micro, _deps: object(), requires=["session"])
    with pytest.raises(ConfigError, match="per-user module 'session'"):
        loader.get("audit")


async def test_one_module_failing_to_stop_does_not_keep_the_others_running() -> None:
    journal: list[str] = []
    loader = loader_with(journal, {"store": [], "api": ["store"]})

    class Stubborn(Part):
        def stop(self) -> None:
            raise RuntimeError("will not stop")

    loader.register(
        "stubborn", lambda _micro, deps: Stubborn("stubborn", journal, deps), requires=["api"]
    )
    loader.want(["stubborn"])
    await loader.start()
    await loader.stop()
    assert journal[-2:] == ["stop api", "stop store"]
    assert loader.started == []


async def test_every_wanted_module_exists_before_the_first_one_starts() -> None:
    # A module may wire itself into another at creation (the snapshooter into the
    # commander); that must happen before the other one starts.
    journal: list[str] = []
    loader = ModuleLoader(micro=None)  # type: ignore[arg-type]
    plugs: list[str] = []

    class Hub(Part):
        async def start(self) -> None:
            journal.append(f"hub starts with plugs {plugs}")
            await super().start()

    loader.register("hub", lambda _micro, _deps: Hub("hub", journal, {}))

    def plug(_micro: Any, deps: dict[str, Any]) -> Part:
        plugs.append("plug")
        return Part("plug", journal, deps)

    loader.register("plug", plug, requires=["hub"])
    loader.want(["plug"])
    await loader.start()
    assert journal[0] == "hub starts with plugs ['plug']"


async def test_add_procedure_runs_with_the_modules_it_loads_once_they_started(
    micro_settings: Settings,
) -> None:
    journal: list[str] = []
    micro = Micro(micro_settings, service="procedures")
    micro.modules.register("store", lambda _micro, deps: Part("store", journal, deps))
    micro.modules.register(
        "mailer", lambda _micro, deps: Part("mailer", journal, deps), requires=["store"]
    )
    received: dict[str, Any] = {}

    async def begin(mailer: Part, store: Part) -> None:
        assert mailer.running
        assert store.running
        received.update(mailer=mailer, store=store)
        journal.append("procedure")

    micro.add_procedure(load=["mailer", "store"], start=begin)
    micro.add_procedure(load=["store"], start=lambda store: journal.append(f"sync {store.name}"))
    async with micro:
        assert journal == ["start store", "start mailer", "procedure", "sync store"]
        assert received["store"] is micro.modules.get("store")
        assert received["mailer"].deps["store"] is received["store"]
    assert journal[-2:] == ["stop mailer", "stop store"]


def test_add_procedure_refuses_unknown_modules_when_declared(micro_settings: Settings) -> None:
    micro = Micro(micro_settings, service="procedures")
    with pytest.raises(ConfigError, match="unknown module 'mailer'"):
        micro.add_procedure(load=["mailer"], start=lambda mailer: None)
    with pytest.raises(TypeError):
        micro.add_procedure(load=[], start="not callable")  # type: ignore[arg-type]


def test_the_event_sourcing_modules_are_registered_by_name(micro_settings: Settings) -> None:
    micro = Micro(micro_settings, service="bank")
    for name in ("commander", "modeler", "ruler", "reducer", "snapshooter", "app_stream"):
        assert name in micro.modules.specs
    assert micro.modules.order(["snapshooter"]) == ["commander", "snapshooter"]
    assert micro.modules.get("modeler").models is micro.commander.models
