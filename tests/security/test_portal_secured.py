"""``micro run samples/rest_portal`` against secured servers, configured by the environment only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from micro.testing import NatsServer
from micro.testing.secure_nats import (
    Certificates,
    Operator,
    secured_server,
    server_config,
)
from tests.security.support import (
    PASSWORD,
    PORTAL_PASSWORD,
    ROOT,
    ROOT_ENV,
    run_portal,
    tls_env,
    walk_the_bank,
)


def test_the_rest_portal_runs_over_tls_with_a_user_and_password(
    tls_server: NatsServer, certificates: Certificates, tmp_path: Path
) -> None:
    with run_portal(tls_env(tls_server, certificates), tmp_path) as portal:
        token = walk_the_bank(portal.url)
    log = portal.log.read_text()
    for secret in (PASSWORD, PORTAL_PASSWORD, token):
        assert secret not in log


def test_the_rest_portal_runs_on_creds_in_operator_mode(tmp_path: Path) -> None:
    operator = Operator()
    server = secured_server(tmp_path / "server", server_config(operator=operator))
    try:
        user = operator.user("portal", tmp_path / "creds")
        env = {
            "NATS_URL": server.url,
            "MICRO_EMBEDDED": "false",
            "MICRO_NATS_CREDS": str(user.creds),
        }
        (tmp_path / "data").mkdir()
        with run_portal(env, tmp_path / "data") as portal:
            token = walk_the_bank(portal.url)
        log = portal.log.read_text()
        for secret in (user.seed, user.jwt, PORTAL_PASSWORD, token):
            assert secret not in log
    finally:
        server.stop()


def test_the_rest_portal_runs_over_tls_with_only_what_micro_permissions_printed_for_it(
    certificates: Certificates, tmp_path: Path
) -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "micro.cli", "permissions", "samples/rest_portal", "--json"],
        env={**os.environ, **ROOT_ENV},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    blocks = json.loads(printed.stdout)
    assert blocks["service"] == "gateway"
    user = {"user": "gateway", "password": PASSWORD, "permissions": blocks["permissions"]}
    config = server_config(certificates=certificates, verify_clients=True, users=[user])
    server = secured_server(tmp_path / "server", config)
    try:
        env = {**tls_env(server, certificates), "MICRO_NATS_USER": "gateway"}
        env["MICRO_NAMESPACE"] = "micro"
        (tmp_path / "data").mkdir()
        with run_portal(env, tmp_path / "data") as portal:
            token = walk_the_bank(portal.url)
        log = portal.log.read_text()
        assert [line for line in log.splitlines() if "violation" in line.lower()] == []
        assert not [line for line in server.output_lines() if "violation" in line.lower()]
        for secret in (PASSWORD, PORTAL_PASSWORD, token):
            assert secret not in log
    finally:
        server.stop()
