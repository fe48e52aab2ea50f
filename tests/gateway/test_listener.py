"""A taken gateway address is one ConfigError, raised before anything connects."""

from __future__ import annotations

import socket

import pytest

from micro import ConfigError, Micro, Settings
from micro.gateway import Gateway, GatewaySettings
from micro.gateway.listener import bind_listener


@pytest.fixture
def taken_port():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_bind_listener_names_the_taken_address_and_the_settings(taken_port) -> None:
    with pytest.raises(ConfigError) as caught:
        bind_listener("127.0.0.1", taken_port)
    assert caught.value.message == (
        f"the gateway's address 127.0.0.1:{taken_port} is already in use (is the gateway "
        "running already?); set MICRO_GATEWAY_PORT or MICRO_GATEWAY_HOST to listen elsewhere"
    )


def test_bind_listener_on_port_zero_picks_a_free_port() -> None:
    listener = bind_listener("127.0.0.1", 0)
    try:
        assert listener.getsockname()[1] > 0
    finally:
        listener.close()


async def test_gateway_start_on_a_taken_port_fails_before_it_connects(
    taken_port, nats_server, micro_namespace
) -> None:
    micro = Micro(Settings(nats_url=nats_server.url, namespace=micro_namespace), service="front")
    gateway = Gateway(micro, GatewaySettings(port=taken_port))
    with pytest.raises(ConfigError, match="already in use"):
        await gateway.start()
    assert not micro.serving
