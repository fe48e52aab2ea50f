"""Network partitions on one machine: NATS nodes and services in network namespaces.

Every host of the rig (a nats-server node, a service instance) runs in a network namespace
of its own. Each pair of hosts that may talk gets a link of its own: a veth pair from each
host into a hub namespace, joined there by a bridge of the pair. Cutting a pair sets its
two hub ports down: both hosts keep their addresses and routes and lose carrier, so their
packets vanish silently, as across a failed switch (no reset, no "unreachable"); healing
sets them up again and TCP connections that have not timed out carry on.

    with PartitionCluster(tmp_path) as cluster:      # 3 nodes, each in its namespace
        bank = cluster.add_client("b1")              # a namespace linked to every node
        subprocess.Popen([*bank.command_prefix, "python", "app.py"],
                         env={"NATS_URL": cluster.inner_urls, ...})
        micro = Micro(nats_url=cluster.urls)         # this process, through loopback
        cluster.network.cut("n1", "n2")              # n1 and n2 no longer hear each other
        cluster.network.heal_all()

The test process stays in its own namespace and reaches the nodes through a small TCP
forwarder per node (``_tcp_proxy.py``) that listens on 127.0.0.1 and connects from inside
the node's namespace; those connections are never cut. Addresses (10.77.0.0/24) exist only
inside the rig's namespaces, whose names carry a random prefix per rig, so rigs of
concurrent test runs never meet. Everything is deleted on close or at interpreter exit; the
processes started inside die with the process that started them, and the next rig deletes
the empty namespaces of a run that was killed.

What it cannot do: delay, reorder or drop a fraction of packets (the kernel has no netem
here); cut one direction only; move clocks. Requires root and ``ip`` (iproute2).
"""

from __future__ import annotations

import atexit
import functools
import itertools
import os
import secrets
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from micro._nats_server import ClusterConfig, NatsServer, _die_with_parent
from micro.bus.nats_client import ConnectOptions
from micro.testing.cluster import NatsCluster

__all__ = ["NetworkRig", "PartitionCluster", "RigError", "RigHost", "partition_unavailable"]

_SUBNET = "10.77.0"
_NETNS_DIR = Path("/var/run/netns")
_PREFIX = "mpt"
"""Every rig's namespaces start with it, then the creating pid and a random tag."""
_CLIENT_PORT = 4222
_ROUTE_PORT = 6222
"""Fixed ports, bound only inside a node's own namespace: nothing else can hold them."""


class RigError(RuntimeError):
    """A namespace, link or address of the rig could not be set up."""


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RigError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")


@functools.cache
def partition_unavailable() -> str | None:
    """Why the rig cannot run here (not root, no ``ip``, no namespaces), or None."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"{_PREFIX}{os.getpid()}-probe{secrets.token_hex(2)}"
    try:
        _ip("netns", "add", probe)
    except FileNotFoundError:
        return "the ip command (iproute2) is not installed"
    except RigError as error:
        return f"network namespaces are unavailable: {error}"
    try:
        _ip("-n", probe, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1")
        _ip("-n", probe, "link", "add", "probebr", "type", "bridge")
    except RigError as error:
        return f"veth pairs or bridges are unavailable: {error}"
    finally:
        subprocess.run(["ip", "netns", "delete", probe], capture_output=True, check=False)
    return None


def _remove_orphans() -> None:
    """Delete namespaces of rigs whose process died without cleaning up (kill -9, SIGTERM).

    Only when the creating process (its pid is in the name) is gone and nothing runs inside:
    a live rig of a concurrent run always has one or the other.
    """
    if not _NETNS_DIR.is_dir():
        return
    for entry in _NETNS_DIR.iterdir():
        if not entry.name.startswith(_PREFIX):
            continue
        owner = entry.name[len(_PREFIX) :].split("-", 1)[0].split("x", 1)[0]
        if not owner.isdigit() or Path(f"/proc/{owner}").exists():
            continue
        inside = subprocess.run(
            ["ip", "netns", "pids", entry.name], capture_output=True, text=True, check=False
        )
        if inside.returncode == 0 and not inside.stdout.strip():
            subprocess.run(["ip", "netns", "delete", entry.name], capture_output=True, check=False)


@dataclass
class RigHost:
    """One host of the rig: a namespace and the address it is known by."""

    name: str
    namespace: str
    address: str

    @property
    def command_prefix(self) -> tuple[str, ...]:
        """Prepend to a command to run it inside this host's namespace."""
        return ("ip", "netns", "exec", self.namespace)


@dataclass
class _Link:
    ports: tuple[str, str]
    """The two hub-side ports: down means the pair cannot talk."""
    up: bool = True


@dataclass
class NetworkRig:
    """Hosts in network namespaces, linked pairwise through a hub namespace."""

    prefix: str = field(default_factory=lambda: f"{_PREFIX}{os.getpid()}x{secrets.token_hex(3)}")
    hosts: dict[str, RigHost] = field(default_factory=dict)
    _links: dict[frozenset[str], _Link] = field(default_factory=dict)
    _namespaces: list[str] = field(default_factory=list)
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        reason = partition_unavailable()
        if reason is not None:
            raise RigError(reason)
        _remove_orphans()
        atexit.register(self.close)
        self.hub = self._namespace("hub")

    def _namespace(self, name: str) -> str:
        namespace = f"{self.prefix}-{name}"
        _ip("netns", "add", namespace)
        self._namespaces.append(namespace)
        _ip("-n", namespace, "link", "set", "lo", "up")
        return namespace

    def add_host(self, name: str) -> RigHost:
        """A new namespace with an address of its own, linked to nothing yet."""
        if name in self.hosts or not name.isalnum() or len(name) > 8:
            raise ValueError(f"host name {name!r}: taken, or not 1-8 letters and digits")
        address = f"{_SUBNET}.{len(self.hosts) + 1}"
        host = RigHost(name, self._namespace(name), address)
        # The address sits on lo: it is the host's, whichever link a peer reaches it by.
        _ip("-n", host.namespace, "addr", "add", f"{address}/32", "dev", "lo")
        self.hosts[name] = host
        return host

    def link(self, first: str, second: str) -> None:
        """Join two hosts by a link of their own."""
        pair = frozenset((first, second))
        if len(pair) != 2 or pair in self._links:
            raise ValueError(f"cannot link {first!r} and {second!r} (same host or linked)")
        number = next(self._counter)
        bridge = f"br{number}"
        _ip("-n", self.hub, "link", "add", bridge, "type", "bridge")
        _ip("-n", self.hub, "link", "set", bridge, "up")
        ports = []
        for here, there in ((first, second), (second, first)):
            host, peer = self.hosts[here], self.hosts[there]
            port, inside = f"p{number}{here}", f"to{there}"
            _ip("-n", self.hub, "link", "add", port, "type", "veth", "peer", "name", inside)
            _ip("-n", self.hub, "link", "set", inside, "netns", host.namespace)
            _ip("-n", self.hub, "link", "set", port, "master", bridge, "up")
            _ip("-n", host.namespace, "link", "set", inside, "up")
            _ip(
                "-n",
                host.namespace,
                "route",
                "add",
                f"{peer.address}/32",
                "dev",
                inside,
                "src",
                host.address,
            )
            ports.append(port)
        self._links[pair] = _Link((ports[0], ports[1]))

    def _set(self, first: str, second: str, up: bool) -> None:
        link = self._links[frozenset((first, second))]
        if link.up == up:
            return
        for port in link.ports:
            _ip("-n", self.hub, "link", "set", port, "up" if up else "down")
        link.up = up

    def cut(self, first: str, second: str) -> None:
        """The two hosts stop hearing each other (silently, both ways)."""
        self._set(first, second, up=False)

    def heal(self, first: str, second: str) -> None:
        self._set(first, second, up=True)

    def isolate(self, name: str) -> None:
        """Cut ``name`` from every host it is linked to."""
        for pair in self._links:
            if name in pair:
                other = next(iter(pair - {name}))
                self.cut(name, other)

    def split(self, side: list[str], other_side: list[str]) -> None:
        """Cut every link between the two groups of hosts."""
        for first in side:
            for second in other_side:
                if frozenset((first, second)) in self._links:
                    self.cut(first, second)

    def heal_all(self) -> None:
        for pair in self._links:
            self.heal(*pair)

    def cut_pairs(self) -> list[tuple[str, ...]]:
        """The pairs cut at the moment, each sorted."""
        return [tuple(sorted(pair)) for pair, link in self._links.items() if not link.up]

    def close(self) -> None:
        """Delete every namespace of the rig (their interfaces go with them)."""
        while self._namespaces:
            namespace = self._namespaces.pop()
            subprocess.run(["ip", "netns", "delete", namespace], capture_output=True, check=False)
        atexit.unregister(self.close)


class _Forwarder:
    """127.0.0.1:<free port> here, forwarded to an address inside a host's namespace."""

    def __init__(self, host: RigHost, port: int) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = int(self.listener.getsockname()[1])
        self.process = subprocess.Popen(
            [
                *host.command_prefix,
                sys.executable,
                str(Path(__file__).with_name("_tcp_proxy.py")),
                str(self.listener.fileno()),
                host.address,
                str(port),
            ],
            pass_fds=(self.listener.fileno(),),
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.listener.close()


class PartitionCluster(NatsCluster):
    """A nats-server cluster whose nodes run in namespaces of a ``NetworkRig``.

    ``urls`` reach the nodes from this process (loopback forwarders, never cut);
    ``inner_urls`` are the nodes' own addresses, for hosts added with ``add_client``.
    Nodes are named n1, n2, n3 in the rig and as servers. Each node solicits routes to the
    others and tells clients about none (``no_advertise``): a client outside the rig must
    never learn an address it could try to reach from the machine's own network.
    """

    def __init__(self, base_dir: Path, size: int = 3, name: str = "micro-partition") -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        self.network = NetworkRig()
        self._forwarders: list[_Forwarder] = []
        self.connect_options = ConnectOptions()  # the rig's nodes are not secured
        try:
            hosts = [self.network.add_host(f"n{index + 1}") for index in range(size)]
            for first, second in itertools.combinations(hosts, 2):
                self.network.link(first.name, second.name)
            self.nodes = [
                NatsServer(
                    store_dir=base_dir / host.name,
                    host=host.address,
                    port=_CLIENT_PORT,
                    server_name=host.name,
                    cluster=ClusterConfig(
                        name=name,
                        port=_ROUTE_PORT,
                        host=host.address,
                        routes=[
                            f"nats://{other.address}:{_ROUTE_PORT}"
                            for other in hosts
                            if other is not host
                        ],
                        no_advertise=True,
                    ),
                    die_with_parent=True,
                    command_prefix=host.command_prefix,
                )
                for host in hosts
            ]
            self._forwarders = [_Forwarder(host, _CLIENT_PORT) for host in hosts]
        except BaseException:
            self.close()
            raise

    def client_urls(self, *, running_only: bool = True) -> list[str]:
        return [
            f"nats://127.0.0.1:{forwarder.port}"
            for node, forwarder in zip(self.nodes, self._forwarders, strict=True)
            if node.running or not running_only
        ]

    @property
    def inner_urls(self) -> str:
        """The nodes' addresses inside the rig, for its client hosts' ``NATS_URL``."""
        return ",".join(node.url for node in self.nodes)

    def add_client(self, name: str) -> RigHost:
        """A host for a service instance, linked to every node."""
        host = self.network.add_host(name)
        for node in self.nodes:
            assert node.server_name is not None
            self.network.link(name, node.server_name)
        return host

    def close(self) -> None:
        """Stop the nodes and forwarders and delete the namespaces."""
        try:
            for node in getattr(self, "nodes", []):
                node.stop()
            for forwarder in self._forwarders:
                forwarder.stop()
        finally:
            self.network.close()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise
