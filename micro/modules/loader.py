"""The module loader: named parts of a service, wired in dependency order.

A module is registered under a name with a factory, the names it requires, and a scope:
``singleton`` (one per service) or ``per_user`` (one per user, made on first use). Loading a
module loads what it requires first, recursively; a cycle or an unknown name is a
``ConfigError`` naming the whole chain. Modules start in dependency order and stop in
reverse; a module with ``start()``/``stop()`` methods (sync or async) gets them called.

    micro.modules.register("audit", lambda micro, deps: Audit(deps["commander"]),
                           requires=["commander"])
    micro.add_procedure(load=["audit"], start=lambda audit: audit.begin())
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import structlog

from micro.errors import ConfigError

if TYPE_CHECKING:
    from micro.host import Host

__all__ = ["ModuleLoader", "ModuleSpec"]

_log = structlog.get_logger("micro.modules")

Factory = Callable[["Host", dict[str, Any]], Any]
Scope = Literal["singleton", "per_user"]


@dataclass(frozen=True)
class ModuleSpec:
    name: str
    factory: Factory | str
    """A factory, or the ``"package.module:function"`` import path of one."""
    requires: tuple[str, ...] = ()
    scope: Scope = "singleton"

    def resolve(self) -> Factory:
        """The factory, imported now if it was given by import path."""
        if not isinstance(self.factory, str):
            return self.factory
        module_name, _, attribute = self.factory.partition(":")
        try:
            factory: Factory = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as error:
            raise ConfigError(
                f"module {self.name!r}: cannot load its factory {self.factory!r}: {error}"
            ) from error
        return factory


async def _maybe_call(instance: Any, method: str) -> None:
    fn = getattr(instance, method, None)
    if callable(fn):
        result = fn()
        if inspect.isawaitable(result):
            await result


@dataclass
class ModuleLoader:
    """Registers, resolves, creates, starts and stops a service's modules."""

    micro: Host
    specs: dict[str, ModuleSpec] = field(default_factory=dict)
    instances: dict[str, Any] = field(default_factory=dict)
    per_user: dict[tuple[str, str], Any] = field(default_factory=dict)
    wanted: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)

    def register(
        self,
        name: str,
        factory: Factory | str,
        *,
        requires: list[str] | tuple[str, ...] = (),
        scope: Scope = "singleton",
        replace: bool = False,
    ) -> None:
        if not name.isidentifier():
            raise ConfigError(f"module name {name!r} must be a Python identifier")
        if scope not in ("singleton", "per_user"):
            raise ConfigError(f"module {name!r}: scope must be 'singleton' or 'per_user'")
        if name in self.specs and not replace:
            raise ConfigError(f"module {name!r} is registered twice")
        if isinstance(factory, str):
            if ":" not in factory:
                raise ConfigError(f"module {name!r}: an import path reads 'package.module:name'")
        elif not callable(factory):
            raise ConfigError(f"module {name!r}: factory is not callable")
        self.specs[name] = ModuleSpec(name, factory, tuple(requires), scope)

    def order(self, names: list[str]) -> list[str]:
        """``names`` and everything they require, dependencies first."""
        ordered: list[str] = []
        visiting: list[str] = []

        def visit(name: str, needed_by: str | None) -> None:
            if name in ordered:
                return
            if name in visiting:
                chain = " -> ".join([*visiting[visiting.index(name) :], name])
                raise ConfigError(f"modules require each other in a cycle: {chain}")
            spec = self.specs.get(name)
            if spec is None:
                known = ", ".join(sorted(self.specs)) or "none"
                where = f" (required by {' -> '.join(visiting)})" if needed_by else ""
                raise ConfigError(f"unknown module {name!r}{where}; known modules: {known}")
            visiting.append(name)
            for requirement in spec.requires:
                visit(requirement, name)
            visiting.pop()
            ordered.append(name)

        for name in names:
            visit(name, None)
        return ordered

    def want(self, names: list[str]) -> None:
        """Mark modules (and their requirements) to be started with the service."""
        for name in self.order(names):
            if name not in self.wanted:
                self.wanted.append(name)

    def get(self, name: str, *, user: str | None = None) -> Any:
        """The module's instance (made now if needed, with its requirements)."""
        for dependency in self.order([name]):
            spec = self.specs[dependency]
            if spec.scope == "singleton" and dependency not in self.instances:
                self.instances[dependency] = spec.resolve()(self.micro, self._deps(spec))
        spec = self.specs[name]
        if spec.scope == "singleton":
            return self.instances[name]
        if user is None:
            raise ConfigError(f"module {name!r} is per user: get({name!r}, user=...)")
        key = (name, user)
        if key not in self.per_user:
            self.per_user[key] = spec.resolve()(self.micro, {**self._deps(spec), "user": user})
        return self.per_user[key]

    def _deps(self, spec: ModuleSpec) -> dict[str, Any]:
        deps = {}
        for requirement in spec.requires:
            if self.specs[requirement].scope == "per_user":
                raise ConfigError(
                    f"module {spec.name!r} requires per-user module {requirement!r}; "
                    "ask for it with loader.get(name, user=...) instead"
                )
            deps[requirement] = self.instances[requirement]
        return deps

    async def start(self) -> None:
        """Create every wanted singleton, then start them, dependencies first."""
        names = [
            name
            for name in self.order(self.wanted)
            if self.specs[name].scope == "singleton" and name not in self.started
        ]
        # All created before any starts: a factory may wire its module into one it requires
        # (the snapshooter into the commander), which must happen before that one starts.
        for name in names:
            self.get(name)
        for name in names:
            instance = self.instances[name]
            await _maybe_call(instance, "start")
            self.started.append(name)
            _log.debug("module started", module=name)

    async def stop(self) -> None:
        """Stop started modules in reverse order; one failing does not stop the others."""
        for name in reversed(self.started):
            try:
                await _maybe_call(self.instances[name], "stop")
            except Exception:
                _log.exception("module failed to stop", module=name)
        for (name, _user), instance in list(self.per_user.items()):
            try:
                await _maybe_call(instance, "stop")
            except Exception:
                _log.exception("per-user module failed to stop", module=name)
        self.started.clear()
        self.per_user.clear()
