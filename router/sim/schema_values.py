"""Plausible values for a JSON schema: tool-call arguments and structured output.

Deterministic and small: the same schema always gives the same value. Covers
what tools and ``response_format`` use in practice: ``type`` (or a list of
types), ``enum``/``const``, ``anyOf``/``oneOf``/``allOf``, local ``$ref`` into
``$defs``/``definitions``, string ``format``, numeric and length bounds, arrays
and nested objects. Strings are picked from the property name ("city" gives
"Paris") so a reply reads like a model's.

Example:
    >>> schema = {"type": "object", "required": ["city", "days"],
    ...           "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1},
    ...                          "unit": {"enum": ["c", "f"]}}}
    >>> value_for(schema)
    {'city': 'Paris', 'days': 3}
    >>> value_for(schema, optional=True)
    {'city': 'Paris', 'days': 3, 'unit': 'c'}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["value_for"]

_MAX_DEPTH = 8  # a recursive schema stops here with null

_NAMED_STRINGS = (
    ("city", "Paris"),
    ("location", "Paris, France"),
    ("country", "France"),
    ("email", "ada@example.com"),
    ("url", "https://example.com"),
    ("date", "2024-05-01"),
    ("time", "12:00:00"),
    ("unit", "celsius"),
    ("lang", "en"),
    ("query", "weather in Paris"),
    ("name", "Ada Lovelace"),
    ("title", "A simulated title"),
    ("id", "id-0001"),
)

_FORMATS = {
    "date-time": "2024-05-01T12:00:00Z",
    "date": "2024-05-01",
    "time": "12:00:00",
    "email": "ada@example.com",
    "uri": "https://example.com",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def value_for(schema: object, *, name: str = "", optional: bool = False) -> Any:
    """Return a value valid against ``schema`` (a JSON-schema mapping).

    Objects get their ``required`` properties, or every property with
    ``optional=True``. An unknown or empty schema gives a string.

    Example:
        >>> value_for({"type": "array", "items": {"type": "number"}, "minItems": 2})
        [3.5, 3.5]
        >>> value_for({"anyOf": [{"type": "null"}, {"type": "boolean"}]})
        True
    """
    root = schema if isinstance(schema, Mapping) else {}
    return _value(root, root, name, optional, 0)


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return schema
    target: Any = root
    for key in ref[2:].split("/"):
        target = target.get(key) if isinstance(target, Mapping) else None
    if not isinstance(target, Mapping):
        return {}
    return {**target, **{k: v for k, v in schema.items() if k != "$ref"}}


def _value(schema: Mapping[str, Any], root: Mapping[str, Any], name: str, optional: bool, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        return None
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            chosen = next((o for o in options if isinstance(o, Mapping) and o.get("type") != "null"), options[0])
            return _value(chosen, root, name, optional, depth + 1)
    parts = schema.get("allOf")
    if isinstance(parts, list) and parts:
        merged: dict[str, Any] = {}
        for part in parts:
            if isinstance(part, Mapping):
                merged.update(_resolve(part, root))
        return _value(merged, root, name, optional, depth + 1)
    kind = _type_of(schema)
    if kind == "object":
        return _object(schema, root, optional, depth)
    if kind == "array":
        items = schema.get("items")
        count = max(1, int(schema.get("minItems", 1)))
        if "maxItems" in schema:
            count = min(count, int(schema["maxItems"]))
        item_schema = items if isinstance(items, Mapping) else {}
        return [_value(item_schema, root, name, optional, depth + 1) for _ in range(count)]
    if kind == "integer":
        return int(_bounded(schema, 3))
    if kind == "number":
        return _bounded(schema, 3.5)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string(schema, name)


def _type_of(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if isinstance(kind, str):
        return kind
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return "string"


def _object(schema: Mapping[str, Any], root: Mapping[str, Any], optional: bool, depth: int) -> dict[str, Any]:
    properties = schema.get("properties")
    properties = properties if isinstance(properties, Mapping) else {}
    required = schema.get("required")
    wanted: list[str] = []
    if optional:
        wanted = [str(key) for key in properties]
    elif isinstance(required, list):
        wanted = [key for key in required if isinstance(key, str)]
    return {
        key: _value(properties.get(key) or {}, root, key, optional, depth + 1)
        for key in wanted
    }


def _bounded(schema: Mapping[str, Any], preferred: float) -> float:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    value = preferred
    if isinstance(low, (int, float)) and value <= low:
        value = low + (1 if "exclusiveMinimum" in schema and "minimum" not in schema else 0)
    if isinstance(high, (int, float)) and value >= high:
        value = high - (1 if "exclusiveMaximum" in schema and "maximum" not in schema else 0)
    return value


def _string(schema: Mapping[str, Any], name: str) -> str:
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt in _FORMATS:
        text = _FORMATS[fmt]
    else:
        lowered = name.lower()
        text = next((value for key, value in _NAMED_STRINGS if key in lowered), f"sample {name}".strip())
    minimum = schema.get("minLength")
    maximum = schema.get("maxLength")
    if isinstance(minimum, int) and len(text) < minimum:
        text = text + "x" * (minimum - len(text))
    if isinstance(maximum, int):
        text = text[:maximum]
    return text
