"""Fault scenarios whose NATS nodes and bank instances live in network namespaces.

A ``PartitionScenario`` is a ``Scenario`` on a ``PartitionCluster``: each bank instance runs
in a namespace of its own linked to every node (so links can be cut), and the load enters
through every node, one client per node, each retry through the next node, as a caller
facing a load balancer would. The test process reaches the nodes through loopback
forwarders, which the rig never cuts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fault_rig import BankInstance, Scenario

from micro.testing.partition import PartitionCluster


@dataclass
class PartitionScenario(Scenario):
    cluster: PartitionCluster | None = None
    bank_urls: dict[str, str] = field(default_factory=dict)
    """A bank's own ``NATS_URL`` (the nodes it knows of), instead of every node."""

    def __post_init__(self) -> None:
        assert self.cluster is not None
        self.url = self.cluster.urls
        self.entry_urls = self.cluster.client_urls(running_only=False)
        self.replicas = 3

    def bank(self, name: str) -> BankInstance:
        cluster = self.cluster
        assert cluster is not None
        host = cluster.network.hosts.get(name) or cluster.add_client(name)
        return BankInstance(
            name,
            self.bank_urls.get(name, cluster.inner_urls),
            self.namespace,
            self.workdir,
            command_prefix=host.command_prefix,
            MICRO_EVENT_STORE_REPLICAS=str(self.replicas),
        )
