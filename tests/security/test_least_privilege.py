"""Least privilege, enforced by a real nats-server with exactly what ``micro permissions`` printed.

The auth service, the bank, the gateway and a caller each run as their own NATS user. The
whole bank scenario passes through the gateway; then a rogue client holding the bank's
credentials tries what the bank must not do, and the server refuses every attempt.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.js.errors import NotFoundError

from micro.testing import NatsServer
from micro.testing.secure_nats import secured_server, server_config
from tests.security.support import PORTAL_PASSWORD, ROOT_ENV, App, run_app, walk_the_bank

APPS = Path(__file__).resolve().parent / "apps"
AUTH_SECRET = secrets.token_urlsafe(48)
PASSWORDS = {
    name: f"pw-{name}-{secrets.token_hex(12)}" for name in ("auth", "bank", "gateway", "cli")
}
ADMIN_PASSWORD = f"pw-admin-{secrets.token_hex(12)}"
COMMON_ENV = {
    "MICRO_NAMESPACE": "micro",
    "MICRO_EMBEDDED": "false",
    "MICRO_AUTH_SECRET": AUTH_SECRET,
}
BANK_ENV = {"MICRO_AUTH_COMMANDS": "false", "MICRO_SNAPSHOT_EVERY_EVENTS": "3"}


def _permissions(app: Path, env: dict[str, str]) -> dict[str, Any]:
    """What ``micro permissions APP --json`` prints."""
    printed = subprocess.run(
        [sys.executable, "-m", "micro.cli", "permissions", str(app), "--json"],
        env={**os.environ, **ROOT_ENV, **COMMON_ENV, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return dict(json.loads(printed.stdout))


@dataclass
class Deployment:
    server: NatsServer
    profiles: dict[str, dict[str, Any]]
    apps: dict[str, App]
    url: str
    folder: Path


def _env(server: NatsServer, user: str) -> dict[str, str]:
    return {
        **COMMON_ENV,
        "NATS_URL": server.url,
        "MICRO_NATS_USER": user,
        "MICRO_NATS_PASSWORD": PASSWORDS[user],
    }


def _wait_serving(server: NatsServer, services: list[str], apps: dict[str, App]) -> None:
    """Until each service answers a ``$SRV`` ping (the gateway reads a stream they make)."""

    async def answered() -> bool:
        client = await nats.connect(server.url, user="admin", password=ADMIN_PASSWORD)
        try:
            for service in services:
                try:
                    await client.request(f"$SRV.PING.{service}", b"", timeout=1)
                except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
                    return False
            return True
        finally:
            await client.close()

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if asyncio.run(answered()):
            return
        time.sleep(0.1)
    logs = {name: app.log.read_text()[-2000:] for name, app in apps.items()}
    raise AssertionError(f"{services} never answered: {logs}")


def _wait_ready(url: str, apps: dict[str, App]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    logs = {name: app.log.read_text()[-2000:] for name, app in apps.items()}
    raise AssertionError(f"the gateway never became ready: {logs}")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    folder = Path(tmp_path_factory.mktemp("least-privilege"))
    bank = _permissions(APPS / "bank_app.py", BANK_ENV)
    auth = _permissions(APPS / "auth_app.py", {})
    profiles = {
        "bank": bank["permissions"],
        "auth": auth["permissions"],
        "gateway": bank["gateway"]["permissions"],
        "cli": bank["caller"]["permissions"],
    }
    users: list[dict[str, Any]] = [
        {"user": name, "password": PASSWORDS[name], "permissions": block}
        for name, block in profiles.items()
    ]
    users.append({"user": "admin", "password": ADMIN_PASSWORD})  # the test's own inspection
    server = secured_server(folder / "server", server_config(users=users))
    apps: dict[str, App] = {}
    try:
        with (
            run_app(APPS / "auth_app.py", _env(server, "auth"), folder, "auth") as apps["auth"],
            run_app(
                APPS / "bank_app.py", {**_env(server, "bank"), **BANK_ENV}, folder, "bank"
            ) as apps["bank"],
        ):
            _wait_serving(server, ["auth", "bank"], apps)
            with run_app(
                APPS / "gateway_app.py",
                _env(server, "gateway"),
                folder,
                "gateway",
                prints_url=True,
            ) as apps["gateway"]:
                _wait_ready(apps["gateway"].url, apps)
                yield Deployment(server, profiles, apps, apps["gateway"].url, folder)
    finally:
        server.stop()


def _violations(text: str) -> list[str]:
    return [line for line in text.splitlines() if "violation" in line.lower()]


@pytest.fixture(scope="module")
def scenario(deployment: Deployment) -> dict[str, Any]:
    """The whole bank scenario, once, through the gateway and the CLI."""
    token = walk_the_bank(deployment.url)
    with httpx.Client(base_url=deployment.url, timeout=20) as http:
        http.headers["Authorization"] = f"Bearer {token}"
        accounts = http.get("/accounts").json()
    account = next(item for item in accounts if item["balance"] == 70)
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "micro.cli",
            "act",
            "account balance",
            json.dumps({"id": account["id"]}),
            "--meta",
            json.dumps({"token": token}),
        ],
        env={**os.environ, **ROOT_ENV, **_env(deployment.server, "cli")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return {"token": token, "account": account, "cli": cli, "feed": _feed(deployment.url, token)}


def _feed(url: str, token: str) -> list[str]:
    """The event feed's history, read over SSE until the transfer's last step shows."""
    seen: list[str] = []
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.stream(
        "GET", f"{url}/api/events?from_position=1", headers=headers, timeout=20
    ) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("event:") or line.startswith("data:"):
                seen.append(line)
            if "TransferCompleted" in line or len(seen) > 400:
                break
    return seen


def test_the_whole_bank_scenario_passes_with_least_privilege(
    deployment: Deployment, scenario: dict[str, Any]
) -> None:
    cli = scenario["cli"]
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["balance"] == 70


def test_the_gateway_feed_reads_the_events_of_every_service(scenario: dict[str, Any]) -> None:
    feed = "\n".join(scenario["feed"])
    assert "AccountOpened" in feed
    assert "Deposited" in feed


def test_the_bank_stores_snapshots_of_its_models(
    deployment: Deployment, scenario: dict[str, Any]
) -> None:
    async def names() -> list[str]:
        client = await nats.connect(deployment.server.url, user="admin", password=ADMIN_PASSWORD)
        try:
            store = await client.jetstream().object_store("micro_snapshots")
            return [info.name for info in await store.list()]
        except NotFoundError:  # the bucket or its first object is not there yet
            return []
        finally:
            await client.close()

    deadline = time.monotonic() + 20
    found: list[str] = []
    while time.monotonic() < deadline and not found:
        found = [name for name in asyncio.run(names()) if name.startswith("bank.")]
        if not found:
            time.sleep(0.1)
    assert found


def test_nobody_hit_a_permission_in_the_legitimate_scenario(
    deployment: Deployment, scenario: dict[str, Any]
) -> None:
    for name, app in deployment.apps.items():
        assert _violations(app.log.read_text()) == [], name
    assert _violations(scenario["cli"].stderr) == []
    assert _violations("\n".join(deployment.server.output_lines())) == []


class Rogue:
    """A client holding the bank's credentials, collecting the server's refusals."""

    def __init__(self, server: NatsServer) -> None:
        self.server = server
        self.errors: list[str] = []
        self.client: Any = None

    async def __aenter__(self) -> Rogue:
        async def on_error(error: Exception) -> None:
            self.errors.append(str(error))

        self.client = await nats.connect(
            self.server.url,
            user="bank",
            password=PASSWORDS["bank"],
            inbox_prefix="_INBOX_bank",
            error_cb=on_error,
            max_reconnect_attempts=0,
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.client.close()

    async def refused(self, kind: str, subject: str) -> bool:
        """Whether the server reported a ``kind`` violation for ``subject`` in time."""
        wanted = f'permissions violation for {kind} to "{subject}"'.lower()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if any(wanted in error.lower() for error in self.errors):
                return True
            await asyncio.sleep(0.01)
        return False


@pytest.mark.parametrize(
    "subject",
    ["_INBOX.>", "_INBOX_gateway.>", "_INBOX_cli.>", "_INBOX_auth.>", ">"],
)
async def test_the_bank_cannot_read_anyone_elses_replies(
    deployment: Deployment, subject: str
) -> None:
    async with Rogue(deployment.server) as rogue:
        await rogue.client.subscribe(subject)
        assert await rogue.refused("subscription", subject)


@pytest.mark.parametrize(
    "subject",
    ["micro.cmd.auth_login", "micro.cmd.auth_signup", "micro.cmd.whatever_else"],
)
async def test_the_bank_cannot_serve_a_command_of_another_service(
    deployment: Deployment, subject: str
) -> None:
    async with Rogue(deployment.server) as rogue:
        await rogue.client.subscribe(subject, queue="auth")
        assert await rogue.refused("subscription", subject)


@pytest.mark.parametrize(
    "subject",
    [
        "$JS.API.STREAM.DELETE.MICRO_EVENTS",
        "$JS.API.STREAM.PURGE.MICRO_EVENTS",
        "$JS.API.STREAM.UPDATE.MICRO_EVENTS",
        "$JS.API.STREAM.DELETE.KV_micro_checkpoints",
        "$JS.API.STREAM.MSG.DELETE.MICRO_EVENTS",
    ],
)
async def test_the_bank_cannot_delete_or_change_streams(
    deployment: Deployment, subject: str
) -> None:
    async with Rogue(deployment.server) as rogue:
        await rogue.client.publish(subject, b"{}")
        assert await rogue.refused("publish", subject)


@pytest.mark.parametrize(
    "subject",
    ["micro.ev.auth.user-admin", "micro.ev.user-admin", "micro.ev.gateway.anything"],
)
async def test_the_bank_cannot_append_to_auth_streams_or_any_other_service(
    deployment: Deployment, subject: str
) -> None:
    forged = json.dumps({"type": "RoleGranted", "data": {"role": "admin"}}).encode()
    async with Rogue(deployment.server) as rogue:
        await rogue.client.publish(subject, forged)
        assert await rogue.refused("publish", subject)


def test_no_secret_appears_in_any_log_or_error(
    deployment: Deployment, scenario: dict[str, Any]
) -> None:
    secrets_used = [*PASSWORDS.values(), ADMIN_PASSWORD, AUTH_SECRET, PORTAL_PASSWORD]
    secrets_used.append(scenario["token"])
    texts = {name: app.log.read_text() for name, app in deployment.apps.items()}
    texts["cli"] = scenario["cli"].stdout + scenario["cli"].stderr
    texts["server"] = "\n".join(deployment.server.output_lines())
    assert all(texts.values())
    for name, text in texts.items():
        for secret in secrets_used:
            assert secret not in text, f"a secret appears in the {name} output"


async def test_the_bank_may_still_read_its_own_replies(deployment: Deployment) -> None:
    async with Rogue(deployment.server) as rogue:
        await rogue.client.subscribe("_INBOX_bank.>")
        await rogue.client.flush(timeout=5)
        assert not await rogue.refused("subscription", "_INBOX_bank.>")
