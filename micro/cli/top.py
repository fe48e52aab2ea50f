"""``micro top``: a live view of the services in a namespace, read from ``$SRV.STATS``.

Per service: its instances, and per command the request rate, p50/p99 latency, errors and
the lag of the service's models, refreshed every ``--interval`` seconds. ``--once --json``
prints one snapshot for scripts (its shape: ``micro.telemetry.view.snapshot``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import orjson
import typer
from nats.aio.client import Client
from rich.console import Console
from rich.live import Live
from rich.table import Table

from micro.bus.connection import connect
from micro.cli._common import fail, load_settings
from micro.discovery import ServiceRecord, list_services
from micro.errors import MicroError
from micro.loop import run as run_on_loop
from micro.telemetry.view import snapshot

__all__ = ["top_app"]

top_app = typer.Typer(
    name="top",
    help="A live view of services: rate, latency, errors and model lag.",
    invoke_without_command=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


async def _sample(client: Client, namespace: str | None) -> tuple[float, list[ServiceRecord]]:
    records = await list_services(client, namespace=namespace, stats=True)
    return time.monotonic(), records


def _table(view: dict[str, Any], namespace: str) -> Table:
    table = Table(title=f"micro top: namespace {namespace!r}", expand=True)
    for column in ("service", "inst", "command", "req/s", "requests", "p50 ms", "p99 ms"):
        table.add_column(column, justify="left" if column in ("service", "command") else "right")
    table.add_column("errors", justify="right")
    table.add_column("lag", justify="right")
    for service in view["services"]:
        lag = service["lag"]
        lag_text = "-" if lag is None else (f"[green]{lag}[/]" if lag == 0 else f"[red]{lag}[/]")
        first = True
        for row in service["commands"] or [{}]:
            rate = row.get("rate")
            errors = row.get("errors", 0)
            table.add_row(
                service["service"] if first else "",
                str(service["instances"]) if first else "",
                row.get("command", "-"),
                "…" if rate is None else f"{rate:.1f}",
                str(row.get("requests", 0)),
                f"{row.get('p50_ms', 0.0):.2f}",
                f"{row.get('p99_ms', 0.0):.2f}",
                f"[red]{errors}[/]" if errors else "0",
                lag_text if first else "",
            )
            first = False
    if not view["services"]:
        table.caption = "no services answer in this namespace"
    return table


@top_app.callback()
def top(
    once: Annotated[bool, typer.Option("--once", help="Print one snapshot and exit.")] = False,
    json: Annotated[bool, typer.Option("--json", help="Print JSON (with --once).")] = False,
    interval: Annotated[
        float, typer.Option("--interval", help="Seconds between samples.", min=0.1)
    ] = 1.0,
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="Include every namespace.")
    ] = False,
) -> None:
    """Show services live: per-command rate, p50/p99, errors and model lag (Ctrl-C quits)."""
    if json and not once:
        fail("--json prints one snapshot: use it with --once")
    settings = load_settings(embedded=False, log_level="warning")
    namespace = None if all_namespaces else settings.namespace

    async def run() -> None:
        client = await connect(settings, name="micro-top")
        try:
            taken, previous = await _sample(client, namespace)
            if once:
                await asyncio.sleep(interval)
                now, current = await _sample(client, namespace)
                view = snapshot(current, previous, now - taken)
                if json:
                    typer.echo(orjson.dumps(view, option=orjson.OPT_INDENT_2).decode())
                else:
                    Console().print(_table(view, settings.namespace))
                return
            with Live(_table(snapshot(previous), settings.namespace), auto_refresh=False) as live:
                while True:
                    await asyncio.sleep(interval)
                    now, current = await _sample(client, namespace)
                    live.update(
                        _table(snapshot(current, previous, now - taken), settings.namespace),
                        refresh=True,
                    )
                    taken, previous = now, current
        finally:
            await client.close()

    try:
        run_on_loop(run())
    except MicroError as error:
        fail(f"{error.code}: {error.message}")
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
