"""Turning an HTTP request into a command payload, checked against the published schema.

Query strings and path parameters are text; the schema says what each field should be, so
``?amount=5`` becomes ``{"amount": 5}`` when ``amount`` is an integer. A value that cannot be
read as its type is left as text for the schema check to report, with the field's name.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import jsonschema
import orjson
from jsonschema.exceptions import SchemaError

from micro._numbers import parse_integer, parse_number
from micro.errors import ValidationError

__all__ = ["coerce", "properties", "validate"]

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_validators: dict[bytes, jsonschema.protocols.Validator] = {}


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = root.get("$defs", {}).get(ref.removeprefix("#/$defs/"))
        if isinstance(target, Mapping):
            return target
    return schema


def properties(schema: Mapping[str, Any] | None) -> tuple[dict[str, Any], set[str]]:
    """The top-level fields of an object schema and which of them are required."""
    if not schema:
        return {}, set()
    resolved = _resolve(schema, schema)
    fields = resolved.get("properties")
    required = resolved.get("required")
    return (
        {str(k): v for k, v in fields.items()} if isinstance(fields, Mapping) else {},
        {str(item) for item in required} if isinstance(required, list) else set(),
    )


def _types(schema: Mapping[str, Any], root: Mapping[str, Any]) -> list[str]:
    schema = _resolve(schema, root)
    kind = schema.get("type")
    if isinstance(kind, str):
        return [kind]
    if isinstance(kind, list):
        return [str(item) for item in kind]
    found: list[str] = []
    for key in ("anyOf", "oneOf", "allOf"):
        for option in schema.get(key) or []:
            if isinstance(option, Mapping):
                found.extend(_types(option, root))
    return found


def _coerce_one(text: str, types: list[str]) -> Any:
    for kind in types:
        if kind == "integer":
            integer = parse_integer(text)
            if integer is not None:
                return integer
        elif kind == "number":
            number = parse_number(text)  # no NaN, no infinity
            if number is not None:
                return number
        elif kind == "boolean":
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
        elif kind == "null":
            if text in ("", "null"):
                return None
        elif kind in ("object", "array"):
            with contextlib.suppress(orjson.JSONDecodeError):
                return orjson.loads(text)
        elif kind == "string":
            return text
    return text


def coerce(values: Mapping[str, Sequence[str]], schema: Mapping[str, Any] | None) -> dict[str, Any]:
    """Text values (a query string, path parameters) as the types ``schema`` gives them."""
    fields, _ = properties(schema)
    payload: dict[str, Any] = {}
    for name, texts in values.items():
        field = fields.get(name)
        if not isinstance(field, Mapping):
            payload[name] = texts[-1] if texts else ""
            continue
        types = _types(field, schema or {})
        if "array" in types and not (len(texts) == 1 and texts[0].startswith("[")):
            items = _resolve(field, schema or {}).get("items")
            item_types = _types(items, schema or {}) if isinstance(items, Mapping) else []
            payload[name] = [_coerce_one(text, item_types) for text in texts]
        else:
            payload[name] = _coerce_one(texts[-1] if texts else "", types)
    return payload


def _validator(schema: Mapping[str, Any]) -> jsonschema.protocols.Validator:
    key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    validator = _validators.get(key)
    if validator is None:
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        cls.check_schema(dict(schema))
        validator = cls(dict(schema), format_checker=cls.FORMAT_CHECKER)
        if len(_validators) > 1000:  # schemas come from discovery: keep the cache bounded
            _validators.clear()
        _validators[key] = validator
    return validator


def validate(command: str, schema: Mapping[str, Any] | None, payload: Any) -> None:
    """Raise ``ValidationError`` listing each field of ``payload`` that ``schema`` refuses.

    A schema that is itself broken is not the caller's fault: it is skipped, and the service
    (which validates again) has the last word.
    """
    if not schema:
        return
    try:
        validator = _validator(schema)
    except SchemaError:
        return
    fields = [
        {
            "field": ".".join(str(part) for part in error.absolute_path) or "payload",
            "reason": error.message,
            "type": str(error.validator),
        }
        for error in sorted(
            validator.iter_errors(payload), key=lambda e: [str(p) for p in e.absolute_path]
        )
    ]
    if fields:
        summary = "; ".join(f"{item['field']}: {item['reason']}" for item in fields[:5])
        raise ValidationError(
            f"invalid payload for {command!r}: {summary}"[:1000], details={"fields": fields[:50]}
        )
