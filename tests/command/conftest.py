from __future__ import annotations

from pathlib import Path

import pytest

from micro import Settings
from tests.command.support import BANK_ENVIRONMENT, LaggingStore


@pytest.fixture
def store() -> LaggingStore:
    return LaggingStore()


@pytest.fixture
def bank_environment(
    micro_settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> dict[str, str]:
    """The environment samples/bank reads its settings from, for this test's server."""
    environment = {
        "NATS_URL": micro_settings.nats_url or "",
        "MICRO_NAMESPACE": micro_settings.namespace,
        "MICRO_EMBEDDED": "false",
        "MICRO_DATA_DIR": str(tmp_path),
        **BANK_ENVIRONMENT,
    }
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    return environment
