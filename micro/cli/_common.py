"""What every ``micro`` sub-command shares: one-line errors and settings from the environment."""

from __future__ import annotations

from typing import Any, NoReturn

import orjson
import pydantic
import typer
from rich.console import Console

from micro.errors import ValidationError
from micro.settings import Settings

__all__ = ["fail", "load_settings"]

_err = Console(stderr=True, highlight=False)


def fail(message: str, *, details: Any = None, verbose: bool = False, code: int = 1) -> NoReturn:
    """Print one readable error line (details when verbose) and exit."""
    _err.print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True)
    if verbose and details:
        _err.print_json(orjson.dumps(details, default=str).decode())
    raise typer.Exit(code)


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment; a bad one is one line naming its variable."""
    try:
        return Settings(**overrides)
    except pydantic.ValidationError as error:
        item = ValidationError.from_pydantic(error).fields[0]
        field = item["field"]
        fail(f"invalid setting {field} (MICRO_{field.upper()}): {item['reason']}")
