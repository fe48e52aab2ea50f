"""Turning an HTTP request into a command payload, checked against the published schema.

Query strings and path parameters are text; the schema says what each field should be, so
``?amount=5`` becomes ``{"amount": 5}`` when ``amount`` is an integer. A value that cannot be
read as its type is left as text for the schema check to report, with the field's name.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
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
_quick_checks: dict[int, tuple[Mapping[str, Any], Callable[[Any], bool] | None]] = {}


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


# Keywords that never make a payload invalid.
_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$comment", "deprecated"})
_PLAIN_TYPES: dict[str, tuple[type, ...]] = {
    "integer": (int,),
    "number": (int, float),
    "string": (str,),
    "boolean": (bool,),
    "null": (type(None),),
}


def _plain_check(schema: Mapping[str, Any]) -> Callable[[Any], bool] | None:
    """A quick look that answers True only where the schema surely accepts the payload.

    Only for an object schema whose fields say nothing but a plain type (what a pydantic
    model of plain fields publishes); ``None`` for any other schema. A False answer
    proves nothing: the full validator then decides and names the fields.
    """
    properties = schema.get("properties", {})
    required = schema.get("required", [])
    if (
        schema.get("type") != "object"
        or set(schema) - _ANNOTATIONS - {"type", "properties", "required"}
        or not isinstance(properties, Mapping)
        or not isinstance(required, list)
        or not all(isinstance(name, str) for name in required)
    ):
        return None
    fields: dict[str, tuple[type, ...]] = {}
    for name, field in properties.items():
        if not isinstance(field, Mapping) or set(field) - _ANNOTATIONS - {"type"}:
            return None
        kind = field.get("type")
        if not isinstance(kind, str) or kind not in _PLAIN_TYPES:
            return None
        fields[name] = _PLAIN_TYPES[kind]
    needed = tuple(required)

    def check(payload: Any) -> bool:
        # Exact types: a bool is no integer to JSON Schema, and 1.0 is one (the full
        # validator answers both).
        if type(payload) is not dict:
            return False
        for name in needed:
            if name not in payload:
                return False
        for name, value in payload.items():
            types = fields.get(name)
            if types is not None and type(value) not in types:
                return False
        return True

    return check


def _quick(schema: Mapping[str, Any]) -> Callable[[Any], bool] | None:
    # By identity: schemas live as long as their route table, and the entry holds the
    # schema so its id is not reused while cached.
    found = _quick_checks.get(id(schema))
    if found is None or found[0] is not schema:
        if len(_quick_checks) > 1000:
            _quick_checks.clear()
        found = _quick_checks[id(schema)] = (schema, _plain_check(schema))
    return found[1]


def validate(command: str, schema: Mapping[str, Any] | None, payload: Any) -> None:
    """Raise ``ValidationError`` listing each field of ``payload`` that ``schema`` refuses.

    A schema that is itself broken is not the caller's fault: it is skipped, and the service
    (which validates again) has the last word.
    """
    if not schema:
        return
    quick = _quick(schema)
    if quick is not None and quick(payload):
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
