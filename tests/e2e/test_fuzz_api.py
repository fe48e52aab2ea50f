"""Schemathesis against the running portal's /openapi.json: no 5xx, every reply as documented.

Bounded: a few examples per operation, valid ones and deliberately invalid ones.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.support import Portal

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_answers_within_its_documented_contract(
    portal: Portal, mode: GenerationMode
) -> None:
    schema = schemathesis.openapi.from_url(f"{portal.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 20  # auth and bank, generated and explicit routes
    tested = 0
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=4,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def call(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=CHECKS, timeout=10)

        try:
            call()
        except Unsatisfiable:
            # Nothing to make invalid (an operation without parameters or body).
            assert mode is GenerationMode.NEGATIVE
            continue
        tested += 1
    assert tested > 15
