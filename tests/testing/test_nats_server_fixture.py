import nats

from micro.testing import NatsServer


async def test_session_server_accepts_clients_and_has_jetstream(nats_server: NatsServer) -> None:
    client = await nats.connect(nats_server.url)
    try:
        info = await client.jetstream().account_info()
        assert info.limits is not None
    finally:
        await client.close()
