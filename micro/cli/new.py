"""``micro new service|command|view``: start a service, then grow it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from micro.cli._common import fail
from micro.scaffold import ScaffoldError, Written, new_command, new_service, new_view

__all__ = ["new_app"]

new_app = typer.Typer(no_args_is_help=True)

_Folder = Annotated[
    Path, typer.Option("--dir", help="The service's folder (the current one by default).")
]


def _report(written: Written, then: str) -> None:
    for path in written.files:
        typer.echo(f"wrote {path}")
    if written.registered:
        typer.echo(f"added to app.py: {written.registered}")
    typer.echo(then)


@new_app.command("service")
def service(
    name: Annotated[str, typer.Argument(help="The service's name, e.g. 'shop'.")],
    folder: _Folder = Path("."),
) -> None:
    """Write a new service folder NAME: app.py, rules/, reducers/, models/, tests/."""
    try:
        written = new_service(name, folder)
    except ScaffoldError as error:
        fail(error.message, code=2)
    _report(written, f'next: cd {folder / name} && micro new command "NAME" && pytest')


@new_app.command("command")
def command(
    name: Annotated[str, typer.Argument(help="The command, as callers type it: 'add item'.")],
    folder: _Folder = Path("."),
) -> None:
    """Add a command: a rule sheet, a reducer sheet and a test."""
    try:
        written = new_command(name, folder)
    except ScaffoldError as error:
        fail(error.message, code=2)
    _report(written, "next: fill in the rule sheet's Request, validation and events, then pytest")


@new_app.command("view")
def view(
    name: Annotated[str, typer.Argument(help="The view, as callers type it: 'item'.")],
    folder: _Folder = Path("."),
) -> None:
    """Add a typed view over the service's models, and a test."""
    try:
        written = new_view(name, folder)
    except ScaffoldError as error:
        fail(error.message, code=2)
    _report(written, "next: shape the view's query and answer, then pytest")
