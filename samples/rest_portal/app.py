"""The REST portal: the auth and bank services and the HTTP gateway, in one process.

(When the bank loads the auth module itself, as it does now, it serves sign-up and login
and no separate auth service is started.)

Run it with ``micro run samples/rest_portal`` (no NATS_URL needed: the embedded broker
starts), then open the URL it prints. ``MICRO_GATEWAY_PORT`` changes the port (8080),
``MICRO_GATEWAY_HOST`` the address (127.0.0.1).

The bank is the bank sample as it is (its Micro runs here, beside the others, on one event
loop). The three Micros share one event store, so a command's position is one the gateway's
views and its live feed understand.
"""

from __future__ import annotations

import asyncio
import contextlib
import runpy
import signal
import threading
from pathlib import Path
from typing import Any

import structlog

from micro import ConfigError, Micro
from micro.eventstore import EventStore, open_event_store
from micro.gateway import Gateway, GatewaySettings, Route

HERE = Path(__file__).resolve().parent
BANK_APP = HERE.parent / "bank" / "app.py"

_log = structlog.get_logger("rest_portal")

ROUTES = [
    Route("POST", "/auth/signup", "auth signup", "Create a user"),
    Route("POST", "/auth/login", "auth login", "Log in: returns a token"),
    Route("POST", "/auth/logout", "auth logout", "Log out of this session"),
    Route("GET", "/auth/me", "auth whoami", "Who the token belongs to"),
    Route("GET", "/accounts", "accounts", "Every account"),
    Route("POST", "/accounts", "open account", "Open an account"),
    Route("GET", "/accounts/{id}", "account balance", "One account's balance"),
    Route("POST", "/accounts/{id}/deposit", "deposit", "Put money in"),
    Route("POST", "/accounts/{id}/withdraw", "withdraw", "Take money out"),
    Route("POST", "/transfers", "transfer", "Move money between accounts"),
    Route("GET", "/transfers/{id}", "transfer status", "How a transfer went"),
]

_ID = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9_-]+$"}
_AMOUNT = {"type": "integer", "exclusiveMinimum": 0, "maximum": 1_000_000_000}


def _object(required: list[str], **fields: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": fields, "required": required}


SCHEMAS: dict[str, dict[str, Any]] = {
    # The bank's views take a plain dict, so its service publishes no query schema.
    "account balance": _object(["id"], id=_ID),
    "transfer status": _object(["id"], id=_ID),
    "accounts": {"type": "object", "properties": {}},
    # The bank's own schemas accept any string as an id, but an id becomes part of a stream
    # name, and a name with other characters is refused deep inside (as a 500): the front
    # door asks for what a stream name can hold.
    "deposit": _object(["id", "amount"], id=_ID, amount=_AMOUNT),
    "withdraw": _object(["id", "amount"], id=_ID, amount=_AMOUNT),
    "settle transfer": _object(
        ["id", "outcome"],
        id=_ID,
        outcome={"enum": ["debited", "completed", "failed"]},
        reason={"type": "string", "default": ""},
    ),
}


def load_bank() -> Micro:
    """The bank sample's Micro, built by its own app.py (not started)."""
    namespace = runpy.run_path(str(BANK_APP), run_name="bank_app")
    bank = namespace["micro"]
    assert isinstance(bank, Micro)
    return bank


def load_auth() -> Micro | None:
    """A Micro serving the auth module's commands, or None when micro has no auth module."""
    auth = Micro(service="auth")
    try:
        auth.modules.want(["auth"])
        auth.modules.get("auth")
    except ConfigError as error:
        _log.warning("no auth module: the portal runs without sign-up", error=str(error))
        return None
    return auth


async def open_store(client_micro: Micro, owner: str) -> EventStore:
    """The event store every service of the portal shares; its events are ``owner``'s."""
    settings = client_micro.settings.model_copy(update={"service": owner})
    if settings.event_store == "memory":
        _log.warning("memory event store: events last as long as the process")
    store: EventStore = open_event_store(settings, client_micro.client)
    await store.start()
    return store


async def run(stop: asyncio.Event | None = None) -> None:
    """Start everything, print the URL, serve until SIGINT/SIGTERM (or ``stop``)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
                installed.append(sig)
    front = Micro(service="gateway")
    await front.open()  # first: it starts the embedded broker when one is needed
    bank = load_bank()
    # The bank writes every event here (sign-up and login too, as it loads auth): under
    # its own name, whichever connection carries them.
    store = await open_store(front, bank.settings.service)
    # The bank serves sign-up and login itself when it loads the auth module: a second
    # service serving the same commands would run each of them twice.
    auth = None if "auth login" in bank.endpoints else load_auth()
    services = [service for service in (auth, bank) if service is not None]
    serves_auth = any("auth whoami" in service.endpoints for service in services)
    for service in services:
        service.commander.store = store
    gateway = Gateway(
        front,
        GatewaySettings(
            required_services=[service.settings.service for service in services],
            verify_command="auth whoami" if serves_auth else None,
            exclude=["rebuild *"],  # operators rebuild models from the CLI, not the web
        ),
        routes=ROUTES,
        schemas=SCHEMAS,
        event_store=store,
        console=HERE / "static",
        title="micro REST portal",
    )
    opened: list[Micro] = []
    try:
        for service in services:
            await service.open()
            opened.append(service)
        await gateway.start()
        print(f"REST portal: {gateway.url}  (API docs: {gateway.url}/docs)", flush=True)
        await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await gateway.stop()
        for service in reversed(opened):
            await service.close()
        await store.close()
        await front.close()


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()
