"""Testing helpers for micro services: a real nats-server and shared contract suites."""

from __future__ import annotations

from micro._nats_server import NatsServer, NatsServerError, find_nats_server
from micro.testing.cluster import NatsCluster
from micro.testing.waiting import wait_until

__all__ = ["NatsCluster", "NatsServer", "NatsServerError", "find_nats_server", "wait_until"]
