"""The hot path's validate and dump give what pydantic's own methods give."""

from __future__ import annotations

import datetime
from typing import Any

import pydantic
import pytest
from pydantic import BaseModel
from pydantic_core import SchemaValidator

from micro._models import dump_json, validate


class Record(BaseModel):
    id: str
    balance: int = 0
    opened: datetime.datetime | None = None
    tags: list[str] = []


class Later(BaseModel):
    child: Child | None = None  # defined below: Later is not complete when it is made


class Child(BaseModel):
    name: str


LATER_WAS_INCOMPLETE = type(Later.__pydantic_validator__) is not SchemaValidator


DATA: list[dict[str, Any]] = [
    {"id": "a1"},
    {"id": "a2", "balance": "7", "opened": "2026-12-03T12:00:00Z", "tags": ["x"]},
]


@pytest.mark.parametrize("data", DATA)
def test_validate_and_dump_match_pydantic(data: dict[str, Any]) -> None:
    ours, theirs = validate(Record, data), Record.model_validate(data)
    assert ours == theirs
    assert dump_json(ours) == theirs.model_dump(mode="json")


def test_invalid_data_raises_pydantics_error() -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        validate(Record, {"id": "a3", "balance": "many"})
    assert caught.value.errors()[0]["loc"] == ("balance",)


def test_a_model_completed_late_still_validates() -> None:
    assert LATER_WAS_INCOMPLETE  # so the first call takes pydantic's own path, which builds it
    assert validate(Later, {"child": {"name": "c"}}).child == Child(name="c")
    assert type(Later.__pydantic_validator__) is SchemaValidator
    assert dump_json(Later(child=Child(name="c"))) == {"child": {"name": "c"}}
