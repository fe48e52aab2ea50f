"""Every way to authenticate, each against a server that demands it: token, NKey, creds,
``tls://`` URLs and TLS before the server's INFO (handshake first)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import nats
import nkeys
import pytest

from micro import Micro, Settings
from micro.errors import UnavailableError
from micro.testing import NatsServer
from micro.testing.secure_nats import (
    Certificates,
    Operator,
    new_nkey,
    secured_server,
    server_config,
)

TOKEN = "tok-" + uuid.uuid4().hex


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[list[NatsServer]]:
    started: list[NatsServer] = []
    yield started
    for server in started:
        server.stop()


def _start(started: list[NatsServer], folder: Path, config: str) -> NatsServer:
    server = secured_server(folder, config)
    started.append(server)
    return server


async def _round_trip(**settings: object) -> None:
    namespace = "a" + uuid.uuid4().hex[:8]
    values = {"embedded": False, "namespace": namespace, "connect_timeout": 2.0, **settings}
    service = Micro(Settings(**values), service="echo")  # type: ignore[arg-type]
    service.add("echo", lambda request: request)
    async with service, Micro(Settings(**values)) as caller:  # type: ignore[arg-type]
        assert await caller.act("echo", {"ok": True}) == {"ok": True}


async def test_a_token(server_factory: list[NatsServer], tmp_path: Path) -> None:
    config = f'authorization: {{ token: "{TOKEN}" }}\n'
    server = _start(server_factory, tmp_path / "s", config)
    await _round_trip(nats_url=server.url, nats_token=TOKEN)
    with pytest.raises(UnavailableError) as caught:
        await _round_trip(nats_url=server.url, nats_token="tok-wrong-0123456789")
    assert "authorization violation" in caught.value.message
    assert "tok-wrong" not in caught.value.message


async def test_an_nkey_seed_file(server_factory: list[NatsServer], tmp_path: Path) -> None:
    key = new_nkey(nkeys.PREFIX_BYTE_USER)
    config = f'authorization: {{ users: [ {{ nkey: "{key.public_key.decode()}" }} ] }}\n'
    server = _start(server_factory, tmp_path / "s", config)
    seed = tmp_path / "user.nk"
    seed.write_text(key.seed.decode() + "\n")
    await _round_trip(nats_url=server.url, nats_nkey_seed=seed)


async def test_a_creds_file_in_operator_mode(
    server_factory: list[NatsServer], tmp_path: Path
) -> None:
    operator = Operator()
    server = _start(server_factory, tmp_path / "s", server_config(operator=operator))
    user = operator.user("app", tmp_path / "creds")
    await _round_trip(nats_url=server.url, nats_creds=user.creds)
    stranger = Operator().user("stranger", tmp_path / "other")  # signed by another account
    with pytest.raises(UnavailableError) as caught:
        await _round_trip(nats_url=server.url, nats_creds=stranger.creds)
    assert "authorization violation" in caught.value.message


async def test_a_tls_url(tls_server: NatsServer, certificates: Certificates) -> None:
    from tests.security.support import tls_settings

    url = f"tls://127.0.0.1:{tls_server.port}"
    settings = tls_settings(tls_server, certificates, nats_url=url)
    await _round_trip(**settings.model_dump(exclude={"namespace", "service"}))


async def test_tls_before_the_servers_info(
    server_factory: list[NatsServer], tmp_path: Path, certificates: Certificates
) -> None:
    config = server_config(certificates=certificates, handshake_first=True)
    server = _start(server_factory, tmp_path / "s", config)
    await _round_trip(
        nats_url=server.url, nats_tls_ca=certificates.ca, nats_tls_handshake_first=True
    )


async def test_a_permissions_block_goes_into_a_user_jwt_and_is_enforced(
    server_factory: list[NatsServer], tmp_path: Path
) -> None:
    from micro.permissions import caller_permissions

    operator = Operator()
    server = _start(server_factory, tmp_path / "s", server_config(operator=operator))
    block = caller_permissions(Settings(namespace="micro"), "cli")
    user = operator.user("cli", tmp_path / "creds", permissions=block)
    errors: list[str] = []
    refused = asyncio.Event()

    async def on_error(error: Exception) -> None:
        errors.append(str(error).lower())
        refused.set()

    client = await nats.connect(server.url, user_credentials=str(user.creds), error_cb=on_error)
    try:
        await client.subscribe("_INBOX.>")
        await asyncio.wait_for(refused.wait(), 5)
    finally:
        await client.close()
    assert 'permissions violation for subscription to "_inbox.>"' in errors[0]
