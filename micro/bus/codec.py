"""JSON on the wire: orjson, with pydantic models understood and clear errors."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel

from micro.errors import BadRequestError, ValidationError

__all__ = ["decode", "encode"]

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def encode(value: Any, *, what: str = "payload") -> bytes:
    """JSON bytes for ``value``; ``ValidationError`` naming the type that cannot be encoded."""
    if value is None:
        return b""
    try:
        return orjson.dumps(value, default=_default, option=_OPTIONS)
    except TypeError as error:
        raise ValidationError(
            f"{what} is not JSON-serialisable: {error}",
            details={"fields": [{"field": what, "reason": str(error)}]},
        ) from error


def decode(data: bytes, *, what: str = "body") -> Any:
    """The value in JSON bytes (empty bytes are ``None``); ``BadRequestError`` if not JSON."""
    if not data:
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise BadRequestError(f"{what} is not valid JSON: {error}") from error
