"""``micro new``: a service folder to start from, then commands and views added to it.

    micro new service shop        # shop/: app.py, rules/, reducers/, models/, tests/
    cd shop
    micro new command "add item"  # rules/add_item_rule.py, reducers/add_item_reducer.py, a test
    micro new view "item"         # views/item_view.py, a test

What is written passes ruff and mypy (strict) and its own tests as it is. Nothing is ever
overwritten: a name already taken, or one that is not a valid name, is a ``ScaffoldError``
raised before the first file is written.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from micro.errors import ConfigError

__all__ = ["ScaffoldError", "new_command", "new_service", "new_view"]

MARKER = "    # micro new: commands and views are added above this line\n"

_SERVICE = re.compile(r"^[a-z][a-z0-9]*(?:[_-][a-z0-9]+)*$")
_COMMAND = re.compile(r"^[a-z][a-z0-9]*(?: [a-z][a-z0-9]*){0,5}$")
# Past tenses a suffix rule gets wrong, for the verbs commands most often start with.
_PAST = {
    "buy": "bought",
    "get": "got",
    "make": "made",
    "pay": "paid",
    "put": "put",
    "run": "ran",
    "sell": "sold",
    "send": "sent",
    "set": "set",
    "ship": "shipped",
    "stop": "stopped",
    "drop": "dropped",
    "plan": "planned",
    "tag": "tagged",
    "log": "logged",
}


class ScaffoldError(ConfigError):
    """A name ``micro new`` cannot use, or a project it cannot add to; nothing was written."""

    code = "scaffold"


@dataclass(frozen=True)
class Written:
    """What ``micro new`` wrote: the files, and the line added to app.py (if any)."""

    files: list[Path]
    registered: str | None = None


def _template(name: str) -> Template:
    return Template(resources.files(__package__).joinpath("templates", name).read_text())


def _camel(words: list[str]) -> str:
    return "".join(word[:1].upper() + word[1:] for word in words)


def _past(verb: str) -> str:
    if verb in _PAST:
        return _PAST[verb]
    if verb.endswith("e"):
        return verb + "d"
    if verb.endswith("y") and len(verb) > 1 and verb[-2] not in "aeiou":
        return verb[:-1] + "ied"
    return verb + "ed"


def event_name(command: str) -> str:
    """The event a new command records, in the past tense: ``"add item"`` -> ``ItemAdded``."""
    verb, *rest = command.split()
    return _camel([*rest, _past(verb)])


def _check_service(name: str) -> str:
    if not _SERVICE.match(name):
        raise ScaffoldError(
            f"{name!r} is not a valid service name: use lowercase letters, digits, '-' and "
            "'_', starting with a letter (e.g. 'shop' or 'order-desk')",
            details={"fields": [{"field": "name", "reason": "not a service name"}]},
        )
    return name.replace("-", "_")


def _check_command(name: str, what: str) -> list[str]:
    if not _COMMAND.match(name):
        raise ScaffoldError(
            f"{name!r} is not a valid {what} name: use one to six lowercase words of letters "
            f"and digits, separated by single spaces (e.g. 'add item')",
            details={"fields": [{"field": "name", "reason": f"not a {what} name"}]},
        )
    words = name.split()
    stem = "_".join(words)
    if keyword.iskeyword(stem):
        raise ScaffoldError(
            f"{name!r} is a Python keyword and cannot name a {what}",
            details={"fields": [{"field": "name", "reason": "a Python keyword"}]},
        )
    return words


def _write(files: dict[Path, str]) -> list[Path]:
    taken = sorted(str(path) for path in files if path.exists())
    if taken:
        raise ScaffoldError(
            f"already exists, nothing was written: {', '.join(taken)}",
            details={"fields": [{"field": "name", "reason": "already exists"}]},
        )
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return list(files)


def new_service(name: str, parent: Path) -> Written:
    """Write the folder ``parent/name`` of a new event-sourced service."""
    ident = _check_service(name)
    folder = parent / name
    if folder.exists():
        raise ScaffoldError(
            f"{folder} already exists, nothing was written",
            details={"fields": [{"field": "name", "reason": "already exists"}]},
        )
    values = {"service": name, "ident": ident, "Camel": _camel(re.split(r"[_-]", name))}
    files = {
        folder / "app.py": "app.py.tmpl",
        folder / "models" / f"{ident}_model.py": "model.py.tmpl",
        folder / "tests" / "conftest.py": "conftest.py.tmpl",
        folder / "tests" / f"test_{ident}.py": "test_service.py.tmpl",
        folder / "pyproject.toml": "pyproject.toml.tmpl",
        folder / "README.md": "README.md.tmpl",
        # .micro/ holds the data of services run here (and of the tests' namespaces).
        folder / ".gitignore": "gitignore.tmpl",
    }
    written = _write({path: _template(t).substitute(values) for path, t in files.items()})
    for empty in ("rules", "reducers"):
        (folder / empty).mkdir()
    return Written(written)


def _project(folder: Path) -> tuple[str, str, str]:
    """The service name, its identifier, and app.py's text, of the project in ``folder``."""
    app = folder / "app.py"
    if not app.is_file():
        raise ScaffoldError(
            f"{folder} has no app.py: run 'micro new service NAME' first, then add commands "
            "from inside its folder"
        )
    text = app.read_text()
    found = re.search(r'service="([^"]+)"', text)
    if found is None or MARKER not in text:
        raise ScaffoldError(
            f"{app} was not made by 'micro new service' (or its line {MARKER.strip()!r} is "
            "gone): add the command to it by hand"
        )
    return found.group(1), _check_service(found.group(1)), text


def _register(folder: Path, text: str, lines: str) -> None:
    (folder / "app.py").write_text(text.replace(MARKER, lines + MARKER, 1))


def new_command(name: str, folder: Path) -> Written:
    """Add the command ``name`` to the service in ``folder``: its sheets and a test."""
    words = _check_command(name, "command")
    service, ident, text = _project(folder)
    stem = "_".join(words)
    if f'add_command("{name}")' in text:
        raise ScaffoldError(f"the command {name!r} is already in {folder / 'app.py'}")
    event = event_name(name)
    values = {
        "service": service,
        "ident": ident,
        "command": name,
        "stem": stem,
        "Event": event,
        "event_stem": re.sub(r"(?<!^)([A-Z])", r"_\1", event).lower(),
    }
    files = {
        folder / "rules" / f"{stem}_rule.py": "rule.py.tmpl",
        folder / "reducers" / f"{stem}_reducer.py": "reducer.py.tmpl",
        folder / "tests" / f"test_{stem}.py": "test_command.py.tmpl",
    }
    written = _write({path: _template(t).substitute(values) for path, t in files.items()})
    line = f'    commander.add_command("{name}")\n'
    _register(folder, text, line)
    return Written(written, line.strip())


def new_view(name: str, folder: Path) -> Written:
    """Add the typed view ``name`` to the service in ``folder``, and a test."""
    words = _check_command(name, "view")
    service, ident, text = _project(folder)
    stem = "_".join(words)
    if f'add_view("{name}"' in text:
        raise ScaffoldError(f"the view {name!r} is already in {folder / 'app.py'}")
    values = {"service": service, "ident": ident, "view": name, "stem": stem}
    values["View"] = _camel(words)
    files = {
        folder / "views" / f"{stem}_view.py": "view.py.tmpl",
        folder / "tests" / f"test_{stem}_view.py": "test_view.py.tmpl",
    }
    written = _write({path: _template(t).substitute(values) for path, t in files.items()})
    # Imported inside build(): app.py's folder is on sys.path by then, under micro run and
    # under pytest alike, and the import stays beside the line that uses it.
    lines = f'    from views.{stem}_view import {stem}\n\n    micro.add_view("{name}", {stem})\n'
    _register(folder, text, lines)
    return Written(written, f'micro.add_view("{name}", {stem})')
