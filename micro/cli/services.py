"""``micro services``: the services seen in discovery (ls, info NAME, stats NAME).

Settings come from the environment (``NATS_URL``, ``MICRO_NAMESPACE``); only services of
that namespace are listed unless ``--all-namespaces``. ``--json`` prints the records for
scripts. Errors print one readable line and exit 1. Replies are read until ``--gap`` quiet
seconds, for ``--wait`` seconds at most; a look that ``--wait`` cut short prints a
``partial:`` line on stderr.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from micro.bus.connection import connect
from micro.cli._common import fail, load_settings
from micro.discovery import ServiceList, ServiceRecord, group_by_service, list_services
from micro.errors import MicroError
from micro.loop import run as run_on_loop
from micro.settings import Settings

__all__ = ["services_app"]

services_app = typer.Typer(
    name="services",
    help="Services seen in discovery (the NATS Services API).",
    invoke_without_command=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
AllOption = Annotated[bool, typer.Option("--all-namespaces", "-A", help="Include every namespace.")]
WaitOption = Annotated[
    float | None,
    typer.Option(
        "--wait",
        help="Most seconds to gather replies for (default: MICRO_DISCOVERY_DEADLINE).",
        min=0.01,
    ),
]
GapOption = Annotated[
    float | None,
    typer.Option(
        "--gap",
        help="Quiet seconds after the last reply that end the gathering "
        "(default: MICRO_DISCOVERY_GAP).",
        min=0.01,
    ),
]


def _settings() -> Settings:
    # Never starts the embedded broker: with nothing running there is nothing to look at.
    return load_settings(embedded=False, log_level="warning")


def _records(
    settings: Settings,
    name: str | None,
    *,
    stats: bool,
    all_namespaces: bool,
    wait: float | None,
    gap: float | None,
) -> ServiceList:
    async def look() -> ServiceList:
        client = await connect(settings, name="micro-cli")
        try:
            return await list_services(
                client,
                namespace=None if all_namespaces else settings.namespace,
                service=name,
                stats=stats,
                schemas=name is not None,
                gap=settings.discovery_gap if gap is None else gap,
                deadline=settings.discovery_deadline if wait is None else wait,
            )
        finally:
            await client.close()

    try:
        records = run_on_loop(look())
    except MicroError as error:
        fail(f"{error.code}: {error.message}")
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if records.partial:
        # On stderr: --json output stays parseable, and the warning is never lost in it.
        typer.echo(
            f"partial: replies were still arriving after {wait or settings.discovery_deadline:g}s;"
            " more instances may be running (raise --wait)",
            err=True,
        )
    return records


def _print_json(records: list[ServiceRecord]) -> None:
    data = [record.model_dump(mode="json") for record in records]
    typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


def _where(settings: Settings, all_namespaces: bool) -> str:
    return "in any namespace" if all_namespaces else f"in namespace {settings.namespace!r}"


def _named(
    settings: Settings,
    name: str,
    *,
    stats: bool,
    all_namespaces: bool,
    wait: float | None,
    gap: float | None,
) -> list[ServiceRecord]:
    records = _records(
        settings, name, stats=stats, all_namespaces=all_namespaces, wait=wait, gap=gap
    )
    if not records:
        fail(f"no service named {name!r} answered {_where(settings, all_namespaces)}")
    return records


def _list(as_json: bool, all_namespaces: bool, wait: float | None, gap: float | None) -> None:
    settings = _settings()
    records = _records(
        settings, None, stats=False, all_namespaces=all_namespaces, wait=wait, gap=gap
    )
    if as_json:
        _print_json(records)
        return
    console = Console()
    if not records:
        console.print(f"no services {_where(settings, all_namespaces)}")
        return
    table = Table(title=f"services {_where(settings, all_namespaces)}")
    for column in ("service", "version", "instances", "endpoints", "description"):
        table.add_column(column, justify="right" if column == "instances" else "left")
    for service, instances in group_by_service(records).items():
        versions = sorted({record.version for record in instances})
        endpoints = sorted({e.name for record in instances for e in record.endpoints})
        table.add_row(
            service,
            ", ".join(versions),
            str(len(instances)),
            ", ".join(endpoints),
            instances[0].description,
        )
    console.print(table)


@services_app.callback()
def _default(
    context: typer.Context,
    as_json: JsonOption = False,
    all_namespaces: AllOption = False,
    wait: WaitOption = None,
    gap: GapOption = None,
) -> None:
    """Services seen in discovery; without a sub-command, the same as ls."""
    if context.invoked_subcommand is None:
        _list(as_json, all_namespaces, wait, gap)


@services_app.command("ls")
def ls(
    as_json: JsonOption = False,
    all_namespaces: AllOption = False,
    wait: WaitOption = None,
    gap: GapOption = None,
) -> None:
    """List services: versions, instances and endpoints."""
    _list(as_json, all_namespaces, wait, gap)


def _schema_summary(schema: dict[str, Any] | None) -> str:
    if schema is None:
        return "-"
    title = schema.get("title")
    kind = schema.get("type", "any")
    return f"{title} ({kind})" if isinstance(title, str) else str(kind)


@services_app.command("info")
def info(
    name: Annotated[str, typer.Argument(help="The service name.")],
    as_json: JsonOption = False,
    all_namespaces: AllOption = False,
    wait: WaitOption = None,
    gap: GapOption = None,
) -> None:
    """Show each instance of a service and its endpoints with their schemas."""
    settings = _settings()
    records = _named(settings, name, stats=False, all_namespaces=all_namespaces, wait=wait, gap=gap)
    if as_json:
        _print_json(records)
        return
    console = Console()
    for record in records:
        console.print(
            f"[bold]{record.service}[/] {record.version}  id {record.id}  "
            f"namespace {record.namespace or '-'}",
            highlight=False,
        )
        if record.description:
            console.print(f"  {record.description}", highlight=False)
        shown = {k: v for k, v in record.metadata.items() if not k.startswith("micro.")}
        if shown:
            console.print(f"  metadata {orjson.dumps(shown).decode()}", highlight=False)
        table = Table()
        for column in ("endpoint", "kind", "subject", "request", "reply"):
            table.add_column(column)
        for endpoint in record.endpoints:
            table.add_row(
                endpoint.name,
                endpoint.kind,
                endpoint.subject,
                _schema_summary(endpoint.request_schema),
                _schema_summary(endpoint.reply_schema),
            )
        console.print(table)


@services_app.command("stats")
def stats(
    name: Annotated[str, typer.Argument(help="The service name.")],
    as_json: JsonOption = False,
    all_namespaces: AllOption = False,
    wait: WaitOption = None,
    gap: GapOption = None,
) -> None:
    """Show requests, errors and processing times of each endpoint of each instance."""
    settings = _settings()
    records = _named(settings, name, stats=True, all_namespaces=all_namespaces, wait=wait, gap=gap)
    if as_json:
        _print_json(records)
        return
    table = Table(title=f"{name}: statistics per instance")
    for column in ("instance", "endpoint", "requests", "errors", "average ms", "last error"):
        table.add_column(column, justify="right" if column in ("requests", "errors") else "left")
    for record in records:
        for endpoint in record.endpoints:
            figures = endpoint.stats
            table.add_row(
                record.id,
                endpoint.name,
                str(figures.requests) if figures else "-",
                str(figures.errors) if figures else "-",
                f"{figures.average_processing_time_ns / 1e6:.3f}" if figures else "-",
                figures.last_error if figures else "",
            )
    Console().print(table)
