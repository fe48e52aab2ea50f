"""Helpers shared by the security tests."""

from __future__ import annotations

import socket
from pathlib import Path

from micro._nats_server import NatsServer
from micro.settings import Settings
from micro.testing.secure_nats import Certificates

PASSWORD = "s3cret-Passw0rd-for-tests"
ROOT_ENV = {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}


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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
