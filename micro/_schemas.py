"""JSON Schemas inside API documents (OpenAPI, AsyncAPI): the error envelope, and hoisting.

Pydantic's schemas keep nested types under ``$defs`` with ``#/$defs/...`` references; those
only resolve against the schema's own root, so inside a document each is moved to
``components/schemas`` under a prefixed name and every reference is rewritten to match.
"""

from __future__ import annotations

import copy
import re
from typing import Any

__all__ = ["ERROR_SCHEMA", "NAME_UNSAFE", "hoist"]

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {"type": "object"},
                "retryable": {"type": "boolean"},
                "trace_id": {"type": ["string", "null"]},
            },
        }
    },
}

NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def hoist(schema: dict[str, Any], prefix: str, components: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``$defs`` moved into ``components`` and references rewritten."""
    schema = copy.deepcopy(schema)
    definitions = schema.pop("$defs", None) or {}
    schema.pop("$schema", None)
    renamed = {name: f"{prefix}.{NAME_UNSAFE.sub('_', name)}" for name in definitions}

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                target = renamed.get(ref.removeprefix("#/$defs/"))
                if target is not None:
                    node = {**node, "$ref": f"#/components/schemas/{target}"}
            return {key: rewrite(value) for key, value in node.items()}
        if isinstance(node, list):
            return [rewrite(item) for item in node]
        return node

    for name, definition in definitions.items():
        components[renamed[name]] = rewrite(definition)
    rewritten: dict[str, Any] = rewrite(schema)
    return rewritten
