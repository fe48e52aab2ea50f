"""The modules every Micro can load by name."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from micro.command.commander import Commander
from micro.modules.loader import ModuleLoader

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
