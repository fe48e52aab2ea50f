"""A 3-node nats-server cluster on loopback, for tests of replication and node loss.

Each node runs JetStream with its own store directory and ``sync_interval: always``, routes
to the others, and can be stopped, killed (SIGKILL), paused (SIGSTOP) and restarted on the
same ports and store.

    with NatsCluster(tmp_path) as cluster:
        micro = Micro(nats_url=cluster.urls, event_store_replicas=3)
        ...
        cluster.kill(cluster.leader_of("MICRO_EVENTS"))
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from micro._nats_server import ClusterConfig, NatsServer, NatsServerError
from micro.bus.nats_client import ConnectOptions, open_client

__all__ = ["NatsCluster"]


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            sockets.append(probe)
        return [int(probe.getsockname()[1]) for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


class NatsCluster:
    """Three (or ``size``) routed nats-server nodes with JetStream."""

    def __init__(
        self,
        base_dir: Path,
        size: int = 3,
        name: str = "micro-test",
        *,
        extra_config: str = "",
        connect_options: ConnectOptions | None = None,
    ) -> None:
        """``extra_config`` secures every node (see ``micro.testing.secure_nats``); its own
        connections then use ``connect_options``, like any connection micro opens."""
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        ports = _free_ports(2 * size)
        client_ports, route_ports = ports[:size], ports[size:]
        self.nodes = [
            NatsServer(
                store_dir=base_dir / f"node{index + 1}",
                port=client_ports[index],
                server_name=f"n{index + 1}",
                cluster=ClusterConfig(
                    name=name,
                    port=route_ports[index],
                    routes=[p for j, p in enumerate(route_ports) if j != index],
                ),
                extra_config=extra_config,
            )
            for index in range(size)
        ]
        self.connect_options = connect_options or ConnectOptions()

    async def _connect(self) -> Any:
        return await open_client(
            ",".join(self.client_urls()),
            self.connect_options,
            name="micro-test-cluster",
            connect_timeout=2.0,
        )

    @property
    def urls(self) -> str:
        """Every node's client URL, comma separated (as ``NATS_URL`` takes them)."""
        return ",".join(self.client_urls(running_only=False))

    def client_urls(self, *, running_only: bool = True) -> list[str]:
        """The URLs this process reaches the nodes at (only the running ones by default)."""
        return [node.url for node in self.nodes if node.running or not running_only]

    def node(self, name: str) -> NatsServer:
        for node in self.nodes:
            if node.server_name == name:
                return node
        raise KeyError(f"no node named {name!r}")

    def start(self, timeout: float = 30.0) -> Self:
        for node in self.nodes:
            node.launch()
        for node in self.nodes:
            node.wait_ready(timeout)
        self.wait_for_jetstream(timeout)
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def wait_for_jetstream(self, timeout: float = 30.0) -> None:
        """Block until the JetStream meta leader answers (the cluster takes writes).

        Runs its own event loop in a worker thread, so it works from sync and async code.
        """
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, self._wait_for_meta_leader(timeout)).result()

    async def _wait_for_meta_leader(self, timeout: float) -> None:
        from nats.js.errors import NotFoundError

        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if not self.client_urls():
                await asyncio.sleep(0.1)
                continue
            try:
                client = await self._connect()
            except Exception as error:
                last_error = error
                await asyncio.sleep(0.1)
                continue
            try:
                # Only the meta leader answers for a stream that does not exist: "not
                # found" means the cluster can create streams now.
                with contextlib.suppress(NotFoundError):
                    await client.jetstream().stream_info("MICRO_CLUSTER_READY_PROBE")
                return
            except Exception as error:
                last_error = error
                await asyncio.sleep(0.1)
            finally:
                await client.close()
        raise NatsServerError(
            f"JetStream cluster has no meta leader after {timeout}s: {last_error}"
        )

    async def stream_leader(self, stream: str) -> str:
        """Name of the node leading ``stream``'s replicas."""
        client = await self._connect()
        try:
            info: Any = await client.jetstream().stream_info(stream)
            return str(info.cluster.leader)
        finally:
            await client.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
