"""The OpenTelemetry SDK, configured once for this process as an application would."""

from __future__ import annotations

import pytest
from telemetry_support import Sdk, configured_sdk


@pytest.fixture
def sdk() -> Sdk:
    return configured_sdk()
