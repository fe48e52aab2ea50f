"""The commander: a service's commands, models, reducers and views, run as one cycle.

    micro = Micro(service="bank")
    micro.commander.add_command("open account")   # rules/open_account_rule.py + reducer
    micro.add_view("account balance", lambda query, models: models.account.get(query["id"]))
    micro.start()

At start it opens the event store, restores the newest snapshot if a snapshooter is loaded,
catches the models up with the store and only then lets the service take requests.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, TypeAdapter

from micro._app_dir import app_dir
from micro.command.idempotency import SeenCommands
from micro.command.pipeline import CommandPipeline, Guard
from micro.command.sheets import (
    ReducerSheet,
    RuleSheet,
    load_model_sheets,
    load_reducer_sheet,
    load_rule_sheet,
)
from micro.context import Context
from micro.errors import ConfigError, UnavailableError, ValidationError
from micro.eventstore.base import EventStore
from micro.readmodel.event import Event, EventTypes
from micro.readmodel.model import Model, Models
from micro.readmodel.projector import Projector, Reducer

if TYPE_CHECKING:
    from micro.host import Host

__all__ = ["Commander", "SnapshotSource", "app_dir"]


class SnapshotSource(Protocol):
    """What the commander needs of a snapshooter."""

    async def restore(self, projector: Projector) -> int: ...


class Commander:
    """Holds the command cycle of one service (the ``commander`` module)."""

    def __init__(self, micro: Host, base_dir: Path | None = None) -> None:
        self.micro = micro
        self.base_dir = base_dir or micro.app_dir
        self.rules: dict[str, RuleSheet] = {}
        self.reducers: dict[str, list[Reducer]] = {}
        self.types = EventTypes()
        self.models = Models()
        self.guards: list[Guard] = []
        self.snapshots: SnapshotSource | None = None
        self.store: EventStore | None = None
        self.projector: Projector | None = None
        self.pipeline: CommandPipeline | None = None
        self._model_dirs: set[Path] = set()
        self._owns_store = False
        micro.add(
            f"rebuild {micro.settings.service}",
            self._rebuild_command,
            description="Replay all events into fresh models and swap them in.",
        )

    async def _rebuild_command(self, payload: Any) -> dict[str, Any]:
        names = payload.get("models") if isinstance(payload, dict) else None
        if names is not None and (
            not isinstance(names, list) or not all(isinstance(n, str) for n in names)
        ):
            raise ValidationError(
                "models must be a list of model names",
                details={"fields": [{"field": "models", "reason": "not a list of strings"}]},
            )
        unknown = [name for name in names or [] if name not in self.models]
        if unknown:
            # the caller's mistake, not the service's configuration: a 400, not a 500
            raise ValidationError(
                f"unknown model(s) {', '.join(unknown)}; models: {', '.join(self.models.names())}",
                details={"fields": [{"field": "models", "reason": "unknown model"}]},
            )
        applied = await self.rebuild(names)
        return {"models": names or self.models.names(), "events": applied}

    # -- declaring ----------------------------------------------------------------------

    def add_models(self, base_dir: Path) -> None:
        """Load every model sheet under ``base_dir/models`` (once per folder)."""
        folder = base_dir.resolve()
        if folder in self._model_dirs:
            return
        self._model_dirs.add(folder)
        for model in load_model_sheets(folder):
            self.models.add(model)

    def add_model(self, model: Model[Any]) -> None:
        self.models.add(model)

    def add_reducer(self, event_type: type[Event] | str, reducer: Reducer) -> None:
        sheet = ReducerSheet.from_mapping({event_type: reducer}, None)
        for name, functions in sheet.reducers.items():
            self.reducers.setdefault(name, []).extend(functions)
        if isinstance(event_type, type):
            self.types.add(event_type)

    def add_command(
        self,
        name: str,
        rule: RuleSheet | Any | None = None,
        reducer: ReducerSheet | dict[Any, Reducer] | Any | None = None,
        *,
        base_dir: Path | None = None,
    ) -> Commander:
        """Serve the command ``name`` from its rule and reducer sheets.

        By default the sheets are found by name under the app's folder; ``rule`` and
        ``reducer`` may instead be given as objects (a module or a ``RuleSheet``, and a
        module, a ``ReducerSheet`` or a ``{EventType: function}`` dict).
        """
        if name in self.rules:
            raise ConfigError(f"command {name!r} is added twice")
        base = (base_dir or self.base_dir).resolve()
        self.add_models(base)
        rule_sheet = self._rule(name, rule, base)
        reducer_sheet = self._reducer(name, reducer, base)
        for event_type in rule_sheet.event_types:
            self.types.add(event_type)
        for event_name, functions in reducer_sheet.reducers.items():
            self.reducers.setdefault(event_name, []).extend(functions)
        self.rules[name] = rule_sheet
        self.micro.add(
            name,
            self._command_handler(rule_sheet),
            description=rule_sheet.description,
            kind="command",
            request_schema=rule_sheet.request.model_json_schema(),
        )
        return self

    def _rule(self, name: str, rule: Any, base: Path) -> RuleSheet:
        if rule is None:
            return load_rule_sheet(base, name)
        if isinstance(rule, RuleSheet):
            return rule
        path = Path(getattr(rule, "__file__", None) or f"<{name} rule>")
        return RuleSheet.from_module(name, rule, path)

    def _reducer(self, name: str, reducer: Any, base: Path) -> ReducerSheet:
        if reducer is None:
            return load_reducer_sheet(base, name)
        if isinstance(reducer, ReducerSheet):
            return reducer
        if isinstance(reducer, dict):
            return ReducerSheet.from_mapping(reducer, None)
        mapping = getattr(reducer, "reducers", None)
        if mapping is None:
            raise ConfigError(f"the reducer given for {name!r} has no 'reducers' mapping")
        return ReducerSheet.from_mapping(mapping, Path(getattr(reducer, "__file__", name)))

    def _command_handler(self, rule: RuleSheet) -> Callable[[Any, Context], Awaitable[Any]]:
        async def handle(payload: Any, ctx: Context) -> Any:
            if self.pipeline is None:
                raise UnavailableError("the commander has not started")
            return await self.pipeline.run(rule, payload, ctx)

        return handle

    def add_view(self, name: str, view: Callable[..., Any]) -> Commander:
        """Serve a read-only view ``view(query, models)`` (sync or async)."""
        if not callable(view):
            raise TypeError(f"the view {name!r} is not callable")
        parameters = list(inspect.signature(view).parameters.values())
        if len(parameters) != 2:
            raise TypeError(f"the view {name!r} must take (query, models)")
        adapter: TypeAdapter[Any] | None = None
        try:
            hints = typing.get_type_hints(view)
        except Exception:
            hints = {}
        annotation = hints.get(parameters[0].name)
        if annotation is not None and annotation is not Any:
            adapter = TypeAdapter(annotation)

        async def handle(payload: Any, ctx: Context) -> Any:
            projector = self.projector
            if projector is None:
                raise UnavailableError("the models are not loaded yet")
            if ctx.min_position is not None:
                await projector.wait_for(ctx.min_position, ctx.remaining or 5.0)
            elif projector.failure is not None:
                await projector.wait_for(projector.position + 1, 0)  # raises the failure
            query = payload if payload is not None else {}
            if adapter is not None:
                from micro.bus.endpoint import Endpoint

                query = Endpoint(name=name, handler=view, request_adapter=adapter).parse(query)
            result = view(query, projector.models)
            if inspect.isawaitable(result):
                result = await result
            return result.model_dump(mode="json") if isinstance(result, BaseModel) else result

        self.micro.add(
            name,
            handle,
            kind="view",
            request_schema=adapter.json_schema() if adapter is not None else None,
        )
        return self

    # -- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        settings = self.micro.settings
        if self.store is None:
            from micro.eventstore import open_event_store

            self.store = open_event_store(settings, self.micro.client)
            self._owns_store = True
        await self.store.start()
        self.projector = Projector(
            self.store,
            self.models,
            self.reducers,
            self.types,
            name=settings.service,
            ledger=SeenCommands(),
        )
        if self.snapshots is not None:
            await self.snapshots.restore(self.projector)
        await self.projector.start()
        self.pipeline = CommandPipeline(
            self.store,
            self.projector,
            max_retries=settings.command_retries,
            reply_timeout=settings.request_timeout,
            guards=self.guards,
        )

    async def stop(self) -> None:
        if self.projector is not None:
            await self.projector.stop()
        if self.store is not None and self._owns_store:
            await self.store.close()
            self.store = None

    async def rebuild(self, names: list[str] | None = None) -> int:
        """Replay all events into fresh models and swap them in; returns events applied."""
        if self.projector is None:
            raise UnavailableError("the commander has not started")
        wanted = names or self.models.names()
        unknown = [name for name in wanted if name not in self.models]
        if unknown:
            raise ConfigError(
                f"unknown model(s) {', '.join(unknown)}; models: {', '.join(self.models.names())}"
            )
        fresh = Models({model.name: model.fresh() for model in self.models})
        return await self.projector.rebuild(wanted, fresh)

    def health(self) -> dict[str, Any]:
        if self.projector is None:
            return {"status": "starting"}
        return self.projector.health()
