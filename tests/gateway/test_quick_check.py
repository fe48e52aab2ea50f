"""The quick schema check never accepts what the full validator refuses."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from micro.errors import ValidationError
from micro.gateway.payloads import _plain_check, validate

KINDS = ("integer", "number", "string", "boolean", "null")
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)
NAMES = st.sampled_from(["a", "b", "c", "d"])


@st.composite
def plain_schemas(draw: st.DrawFn) -> dict[str, Any]:
    fields = draw(st.dictionaries(NAMES, st.sampled_from(KINDS), max_size=4))
    schema: dict[str, Any] = {
        "type": "object",
        "title": "T",
        "properties": {name: {"type": kind, "title": name} for name, kind in fields.items()},
    }
    required = draw(st.lists(NAMES, unique=True, max_size=3))
    if required:
        schema["required"] = required
    return schema


@given(plain_schemas(), st.dictionaries(NAMES, JSON, max_size=4) | JSON)
def test_a_quick_yes_is_a_yes_of_the_full_validator(schema: dict[str, Any], payload: Any) -> None:
    check = _plain_check(schema)
    assert check is not None
    if check(payload):
        assert jsonschema.Draft202012Validator(schema).is_valid(payload)


def test_a_quick_no_still_gets_the_full_answer() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    check = _plain_check(schema)
    assert check is not None
    assert check({"a": 1, "z": [1]})
    assert not check({"a": 1.0})
    validate("c", schema, {"a": 1.0})  # 1.0 is an integer to JSON Schema
    assert not check({"a": True})
    with pytest.raises(ValidationError) as refused:
        validate("c", schema, {"a": True})
    assert refused.value.details["fields"][0]["field"] == "a"


def test_any_other_keyword_leaves_the_schema_to_the_full_validator() -> None:
    base = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert _plain_check(base) is not None
    assert _plain_check({**base, "additionalProperties": False}) is None
    assert _plain_check({**base, "properties": {"a": {"type": "integer", "minimum": 1}}}) is None
    assert _plain_check({**base, "properties": {"a": {"type": ["integer", "null"]}}}) is None
    assert _plain_check({**base, "properties": {"a": {"$ref": "#/$defs/A"}}}) is None
    assert _plain_check({"type": "array"}) is None
