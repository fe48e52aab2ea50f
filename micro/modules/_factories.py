"""The factories of the built-in modules, imported only when one of them is loaded.

``builtin.py`` names them by import path, so that ``import micro`` loads none of what they
bring in (tinydb, the auth stack, jsonschema).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from micro.command.app_stream import EventHandlers
from micro.command.commander import Commander
from micro.modules.error import ErrorModule
from micro.readmodel.snapshots import Snapshooter

if TYPE_CHECKING:
    from micro.host import Host

__all__ = [
    "app_stream",
    "auth",
    "commander",
    "config",
    "error",
    "logger",
    "modeler",
    "reducer",
    "ruler",
    "snapshooter",
]


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


def commander(micro: Host, _deps: dict[str, Any]) -> Commander:
    return Commander(micro)


def modeler(_micro: Host, deps: dict[str, Any]) -> Modeler:
    return Modeler(deps["commander"])


def ruler(_micro: Host, deps: dict[str, Any]) -> Ruler:
    return Ruler(deps["commander"])


def reducer(_micro: Host, deps: dict[str, Any]) -> ReducerRegistry:
    return ReducerRegistry(deps["commander"])


def app_stream(micro: Host, deps: dict[str, Any]) -> EventHandlers:
    return EventHandlers(micro, deps["commander"])


def auth(micro: Host, deps: dict[str, Any]) -> Any:
    from micro.modules.auth.module import Auth

    return Auth(micro, deps["commander"])


def error(micro: Host, _deps: dict[str, Any]) -> ErrorModule:
    return ErrorModule(micro)


def logger(micro: Host, _deps: dict[str, Any]) -> Any:
    from micro.modules.logger import LoggerModule

    return LoggerModule(micro)


def config(micro: Host, _deps: dict[str, Any]) -> Any:
    from micro.modules.config import ConfigClient

    return ConfigClient(micro)


def snapshooter(micro: Host, deps: dict[str, Any]) -> Snapshooter:
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

    def __init__(self, micro: Host) -> None:
        self.micro = micro

    def jetstream(self) -> Any:
        if self.micro.client is None:
            raise RuntimeError("not connected")
        return self.micro.client.jetstream()
