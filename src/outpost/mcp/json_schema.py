"""JSON Schemas of the tools' arguments and results, from the pydantic models the REST API uses.

The `$ref`s pydantic writes are inlined: several MCP clients do not resolve `$defs`, and would show an
agent enum, say, as an opaque reference instead of its values.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

_DEFS_PREFIX = "#/$defs/"


def model_schema(model: type[BaseModel], mode: Literal["validation", "serialization"]) -> dict[str, Any]:
    """The model's JSON Schema with every `$ref` replaced by what it refers to. Raises ValueError for a
    recursive model, which cannot be inlined."""
    schema = model.model_json_schema(mode=mode)
    definitions = schema.pop("$defs", {})
    inlined: dict[str, Any] = _inline(schema, definitions, ())
    return inlined


def _inline(node: Any, definitions: dict[str, Any], seen: tuple[str, ...]) -> Any:
    if isinstance(node, list):
        return [_inline(item, definitions, seen) for item in node]
    if not isinstance(node, dict):
        return node
    reference = node.get("$ref")
    if isinstance(reference, str) and reference.startswith(_DEFS_PREFIX):
        name = reference.removeprefix(_DEFS_PREFIX)
        if name in seen:
            raise ValueError(f"{name} refers to itself; its schema cannot be inlined")
        siblings = {key: value for key, value in node.items() if key != "$ref"}
        return _inline({**definitions[name], **siblings}, definitions, (*seen, name))
    return {key: _inline(value, definitions, seen) for key, value in node.items()}
