from __future__ import annotations

import pytest
from harness import TestStore


@pytest.fixture
def store() -> TestStore:
    return TestStore()
