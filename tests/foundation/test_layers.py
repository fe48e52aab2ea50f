"""Imports point one way (docs/architecture.md, section 1): no module imports a layer above."""

from __future__ import annotations

import ast
from pathlib import Path

MICRO = Path(__file__).resolve().parents[2] / "micro"

# Lowest first; a module may import its own layer and those below it.
LAYERS: list[tuple[str, ...]] = [
    (
        "errors",
        "settings",
        "context",
        "_tasks",
        "_inbox",
        "_direct",
        "_ids",
        "_models",
        "_numbers",
        "_keyed_locks",
        "_schemas",
    ),
    ("_signals", "_app_dir", "_nats_server", "loop"),
    ("log",),
    ("telemetry",),
    ("bus", "eventstore"),
    ("host",),
    ("readmodel",),
    ("command",),
    (
        "discovery",
        "directory",
        "session",
        "app",
        "permissions",
        "modules.loader",
        "modules.builtin",
    ),
    ("blocking", "asyncapi", "scaffold"),
    ("modules",),
    ("gateway", "cli", "testing"),
]


def layer_of(module: str) -> int:
    """The layer of ``micro.<module>``: the longest matching prefix decides."""
    best, length = -1, -1
    for index, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > length:
                best, length = index, len(name)
    assert best >= 0, f"micro.{module} belongs to no layer: add it to LAYERS"
    return best


def runtime_imports(path: Path) -> list[str]:
    """``micro.*`` modules imported outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text())
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only.update(id(child) for child in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("micro."):
            found.append(node.module.removeprefix("micro."))
        elif isinstance(node, ast.Import):
            found += [
                a.name.removeprefix("micro.") for a in node.names if a.name.startswith("micro.")
            ]
    return found


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = []
    for path in sorted(MICRO.rglob("*.py")):
        relative = path.relative_to(MICRO).with_suffix("")
        parts = [part for part in relative.parts if part != "__init__"]
        if not parts or parts[-1] == "__main__":
            continue  # the package's own public face, and entry points
        module = ".".join(parts)
        own = layer_of(module)
        for imported in runtime_imports(path):
            if layer_of(imported) > own:
                upward.append(f"micro.{module} imports micro.{imported}")
    assert upward == []
