"""TLS with verification: every kind of connection micro opens, and clear refusals."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest

from micro import Micro
from micro.errors import UnavailableError
from micro.eventstore import NO_STREAM, NewEvent, open_event_store
from micro.testing import NatsServer
from micro.testing.secure_nats import Certificates
from tests.security.support import PASSWORD, ROOT_ENV, tls_env, tls_settings


def _namespace() -> str:
    return "s" + uuid.uuid4().hex[:10]


async def test_a_service_and_a_caller_talk_over_tls_with_a_password(
    tls_server: NatsServer, certificates: Certificates
) -> None:
    namespace = _namespace()
    service = Micro(tls_settings(tls_server, certificates, namespace=namespace, service="math"))
    service.add("double", lambda request: request * 2)
    async with (
        service,
        Micro(tls_settings(tls_server, certificates, namespace=namespace)) as caller,
    ):
        assert await caller.act("double", 21) == 42
        assert caller.client is not None
        assert caller.client.connected_url is not None
        assert caller.client._server_info.get("tls_required") is True


async def test_the_event_store_opens_its_own_connection_with_the_same_settings(
    tls_server: NatsServer, certificates: Certificates
) -> None:
    settings = tls_settings(tls_server, certificates, namespace=_namespace())
    async with open_event_store(settings) as store:
        result = await store.append("account-1", [NewEvent("AccountOpened", {})], NO_STREAM)
        assert result.version == 0
        assert [event.type for event in await store.read("account-1")] == ["AccountOpened"]


def test_the_cli_calls_a_service_over_tls(
    tls_server: NatsServer, certificates: Certificates
) -> None:
    namespace = _namespace()
    source = (
        "from micro import Micro\n"
        "micro = Micro(service='echo')\n"
        "micro.add('echo', lambda request: request)\n"
        "micro.start()\n"
    )
    env = {**os.environ, **ROOT_ENV, **tls_env(tls_server, certificates)}
    env["MICRO_NAMESPACE"] = namespace
    service = subprocess.Popen(
        [sys.executable, "-c", source], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            called = subprocess.run(
                [sys.executable, "-m", "micro.cli", "act", "echo", '{"hello": "tls"}'],
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
            )
            if called.returncode == 0 or time.monotonic() > deadline:
                break
            assert "service_not_found" in called.stderr or "not found" in called.stderr.lower()
        assert called.returncode == 0, called.stderr
        assert '"hello": "tls"' in called.stdout
        assert PASSWORD not in called.stdout + called.stderr
    finally:
        service.terminate()
        service.communicate(timeout=20)


async def _refusal(
    settings_overrides: dict[str, object], server: NatsServer, certificates: Certificates
) -> UnavailableError:
    # A generous timeout (the machine may be loaded): a refusal must end the attempt at
    # once, not after the timeout, which would fail the bound below.
    settings = tls_settings(server, certificates, connect_timeout=5.0, **settings_overrides)
    started = time.monotonic()
    with pytest.raises(UnavailableError) as caught:
        async with Micro(settings):
            pass
    assert time.monotonic() - started < settings.connect_timeout
    error = caught.value
    assert f"127.0.0.1:{server.port}" in error.message
    text = f"{error.message} {error.details}"
    assert PASSWORD not in text
    assert "wrong" not in text  # the wrong password below is never echoed either
    return error


async def test_a_client_without_a_certificate_is_refused_with_one_clear_error(
    tls_server: NatsServer, certificates: Certificates
) -> None:
    error = await _refusal({"nats_tls_cert": None, "nats_tls_key": None}, tls_server, certificates)
    assert "TLS handshake failed: TLSV13_ALERT_CERTIFICATE_REQUIRED" in error.message


async def test_a_client_trusting_another_ca_is_refused_with_one_clear_error(
    tls_server: NatsServer, certificates: Certificates
) -> None:
    error = await _refusal({"nats_tls_ca": certificates.other_ca}, tls_server, certificates)
    assert "TLS handshake failed" in error.message
    assert "CERTIFICATE_VERIFY_FAILED" in error.message


async def test_a_wrong_password_is_refused_without_echoing_any_password(
    tls_server: NatsServer, certificates: Certificates
) -> None:
    error = await _refusal({"nats_password": "wrong-password-x"}, tls_server, certificates)
    assert "authorization violation" in error.message


async def test_a_client_with_no_tls_configured_is_told_the_server_demands_tls(
    tls_server: NatsServer, certificates: Certificates
) -> None:
    error = await _refusal(
        {"nats_tls_ca": None, "nats_tls_cert": None, "nats_tls_key": None},
        tls_server,
        certificates,
    )
    assert "demands TLS" in error.message
