"""Arrow column types derived from a JSON Schema, and JSON values turned into values of those types."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_MAX_DEPTH = 32


@dataclass(frozen=True)
class Col:
    """How answers at one place of a schema are stored.

    kind: string | int | float | bool | list | struct | json (JSON text: anything the schema does
    not pin to one type, e.g. a free-form object or a union of different types).
    """

    kind: str
    item: Col | None = None
    fields: tuple[tuple[str, Col], ...] = ()

    @property
    def type(self) -> pa.DataType:
        if self.kind == "list":
            assert self.item is not None
            return pa.list_(self.item.type)
        if self.kind == "struct":
            return pa.struct([pa.field(name, col.type) for name, col in self.fields])
        return _SCALAR[self.kind]


_SCALAR = {
    "string": pa.string(),
    "json": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
}
JSON = Col("json")


class ConversionError(ValueError):
    """A valid answer whose value does not fit its column (e.g. an integer beyond int64)."""


def resolve_refs(node: Any, root: dict[str, Any], stack: tuple[str, ...]) -> tuple[Any, tuple[str, ...]]:
    """Follow local `$ref`s; (None, stack) for a remote or cyclic reference."""
    while isinstance(node, dict) and isinstance(node.get("$ref"), str):
        ref = node["$ref"]
        if not ref.startswith("#") or ref in stack:
            return None, stack
        target: Any = root
        for part in ref[1:].split("/"):
            if part:
                part = part.replace("~1", "/").replace("~0", "~")
                target = target.get(part) if isinstance(target, dict) else None
        if not isinstance(target, dict):
            return None, stack
        rest = {k: v for k, v in node.items() if k != "$ref"}
        node, stack = {**target, **rest}, (*stack, ref)
    return node, stack


def _of_value(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "string"
    return "json"


def _merge_kinds(kinds: set[str | None]) -> Col:
    kinds.discard(None)
    if kinds == {"int", "float"}:
        return Col("float")
    if len(kinds) == 1:
        (k,) = kinds
        return Col(k or "json")
    return JSON


def describe(node: Any, root: dict[str, Any], stack: tuple[str, ...] = (), depth: int = 0) -> Col:
    """The column description of the schema `node` (part of `root`, for `$ref`s)."""
    node, stack = resolve_refs(node, root, stack)
    if not isinstance(node, dict) or depth > _MAX_DEPTH:
        return JSON
    if "const" in node:
        return _merge_kinds({_of_value(node["const"])})
    if isinstance(node.get("enum"), list):
        return _merge_kinds({_of_value(v) for v in node["enum"]})
    for key in ("anyOf", "oneOf"):
        options = node.get(key)
        if isinstance(options, list) and options:
            cols = []
            for o in options:
                r, _ = resolve_refs(o, root, stack)
                if isinstance(r, dict) and r.get("type") == "null":
                    continue
                cols.append(describe(o, root, stack, depth + 1))
            if cols and all(c == cols[0] for c in cols):
                return cols[0]
            if cols and {c.kind for c in cols} == {"int", "float"}:
                return Col("float")
            return JSON
    if "allOf" in node:
        return JSON
    t = node.get("type")
    types = [t] if isinstance(t, str) else [x for x in t if x != "null"] if isinstance(t, list) else []
    if not types:
        if "properties" in node:
            types = ["object"]
        elif "items" in node:
            types = ["array"]
        else:
            return JSON
    if set(types) == {"integer", "number"}:
        return Col("float")
    if len(types) != 1:
        return JSON
    kind = types[0]
    if kind == "string":
        return Col("string")
    if kind == "integer":
        return Col("int")
    if kind == "number":
        return Col("float")
    if kind == "boolean":
        return Col("bool")
    if kind == "array":
        items = node.get("items")
        if isinstance(items, dict | bool) and "prefixItems" not in node:
            return Col("list", item=describe(items, root, stack, depth + 1) if isinstance(items, dict) else JSON)
        return JSON
    if kind == "object":
        props = node.get("properties")
        if isinstance(props, dict) and props:
            return Col("struct", fields=tuple((k, describe(v, root, stack, depth + 1)) for k, v in props.items()))
        return JSON
    return JSON


def field_types(schema: dict[str, Any]) -> list[tuple[str, Col]] | None:
    """The top-level fields of an object schema with their columns; None when the root is not one."""
    col = describe(schema, schema, ("#",))
    return list(col.fields) if col.kind == "struct" else None


def arrow_type(schema: dict[str, Any]) -> pa.DataType:
    """The Arrow type a value of `schema` is stored as."""
    return describe(schema, schema, ("#",)).type


def to_arrow_value(col: Col, value: Any, at: str = "") -> Any:
    """`value` (a validated JSON value) as a Python value of the column's Arrow type.

    Raises ConversionError when it cannot be (an integer beyond int64, a type the schema did not
    pin down once validated, ...): such an answer is treated as invalid, never written half-right.
    """
    if value is None:
        return None
    kind = col.kind
    if kind == "json":
        return json.dumps(value, ensure_ascii=False)
    if kind == "string":
        if isinstance(value, str):
            return value
    elif kind == "bool":
        if isinstance(value, bool):
            return value
    elif kind == "int":
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if not INT64_MIN <= value <= INT64_MAX:
                raise ConversionError(f"at {at or '/'}: integer {value} does not fit in 64 bits")
            return value
    elif kind == "float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif kind == "list":
        if isinstance(value, list):
            assert col.item is not None
            return [to_arrow_value(col.item, v, f"{at}/{i}") for i, v in enumerate(value)]
    elif kind == "struct" and isinstance(value, dict):
        return {name: to_arrow_value(sub, value.get(name), f"{at}/{name}") for name, sub in col.fields}
    raise ConversionError(f"at {at or '/'}: {type(value).__name__} value does not fit a {kind} column")
