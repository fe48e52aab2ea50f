"""The modules every Micro can load by name."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from micro.command.app_stream import EventHandlers
from micro.command.commander import Commander
from micro.modules.auth import register_auth
from micro.modules.error import ErrorModule
from micro.modules.loader import ModuleLoader
from micro.readmodel.snapshots import Snapshooter

if TYPE_CHECKING:
    from micro.app import Micro

__all__ = ["register_builtin_modules"]


class Modeler:
    """The ``modeler`` module: the service's models, and adding more."""

    def __init__(self, commander: Commander) -> None:
        self.commander = commander

    @property
    def models(self) -> Any:
        return self.commander.models

    def add_model(self, model: Any) -> None:
        self.commander.add_model(model)

    def health(self) -> dict[str, Any]:
        return self.commander.health()


class Ruler:
    """The ``ruler`` module: the rule sheets of the service's commands."""

    def __init__(self, commander: Commander) -> None:
        self.commander = commander

    def get(self, command: str) -> Any:
        return self.commander.rules[command]

    def names(self) -> list[str]:
        return sorted(self.commander.rules)


class ReducerRegistry:
    """The ``reducer`` module: reducers by event type, and adding more."""

    def __init__(self, commander: Commander) -> None:
        self.commander = commander

    def add(self, event_type: Any, reducer: Any) -> None:
        self.commander.add_reducer(event_type, reducer)

    def for_type(self, name: str) -> list[Any]:
        return list(self.commander.reducers.get(name, []))


def register_builtin_modules(loader: ModuleLoader) -> None:
    def commander(micro: Micro, _deps: dict[str, Any]) -> Commander:
        return Commander(micro)

    loader.register("commander", commander)
    loader.register("modeler", lambda _m, deps: Modeler(deps["commander"]), requires=["commander"])
    loader.register("ruler", lambda _m, deps: Ruler(deps["commander"]), requires=["commander"])
    loader.register(
        "reducer", lambda _m, deps: ReducerRegistry(deps["commander"]), requires=["commander"]
    )
    _register_event_sourcing(loader)
    register_auth(loader)
    _register_operations(loader)


def _snapshooter(micro: Micro, deps: dict[str, Any]) -> Snapshooter:
    commander: Commander = deps["commander"]
    snapshooter = Snapshooter(
        _Lazy(micro),
        namespace=micro.settings.namespace,
        service=micro.settings.service,
        every_events=micro.settings.snapshot_every_events,
        every_seconds=micro.settings.snapshot_every_seconds,
    )
    commander.snapshots = snapshooter  # restored before the models catch up
    return snapshooter


class _Lazy:
    """The Micro's NATS client, looked up when first used (modules exist before connect)."""

    def __init__(self, micro: Micro) -> None:
        self.micro = micro

    def jetstream(self) -> Any:
        if self.micro.client is None:
            raise RuntimeError("not connected")
        return self.micro.client.jetstream()


def _register_event_sourcing(loader: ModuleLoader) -> None:
    loader.register("snapshooter", _snapshooter, requires=["commander"])
    loader.register(
        "app_stream",
        lambda micro, deps: EventHandlers(micro, deps["commander"]),
        requires=["commander"],
    )


def _register_operations(loader: ModuleLoader) -> None:
    # config pulls in jsonschema: imported only by services that use it.
    def error(micro: Micro, _deps: dict[str, Any]) -> ErrorModule:
        return ErrorModule(micro)

    def logger(micro: Micro, _deps: dict[str, Any]) -> Any:
        from micro.modules.logger import LoggerModule

        return LoggerModule(micro)

    def config(micro: Micro, _deps: dict[str, Any]) -> Any:
        from micro.modules.config import ConfigClient

        return ConfigClient(micro)

    loader.register("error", error)
    loader.register("logger", logger)
    loader.register("config", config)
