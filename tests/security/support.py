"""Helpers shared by the security tests."""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from micro.settings import Settings
from micro.testing import NatsServer
from micro.testing.secure_nats import Certificates

PASSWORD = "s3cret-Passw0rd-for-tests"
ROOT = Path(__file__).resolve().parents[2]
ROOT_ENV = {"PYTHONPATH": str(ROOT)}


def tls_settings(server: NatsServer, certificates: Certificates, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "nats_url": server.url,
        "embedded": False,
        "nats_user": "app",
        "nats_password": PASSWORD,
        "nats_tls_ca": certificates.ca,
        "nats_tls_cert": certificates.client_cert,
        "nats_tls_key": certificates.client_key,
        "connect_timeout": 2.0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def tls_env(server: NatsServer, certificates: Certificates) -> dict[str, str]:
    return {
        "NATS_URL": server.url,
        "MICRO_EMBEDDED": "false",
        "MICRO_NATS_USER": "app",
        "MICRO_NATS_PASSWORD": PASSWORD,
        "MICRO_NATS_TLS_CA": str(certificates.ca),
        "MICRO_NATS_TLS_CERT": str(certificates.client_cert),
        "MICRO_NATS_TLS_KEY": str(certificates.client_key),
    }


# -- the REST portal in its own process -------------------------------------------------

PORTAL_PASSWORD = "correct-horse-battery-staple-42"
_URL = re.compile(r"REST portal: (http://\S+)")


@dataclass
class App:
    """A process started by ``micro run``, its log file, and the URL it printed (if any)."""

    process: subprocess.Popen[str]
    log: Path
    url: str = ""


@contextlib.contextmanager
def run_app(
    target: Path, env: dict[str, str], data: Path, name: str, *, prints_url: bool = False
) -> Iterator[App]:
    """``micro run TARGET`` configured by ``env`` only; yields once it printed its URL
    (``prints_url``) or at once. Stopped (SIGTERM) when the block ends."""
    log = data / f"{name}.log"
    environment = {
        **os.environ,
        "MICRO_NAMESPACE": "p" + uuid.uuid4().hex[:8],
        "MICRO_DATA_DIR": str(data / name),
        "MICRO_LOG_FORMAT": "json",
        "MICRO_LOG_LEVEL": "debug",
        "MICRO_GATEWAY_PORT": "0",
        "MICRO_AUTH_HASH_TIME_COST": "1",
        "MICRO_AUTH_HASH_MEMORY_KIB": "1024",
        "MICRO_AUTH_HASH_PARALLELISM": "1",
        "PYTHONPATH": str(ROOT),
        **env,
    }
    for variable in ("NATS_URL", "MICRO_NATS_URL"):
        if variable not in env:
            environment.pop(variable, None)
    with log.open("w") as errors:
        process = subprocess.Popen(
            [sys.executable, "-m", "micro.cli", "run", str(target)],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            cwd=data,
        )
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    app = App(process, log)
    try:
        deadline = time.monotonic() + 60
        while prints_url and not app.url and time.monotonic() < deadline:
            if process.poll() is not None:
                break
            if selector.select(timeout=max(0.0, deadline - time.monotonic())):
                found = _URL.search(process.stdout.readline())
                app.url = found.group(1) if found else ""
        if prints_url and not app.url:
            raise RuntimeError(f"{name} did not start: {log.read_text()[-3000:]}")
        yield app
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        process.stdout.close()
        selector.close()


def run_portal(env: dict[str, str], data: Path) -> contextlib.AbstractContextManager[App]:
    """``micro run samples/rest_portal`` configured by ``env`` only."""
    return run_app(ROOT / "samples" / "rest_portal", env, data, "portal", prints_url=True)


def walk_the_bank(url: str) -> str:
    """Sign up, log in, open two accounts, deposit, transfer; returns the login token."""
    login = f"ada{uuid.uuid4().hex[:6]}"
    with httpx.Client(base_url=url, timeout=20) as http:
        signup = {
            "name": "Ada Lovelace",
            "login": login,
            "password": PORTAL_PASSWORD,
            "password_confirmation": PORTAL_PASSWORD,
        }
        assert http.post("/auth/signup", json=signup).status_code == 200
        response = http.post("/auth/login", json={"login": login, "password": PORTAL_PASSWORD})
        assert response.status_code == 200, response.text
        token = str(response.json()["token"])
        http.headers["Authorization"] = f"Bearer {token}"
        for account in ("a1", "a2"):
            response = http.post("/accounts", json={"id": f"{login}-{account}", "owner": login})
            assert response.status_code == 200, response.text
        response = http.post(f"/accounts/{login}-a1/deposit", json={"amount": 100})
        assert response.status_code == 200, response.text
        transfer = {"id": f"{login}-t", "source": f"{login}-a1", "target": f"{login}-a2"}
        response = http.post("/transfers", json={**transfer, "amount": 30})
        assert response.status_code == 200, response.text
        deadline = time.monotonic() + 20
        while True:  # the transfer is carried out by the bank's process, after the reply
            balance = http.get(f"/accounts/{login}-a2").json()
            if balance.get("balance") == 30 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert balance["balance"] == 30, balance
        assert http.get(f"/accounts/{login}-a1").json()["balance"] == 70
    return token
