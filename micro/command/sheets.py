"""Rule, reducer and model sheets: small Python files found by name beside the app.

For a command ``"open account"`` the sheets are ``rules/open_account_rule.py`` and
``reducers/open_account_reducer.py``; models are every ``models/<name>_model.py``. Sheets are
loaded by path (never installed as packages), so two services may both have a
``rules/deposit_rule.py`` without clashing.

A rule sheet::

    class Request(BaseModel):            # the payload schema (required)
        id: str
        amount: int = Field(gt=0)

    class Deposited(Event):              # the events it may produce
        id: str
        amount: int

    auth = "required"                    # optional: or roles = ["teller"]

    def stream(request) -> str:          # required: the stream the command writes
        return f"account-{request.id}"

    def pre_validation(request) -> None: ...             # optional, stateless
    def validation(request, models) -> None: ...         # optional, raise RuleViolation
    def events(request, models) -> list[Event]: ...      # required
    def respond(request, models, events) -> Any: ...     # optional: the reply

A reducer sheet maps event types (classes or names) to ``(event, models) -> None``::

    reducers = {Deposited: on_deposited}

A model sheet: see ``micro.readmodel.model``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import BaseModel

from micro.errors import ConfigError
from micro.readmodel.event import Event
from micro.readmodel.model import Model
from micro.readmodel.projector import Reducer

__all__ = [
    "ReducerSheet",
    "RuleSheet",
    "load_model_sheets",
    "load_module",
    "load_reducer_sheet",
    "load_rule_sheet",
    "sheet_name",
]


def sheet_name(command: str) -> str:
    """``"open account"`` -> ``"open_account"``: the stem of a command's sheet files."""
    stem = re.sub(r"[^0-9A-Za-z]+", "_", command).strip("_").lower()
    if not stem:
        raise ConfigError(f"command {command!r} has no letters or digits to name its sheets by")
    return stem


def load_module(path: Path, label: str) -> ModuleType:
    """Import a Python file by path under a private, collision-free module name."""
    if not path.is_file():
        raise ConfigError(f"{label}: expected the file {path}, which does not exist")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    module_name = f"_micro_sheet_{path.stem}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{label}: cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # pydantic resolves annotations through sys.modules
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[module_name]
        raise ConfigError(
            f"{label}: {path} failed to load: {type(error).__name__}: {error}"
        ) from error
    return module


def _function(module: ModuleType, name: str, path: Path, arity: int, required: bool) -> Any:
    fn = getattr(module, name, None)
    if fn is None:
        if required:
            raise ConfigError(f"{path}: missing the function {name}()")
        return None
    if not callable(fn):
        raise ConfigError(f"{path}: {name} must be a function")
    try:
        inspect.signature(fn).bind(*([None] * arity))
    except TypeError:
        raise ConfigError(f"{path}: {name}() must take {arity} argument(s)") from None
    return fn


@dataclass
class RuleSheet:
    """What a rule sheet says about one command."""

    command: str
    request: type[BaseModel]
    stream: Callable[[Any], str]
    events: Callable[[Any, Any], Any]
    pre_validation: Callable[[Any], Any] | None = None
    validation: Callable[[Any, Any], Any] | None = None
    respond: Callable[[Any, Any, list[Event]], Any] | None = None
    auth: str | None = None
    roles: list[str] = field(default_factory=list)
    event_types: list[type[Event]] = field(default_factory=list)
    description: str = ""
    path: Path | None = None

    @classmethod
    def from_module(cls, command: str, module: ModuleType, path: Path) -> RuleSheet:
        request = getattr(module, "Request", None)
        if not (isinstance(request, type) and issubclass(request, BaseModel)):
            raise ConfigError(f"{path}: missing 'class Request(BaseModel)', the payload schema")
        stream_attr = getattr(module, "stream", None)
        if isinstance(stream_attr, str):
            fixed = stream_attr

            def stream_fn(_request: Any) -> str:
                return fixed

            stream: Callable[[Any], str] = stream_fn
        else:
            stream = _function(module, "stream", path, 1, True)
        auth = getattr(module, "auth", None)
        if auth not in (None, "required", "optional", "none"):
            raise ConfigError(
                f"{path}: auth must be 'required', 'optional' or 'none', not {auth!r}"
            )
        roles = getattr(module, "roles", [])
        if not isinstance(roles, list | tuple) or not all(isinstance(r, str) for r in roles):
            raise ConfigError(f"{path}: roles must be a list of role names")
        event_types = [
            value
            for value in vars(module).values()
            if isinstance(value, type) and issubclass(value, Event) and value is not Event
        ]
        respond = getattr(module, "respond", None)
        if respond is not None and not callable(respond):
            raise ConfigError(f"{path}: respond must be a function")
        return cls(
            command=command,
            request=request,
            stream=stream,
            events=_function(module, "events", path, 2, True),
            pre_validation=_function(module, "pre_validation", path, 1, False),
            validation=_function(module, "validation", path, 2, False),
            respond=respond,
            auth=None if auth == "none" else auth,
            roles=list(roles),
            event_types=event_types,
            description=(module.__doc__ or "").strip().split("\n")[0],
            path=path,
        )


@dataclass
class ReducerSheet:
    """Event type name -> the functions applying it."""

    reducers: dict[str, list[Reducer]]
    path: Path | None = None

    @classmethod
    def from_mapping(cls, mapping: Any, path: Path | None) -> ReducerSheet:
        where = str(path) if path else "reducer"
        if not isinstance(mapping, dict):
            raise ConfigError(f"{where}: 'reducers' must be a dict of event type -> function")
        reducers: dict[str, list[Reducer]] = {}
        for event_type, fn in mapping.items():
            if isinstance(event_type, type) and issubclass(event_type, Event):
                name = event_type.type_name()
            elif isinstance(event_type, str):
                name = event_type
            else:
                raise ConfigError(f"{where}: {event_type!r} is neither an Event class nor a name")
            if not callable(fn):
                raise ConfigError(f"{where}: the reducer of {name} is not callable")
            reducers.setdefault(name, []).append(fn)
        return cls(reducers, path)


def load_rule_sheet(base: Path, command: str) -> RuleSheet:
    path = base / "rules" / f"{sheet_name(command)}_rule.py"
    return RuleSheet.from_module(command, load_module(path, f"rule of {command!r}"), path)


def load_reducer_sheet(base: Path, command: str) -> ReducerSheet:
    path = base / "reducers" / f"{sheet_name(command)}_reducer.py"
    module = load_module(path, f"reducer of {command!r}")
    if not hasattr(module, "reducers"):
        raise ConfigError(f"{path}: missing 'reducers = {{EventType: function, ...}}'")
    return ReducerSheet.from_mapping(module.reducers, path)


def load_model_sheets(base: Path) -> list[Model[Any]]:
    """Every ``models/<name>_model.py`` under ``base``, as models."""
    folder = base / "models"
    if not folder.is_dir():
        return []
    models = []
    for path in sorted(folder.glob("*_model.py")):
        name = path.name.removesuffix("_model.py")
        module = load_module(path, f"model {name!r}")
        record = getattr(module, "record", None)
        if not (isinstance(record, type) and issubclass(record, BaseModel)):
            raise ConfigError(f"{path}: missing 'record = <pydantic model class>'")
        seed = getattr(module, "reset", None)
        if seed is not None and not callable(seed):
            raise ConfigError(f"{path}: reset must be a function returning the seed records")
        models.append(
            Model(
                name,
                record,
                key=getattr(module, "key", "id"),
                indexes=list(getattr(module, "indexes", [])),
                seed=seed,
            )
        )
    return models
