"""``micro asyncapi``: the AsyncAPI 3.0 document of the running services, from discovery."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import orjson
import typer

from micro.app import Micro
from micro.cli._common import fail, load_settings
from micro.errors import MicroError
from micro.loop import run as run_on_loop

__all__ = ["asyncapi"]


def asyncapi(
    wait_for: Annotated[
        list[str] | None,
        typer.Option("--wait-for", help="Wait until this service runs (repeatable)."),
    ] = None,
    title: Annotated[str, typer.Option(help="The document's title.")] = "micro services",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for --wait-for.")] = 10.0,
) -> None:
    """Print the AsyncAPI 3.0 document of every command and view running in the namespace."""
    from micro.asyncapi import build_asyncapi

    settings = load_settings(embedded=False, service="cli", log_level="warning")

    async def build() -> dict[str, Any]:
        async with Micro(settings) as micro:
            if wait_for:
                await micro.discover(wait_for=wait_for, timeout=timeout)
            records = await micro.services()
            client = micro.client
            url = client.connected_url if client is not None else None
            return build_asyncapi(
                records,
                title=title,
                version=settings.version,
                namespace=settings.namespace,
                nats_url=url.geturl() if url is not None else settings.nats_url,
            )

    try:
        document = run_on_loop(build())
    except MicroError as error:
        fail(f"{error.code}: {error.message}")
    sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
