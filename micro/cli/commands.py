"""The ``micro`` command: run services, call them, look around.

Errors print one readable line (and exit 1); ``--verbose`` adds the details. The command
groups ``events``, ``services`` and ``config`` live in their own modules of this package.
"""

from __future__ import annotations

import os
import runpy
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.console import Console

from micro.app import Micro
from micro.cli._common import fail, load_settings
from micro.cli._errors import fail_to_start
from micro.cli._together import app_file, load_together, serve_together
from micro.cli.asyncapi import asyncapi
from micro.cli.config import config_app
from micro.cli.dev import dev
from micro.cli.events import events_app
from micro.cli.new import new_app
from micro.cli.services import services_app
from micro.cli.top import top_app
from micro.cli.version import version_report
from micro.errors import MicroError
from micro.loop import run as run_on_loop

__all__ = ["app", "main", "run_async"]

app = typer.Typer(
    name="micro",
    help="micro: event-sourced microservices over NATS.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
_err = Console(stderr=True, highlight=False)
_T = TypeVar("_T")


def run_async(coroutine: Coroutine[Any, Any, _T], *, verbose: bool = False) -> _T:
    """Run a coroutine, turning micro's errors into one line and exit code 1."""
    try:
        return run_on_loop(coroutine)
    except MicroError as error:
        fail(f"{error.code}: {error.message}", details=error.to_wire()["error"], verbose=verbose)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _version(value: bool) -> None:
    if value:
        typer.echo(version_report())
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="Print the versions of micro, nats-server, nats-py and Python.",
        ),
    ] = False,
) -> None:
    """micro: event-sourced microservices over NATS."""


def _target_file(target: Path) -> Path:
    return app_file(target)


@app.command()
def run(
    targets: Annotated[
        list[Path],
        typer.Argument(help="Python files, or folders with an app.py; several run together."),
    ],
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run a service: the file's own start() call, or else the Micro named micro it defines.

    Several apps, or an app defining a Portal named portal, run in one process on one event
    loop, sharing one NATS connection and one event store.
    """
    try:
        if len(targets) == 1:
            path = _target_file(targets[0]).resolve()
            sys.path.insert(0, str(path.parent))
            sys.argv = [str(path)]
            namespace = runpy.run_path(str(path), run_name="__main__")
            together = load_together([path], first=namespace)
        else:
            together = load_together(targets)
        if together.portal is not None or len(together.apps) > 1:
            run_on_loop(serve_together(together))
        elif together.apps:
            # A file that only builds its Micro (no start() call) is started here.
            run_on_loop(together.apps[0].serve())
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except (typer.Exit, SystemExit):
        raise
    except Exception as error:
        fail_to_start(error, verbose=verbose)


def _parse_json(text: str | None, what: str) -> Any:
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as error:
        fail(f"{what} is not valid JSON: {error}", code=2)


@app.command()
def act(
    command: Annotated[str, typer.Argument(help="The command to call, e.g. 'math.add'.")],
    payload: Annotated[str | None, typer.Argument(help="The payload, as JSON.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the reply.")] = 5.0,
    meta: Annotated[str | None, typer.Option(help="Meta to send, as a JSON object.")] = None,
    idempotency_key: Annotated[str | None, typer.Option("--idempotency-key")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Call a command and print its reply as JSON."""
    body = _parse_json(payload, "PAYLOAD")
    meta_value = _parse_json(meta, "--meta")
    if meta_value is not None and not isinstance(meta_value, dict):
        fail("--meta must be a JSON object", code=2)
    if timeout <= 0:
        fail("--timeout must be a positive number of seconds", code=2)
    # A caller never starts the embedded broker: with nothing running, nobody could answer.
    settings = load_settings(embedded=False, service="cli", log_level="warning")

    async def call() -> Any:
        async with Micro(settings) as micro:
            return await micro.act(
                command, body, timeout=timeout, meta=meta_value, idempotency_key=idempotency_key
            )

    reply = run_async(call(), verbose=verbose)
    sys.stdout.write(orjson.dumps(reply, option=orjson.OPT_INDENT_2).decode() + "\n")


@app.command()
def rebuild(
    models: Annotated[
        list[str] | None, typer.Argument(help="Models to rebuild (all if none).")
    ] = None,
    service: Annotated[str, typer.Option(help="The service whose models to rebuild.")] = ...,  # type: ignore[assignment]
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the replay.")] = 600.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Replay every event into fresh models and swap them in (one instance of SERVICE)."""
    settings = load_settings(embedded=False, service="cli", log_level="warning")

    async def call() -> Any:
        async with Micro(settings) as micro:
            return await micro.act(
                f"rebuild {service}", {"models": models or None}, timeout=timeout
            )

    with _err.status(f"rebuilding {', '.join(models or ['all models'])} of {service}..."):
        result = run_async(call(), verbose=verbose)
    typer.echo(f"rebuilt {', '.join(result['models'])} from {result['events']} events")


@app.command()
def permissions(
    target: Annotated[Path, typer.Argument(help="A Python file, or a folder with an app.py.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the blocks as JSON.")] = False,
    caller: Annotated[str, typer.Option(help="Service name of the caller profile.")] = "cli",
    gateway: Annotated[str, typer.Option(help="Service name of the gateway profile.")] = "gateway",
) -> None:
    """Print least-privilege NATS permissions for the app, a caller and the gateway.

    The app is imported but not started. Give each service its own NATS user with exactly
    these permissions: it can then serve only its own commands, read only its own replies
    and append only to its own event streams. With --json it prints the blocks as one JSON
    object (service, permissions, caller, gateway); without it, an authorization block for
    nats-server.conf whose passwords come from environment variables.
    """
    from micro.cli._together import load_together
    from micro.permissions import caller_permissions, process_permissions, profiles

    together = load_together([target], run_name="micro_permissions")
    portal, apps = together.portal, together.apps
    if portal is None and len(apps) == 1:
        blocks = profiles(apps[0], caller=caller, gateway=gateway)
    elif apps or portal is not None:
        # One process, one shared connection: one identity, named after the Micro that
        # opens it (the portal's gateway), holding what every app it serves needs.
        connection = portal.service if portal is not None else "micro-run"
        settings = apps[0].settings if apps else load_settings()
        blocks = {
            "service": connection,
            "permissions": process_permissions(apps, connection, feed=portal is not None),
            "caller": {"user": caller, "permissions": caller_permissions(settings, caller)},
        }
    else:
        fail(f"{target} defines no Micro named 'micro' and no portal")
    if as_json:
        sys.stdout.write(orjson.dumps(blocks, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    profiles_shown = [name for name in ("caller", "gateway") if name in blocks]
    users = [(blocks["service"], blocks["permissions"])]
    users += [(blocks[name]["user"], blocks[name]["permissions"]) for name in profiles_shown]
    lines = [
        f"# nats-server.conf: least privilege for {blocks['service']!r}, "
        + " and ".join(
            f"the {name}" if name == "gateway" else "a caller" for name in profiles_shown
        ),
        "# (from `micro permissions`); each password is read from the environment.",
        "authorization {",
        "  users: [",
    ]
    for user, block in users:
        variable = "$" + "".join(c if c.isalnum() else "_" for c in user).upper() + "_PASSWORD"
        body = orjson.dumps(block, option=orjson.OPT_INDENT_2).decode().replace("\n", "\n    ")
        lines.append(f'    {{user: "{user}", password: {variable}, permissions: {body}}}')
    lines += ["  ]", "}"]
    sys.stdout.write("\n".join(lines) + "\n")


app.add_typer(events_app, name="events", help="Look at the event store.")
app.add_typer(services_app, name="services", help="Services seen in discovery.")
app.add_typer(config_app, name="config", help="The config server: get, set, ls, watch.")
app.add_typer(new_app, name="new", help="Start a service, add commands and views to it.")
app.command()(asyncapi)
app.command()(dev)
app.add_typer(top_app, name="top", help="A live view: rate, latency, errors, model lag.")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``micro`` console script."""
    os.environ.setdefault("MICRO_LOG_FORMAT", "auto")
    command: Callable[..., Any] = app
    command(args=argv)
