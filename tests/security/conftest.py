"""Secured nats-servers for these tests: TLS that verifies clients, users, an operator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from micro.testing import NatsServer
from micro.testing.secure_nats import Certificates, make_certificates, secured_server, server_config
from tests.security.support import PASSWORD


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(Path(tmp_path_factory.mktemp("certificates")))


@pytest.fixture(scope="session")
def tls_server(
    tmp_path_factory: pytest.TempPathFactory, certificates: Certificates
) -> Iterator[NatsServer]:
    """TLS with client verification, and one user with a password."""
    config = server_config(
        certificates=certificates,
        verify_clients=True,
        users=[{"user": "app", "password": PASSWORD}],
    )
    server = secured_server(Path(tmp_path_factory.mktemp("tls-server")), config)
    try:
        yield server
    finally:
        server.stop()
