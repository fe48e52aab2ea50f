from __future__ import annotations

from micro.eventstore.base import EventStore
from micro.eventstore.memory import MemoryEventStore
from micro.testing.eventstore_contract import EventStoreContract


class TestMemoryEventStore(EventStoreContract):
    async def make_store(self) -> EventStore:
        store = MemoryEventStore()
        await store.start()
        return store
