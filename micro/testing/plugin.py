"""The pytest plugin micro registers (entry point ``pytest11``): a real nats-server per session.

Fixtures:
    nats_server      session-scoped ``NatsServer`` (JetStream, ``sync_interval: always``) on a
                     free 127.0.0.1 port, stopped at the end of the session.
    micro_namespace  a fresh namespace per test, so subjects and streams never collide; the
                     JetStream streams and buckets created under it are deleted afterwards.
    micro_settings   ``Settings`` pointing at that server and namespace.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from micro._nats_server import NatsServer
from micro.settings import Settings


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A real nats-server with JetStream for the whole test session."""
    store = Path(tmp_path_factory.mktemp("nats-server"))
    server = NatsServer(store_dir=store).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def micro_namespace(nats_server: NatsServer) -> AsyncIterator[str]:
    """A namespace of this test's own; its JetStream streams are deleted at teardown."""
    namespace = "t" + uuid.uuid4().hex[:10]
    yield namespace
    await _delete_streams(nats_server.url, namespace)


@pytest.fixture
def micro_settings(nats_server: NatsServer, micro_namespace: str) -> Settings:
    """Settings for a service under test: the session's server, this test's namespace."""
    return Settings(
        nats_url=nats_server.url,
        namespace=micro_namespace,
        embedded=False,
        data_dir=Path(os.environ.get("PYTEST_MICRO_DATA_DIR", ".micro")) / micro_namespace,
    )


async def _delete_streams(url: str, namespace: str) -> None:
    from micro.bus.nats_client import ConnectOptions, open_client
    from micro.errors import UnavailableError

    try:
        client = await open_client(url, ConnectOptions(), name="micro-testing", connect_timeout=2)
    except UnavailableError:
        return  # the server is gone (a fault test stopped it): nothing to clean
    try:
        jetstream = client.jetstream()
        prefix = namespace.upper()
        for info in await jetstream.streams_info():
            name = info.config.name or ""
            if (
                name.upper().startswith(prefix)
                or name.upper().startswith(f"KV_{prefix}")
                or (name.upper().startswith(f"OBJ_{prefix}"))
            ):
                await jetstream.delete_stream(name)
    except Exception:
        pass
    finally:
        await client.close()
