"""The OpenTelemetry SDK for one test, set up as an application would and removed after."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from telemetry_support import Sdk, configured_sdk


@pytest.fixture
def sdk() -> Iterator[Sdk]:
    with configured_sdk() as configured:
        yield configured
