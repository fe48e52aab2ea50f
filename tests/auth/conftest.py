"""Fixtures for the auth tests: fast argon2 costs, a shared in-memory event store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from micro import Micro, Settings
from micro.eventstore.memory import MemoryEventStore

FAST_HASHING = {
    # Test-only costs: the production defaults (3 passes, 64 MiB) take ~100 ms a hash.
    "auth_hash_time_cost": 1,
    "auth_hash_memory_kib": 8,
    "auth_hash_parallelism": 1,
}
SECRET = "s3cret-shared-by-every-test-service-0123456789"
PASSWORD = "Correct-Horse-42-battery"


@pytest.fixture
def auth_settings(micro_settings: Settings, tmp_path: Path) -> Settings:
    return Settings(
        **{
            **micro_settings.model_dump(),
            **FAST_HASHING,
            "auth_secret": SECRET,
            "data_dir": tmp_path / "data",
        }
    )


@pytest.fixture
def store() -> MemoryEventStore:
    """One event store for every service of a test, as a shared JetStream stream would be."""
    return MemoryEventStore()


ServiceFactory = Callable[..., Micro]


@pytest.fixture
def make_service(auth_settings: Settings, store: MemoryEventStore) -> ServiceFactory:
    """``make_service(service="bank", **settings)``: a Micro with the auth module loaded."""

    def make(service: str = "accounts", **overrides: Any) -> Micro:
        micro = Micro(auth_settings, service=service, **overrides)
        micro.modules.want(["auth"])
        micro.modules.get("auth")
        micro.commander.store = store
        return micro

    return make


async def sign_up(client: Micro, login: str = "ann", password: str = PASSWORD) -> dict[str, Any]:
    reply: dict[str, Any] = await client.act(
        "auth signup",
        {"name": "Ann", "login": login, "password": password, "password_confirmation": password},
    )
    return reply


async def log_in(
    client: Micro, login: str = "ann", password: str = PASSWORD, device: str = "laptop"
) -> str:
    reply = await client.act("auth login", {"login": login, "password": password, "device": device})
    token: str = reply["token"]
    return token
