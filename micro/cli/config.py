"""``micro config``: the configuration bucket of a namespace (set, get, ls, watch, history).

VALUE is JSON when it parses as JSON (``5``, ``true``, ``{"a": 1}``), else a plain string.
Keys are global unless ``--service NAME`` scopes them to one service. ``set`` refuses a
value that fails the schema the service registered. Errors print one line and exit 1.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.console import Console
from rich.table import Table

from micro.bus.connection import connect
from micro.cli._common import fail, load_settings
from micro.errors import MicroError
from micro.loop import run as run_on_loop
from micro.modules.config import ConfigStore
from micro.settings import Settings

__all__ = ["config_app"]

config_app = typer.Typer(
    name="config",
    help="The configuration bucket: set, get, ls, watch, history, delete.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

ServiceOption = Annotated[
    str | None, typer.Option("--service", "-s", help="Scope the key to one service.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
_T = TypeVar("_T")


def _settings() -> Settings:
    # Never starts the embedded broker: with nothing running there is nothing to look at.
    return load_settings(embedded=False, log_level="warning")


def _run(action: Callable[[ConfigStore], Awaitable[_T]]) -> _T:
    settings = _settings()

    async def run() -> _T:
        client = await connect(settings, name="micro-cli")
        try:
            store = ConfigStore(client, settings.namespace, history=settings.config_history)
            return await action(store)
        finally:
            await client.close()

    try:
        return run_on_loop(run())
    except MicroError as error:
        fail(f"{error.code}: {error.message}")
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _parse(value: str) -> Any:
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return value


def _show(value: Any) -> str:
    return orjson.dumps(value).decode()


@config_app.command("set")
def set_value(key: str, value: str, service: ServiceOption = None) -> None:
    """Set KEY to VALUE (global, or for --service)."""
    revision = _run(lambda store: store.set(key, _parse(value), service))
    typer.echo(f"{_scope(service)}.{key} = {_show(_parse(value))} (revision {revision})")


@config_app.command("get")
def get_value(key: str, service: ServiceOption = None) -> None:
    """Print the value of KEY as JSON."""
    typer.echo(_show(_run(lambda store: store.get(key, service))))


@config_app.command("delete")
def delete_value(key: str, service: ServiceOption = None) -> None:
    """Remove KEY (its history is kept)."""
    _run(lambda store: store.delete(key, service))
    typer.echo(f"{_scope(service)}.{key} deleted")


@config_app.command("ls")
def list_values(service: ServiceOption = None, as_json: JsonOption = False) -> None:
    """List the global keys, and --service's own."""
    entries = _run(lambda store: store.entries(service))
    if as_json:
        typer.echo(
            orjson.dumps(
                [
                    {"service": e.service, "key": e.key, "value": e.value, "revision": e.revision}
                    for e in entries
                ]
            ).decode()
        )
        return
    table = Table("scope", "key", "value", "revision")
    for entry in entries:
        table.add_row(_scope(entry.service), entry.key, _show(entry.value), str(entry.revision))
    Console().print(table)


@config_app.command("history")
def show_history(key: str, service: ServiceOption = None) -> None:
    """Print every kept value of KEY, oldest first."""
    for change in _run(lambda store: store.history(key, service)):
        shown = "(deleted)" if change.deleted else _show(change.value)
        typer.echo(f"{change.revision}\t{shown}")


@config_app.command("watch")
def watch_values(
    service: ServiceOption = None,
    count: Annotated[
        int, typer.Option("--count", "-n", help="Stop after this many changes (0: never).")
    ] = 0,
) -> None:
    """Print each change to the global keys (and --service's) as it happens."""

    async def watch(store: ConfigStore) -> None:
        seen = 0
        ready = lambda: typer.echo("watching (Ctrl-C to stop)", err=True)  # noqa: E731
        async for change in store.watch(service, on_ready=ready):
            shown = "(deleted)" if change.deleted else _show(change.value)
            typer.echo(f"{_scope(change.service)}.{change.key} = {shown}")
            seen += 1
            if count and seen >= count:
                return

    _run(watch)


def _scope(service: str | None) -> str:
    return f"service.{service}" if service else "global"
