"""``micro events``: look into the event store from a terminal.

    micro events tail [STREAM] [--from POSITION] [--json]   follow events as they are stored
    micro events show STREAM [--json]                       print one stream's events

Settings come from the environment (``MICRO_*``, ``NATS_URL``), as for a service.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Annotated, Any

import orjson
import pydantic
import typer

from micro.errors import ConfigError, MicroError, ValidationError
from micro.eventstore import EventStore, JetStreamEventStore, RecordedEvent, open_event_store
from micro.eventstore.base import validate_stream_name
from micro.loop import run as run_on_loop
from micro.settings import Settings

__all__ = ["events_app"]

events_app = typer.Typer(
    help="Look into the event store: follow it live or print a stream.",
    no_args_is_help=True,
    add_completion=False,
)

_Json = Annotated[bool, typer.Option("--json", help="One JSON object per line.")]
_Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Show details of errors.")]


@events_app.command()
def tail(
    stream: Annotated[
        str | None, typer.Argument(help="Only this stream's events (default: all).")
    ] = None,
    from_position: Annotated[
        int | None,
        typer.Option("--from", min=0, help="Start at this position (default: only new ones)."),
    ] = None,
    json_output: _Json = False,
    verbose: _Verbose = False,
) -> None:
    """Follow events as they are stored, one line per event, until interrupted."""
    _run(_tail(stream, from_position, json_output), verbose)


@events_app.command()
def show(
    stream: Annotated[str, typer.Argument(help="The stream to print.")],
    json_output: _Json = False,
    verbose: _Verbose = False,
) -> None:
    """Print every event of one stream, oldest first."""
    _run(_show(stream, json_output), verbose)


async def _tail(stream: str | None, from_position: int | None, json_output: bool) -> None:
    if stream is not None:
        validate_stream_name(stream)
    async with _store() as store:
        start = from_position if from_position is not None else await store.last_position() + 1
        async for event in store.subscribe(start):
            if stream is None or event.stream == stream:
                _print(event, json_output)


async def _show(stream: str, json_output: bool) -> None:
    validate_stream_name(stream)
    async with _store() as store:
        if isinstance(store, JetStreamEventStore):
            # Each service appends under its own name: read as the one that wrote it.
            owners = await store.owners(stream)
            if len(owners) > 1:
                raise ConfigError(
                    f"stream {stream!r} is written by {', '.join(owners)}: "
                    "set MICRO_SERVICE to the one to read"
                )
            if owners and owners[0] and owners[0] != store.owner:
                async with _store(owners[0]) as owned:
                    events = await owned.read(stream)
            else:
                events = await store.read(stream)
        else:
            events = await store.read(stream)
        for event in events:
            _print(event, json_output)


@asynccontextmanager
async def _store(owner: str | None = None) -> AsyncIterator[EventStore]:
    """The configured event store, over a NATS connection when it needs one (appending as
    ``owner`` when given, else as ``MICRO_SERVICE``)."""
    settings = Settings()
    if owner is not None:
        settings = settings.model_copy(update={"service": owner})
    if settings.event_store != "jetstream":
        async with open_event_store(settings) as store:
            yield store
        return
    # Imported here so that `micro events` for other backends never touches NATS.
    from micro.bus.connection import connect

    client = await connect(settings, name=f"{settings.service}-events-cli")
    try:
        async with open_event_store(settings, client) as store:
            yield store
    finally:
        await client.close()


def _print(event: RecordedEvent, json_output: bool) -> None:
    if json_output:
        line = orjson.dumps(
            {
                "position": event.position,
                "stream": event.stream,
                "version": event.version,
                "type": event.type,
                "id": str(event.id),
                "data": event.data,
                "metadata": event.metadata,
            }
        ).decode()
    else:
        at = str(event.metadata.get("recorded_at", ""))[:23].replace("T", " ")
        data = orjson.dumps(event.data).decode()
        line = f"{event.position:>8}  {at}  {event.stream}@{event.version}  {event.type}  {data}"
    # Flushed per line, so `micro events tail | grep ...` shows events as they come.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _run(work: Coroutine[Any, Any, None], verbose: bool) -> None:
    """Run a command; errors become one readable line and exit status 1."""
    try:
        run_on_loop(work)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except (MicroError, pydantic.ValidationError, OSError) as error:
        if verbose:
            traceback.print_exc()
        typer.echo(f"error: {_describe(error)}", err=True)
        raise typer.Exit(1) from None


def _describe(error: BaseException) -> str:
    if isinstance(error, pydantic.ValidationError):
        return ValidationError.from_pydantic(error, what="settings").message
    return str(error) or type(error).__name__
