"""The modules every Micro can load by name, each named by the import path of its factory.

Nothing is imported here: a module's code (and what it brings in, such as tinydb for the
commander or argon2 and PyJWT for auth) loads only when a service asks for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from micro.modules.loader import ModuleLoader

__all__ = ["BUILTIN_MODULES", "register_builtin_modules"]

_FACTORIES = "micro.modules._factories"

BUILTIN_MODULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "commander": (f"{_FACTORIES}:commander", ()),
    "modeler": (f"{_FACTORIES}:modeler", ("commander",)),
    "ruler": (f"{_FACTORIES}:ruler", ("commander",)),
    "reducer": (f"{_FACTORIES}:reducer", ("commander",)),
    "snapshooter": (f"{_FACTORIES}:snapshooter", ("commander",)),
    "app_stream": (f"{_FACTORIES}:app_stream", ("commander",)),
    "auth": (f"{_FACTORIES}:auth", ("commander",)),
    "error": (f"{_FACTORIES}:error", ()),
    "logger": (f"{_FACTORIES}:logger", ()),
    "config": (f"{_FACTORIES}:config", ()),
}
"""name -> (``"package.module:factory"``, the modules it requires)."""


def register_builtin_modules(loader: ModuleLoader) -> None:
    """Register every built-in module by import path (resolved when first loaded)."""
    for name, (path, requires) in BUILTIN_MODULES.items():
        loader.register(name, path, requires=requires)
