from __future__ import annotations

import pytest

from micro._nats_server import NatsServer
from micro.eventstore.base import EventStore
from micro.eventstore.jetstream import JetStreamEventStore
from micro.testing.eventstore_contract import EventStoreContract


class TestJetStreamEventStore(EventStoreContract):
    @pytest.fixture(autouse=True)
    def _server(self, nats_server: NatsServer, micro_namespace: str) -> None:
        self.url = nats_server.url
        self.namespace = micro_namespace

    async def make_store(self) -> EventStore:
        store = JetStreamEventStore(url=self.url, namespace=self.namespace)
        await store.start()
        return store
