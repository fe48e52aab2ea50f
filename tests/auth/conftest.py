"""Fixtures for the auth tests (their helpers are in ``support.py``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from micro import Micro, Settings
from micro.eventstore.memory import MemoryEventStore

# PASSWORD, log_in and sign_up stay importable from here for tests written before
# support.py existed; new tests import them from there.
from tests.auth.support import FAST_HASHING, PASSWORD, SECRET, log_in, sign_up  # noqa: F401


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
