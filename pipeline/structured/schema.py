"""Answer schemas: load one (file or inline), say what OpenAI strict mode cannot take, build label schemas."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import JobError

# What OpenAI's structured outputs accept with `strict: true` (its "Supported schemas" guide): types
# string, number, integer, boolean, object, array, enum, anyOf; string: pattern, format (the formats
# below); number: multipleOf, (exclusive)minimum/maximum; array: minItems, maxItems; $defs/$ref
# (recursion included); annotations. Anything else makes the API reject the request.
_STRICT_KEYWORDS = frozenset(
    {
        "type",
        "enum",
        "const",
        "anyOf",
        "$ref",
        "$defs",
        "definitions",
        "$schema",
        "$id",
        "$comment",
        "title",
        "description",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "pattern",
        "format",
        "multipleOf",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minItems",
        "maxItems",
    }
)
_STRICT_FORMATS = frozenset({"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"})
STRICT_MAX_DEPTH = 10
STRICT_MAX_PROPERTIES = 5000
STRICT_MAX_ENUM_VALUES = 1000

_HINTS = {
    "oneOf": "use `anyOf` instead",
    "allOf": "merge the parts into one schema",
    "not": "remove it (describe what is allowed instead)",
    "if": "remove the condition (use `anyOf` of the alternatives)",
    "then": "remove the condition (use `anyOf` of the alternatives)",
    "else": "remove the condition (use `anyOf` of the alternatives)",
    "default": "remove it (strict mode has no defaults; a nullable field covers 'not given')",
    "patternProperties": "list the keys under `properties`",
    "prefixItems": "use one `items` schema (an array of objects for mixed entries)",
}


@dataclass(frozen=True, slots=True)
class StrictIssue:
    """One thing strict mode cannot take: where (a JSON pointer), which keyword, and what to change."""

    pointer: str
    keyword: str
    message: str

    def __str__(self) -> str:
        return f"{self.pointer or '/'}: `{self.keyword}`: {self.message}"


def pointer(parts: Iterable[Any]) -> str:
    """A JSON pointer (RFC 6901) from path parts: ("properties", "a/b") -> "/properties/a~1b"."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def check_schema(schema: Any, where: str) -> dict[str, Any]:
    """`schema` if it is a valid JSON Schema object (its own `$schema` draft, else 2020-12)."""
    if not isinstance(schema, dict):
        raise JobError(f"{where}: a JSON Schema must be an object (mapping), got {type(schema).__name__}")
    from jsonschema import Draft202012Validator, SchemaError  # loaded only for steps with a schema
    from jsonschema.validators import validator_for

    cls = validator_for(schema, default=Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        at = pointer(exc.absolute_path) or "/"
        raise JobError(f"{where}: not a valid JSON Schema: {exc.message} (at {at})") from None
    return schema


def load_schema(value: str | Mapping[str, Any], where: str) -> dict[str, Any]:
    """A schema given inline, or the content of a .json (or .yaml) file relative to the working directory."""
    if not isinstance(value, str):
        return check_schema(json.loads(json.dumps(value)), where)
    path = Path(value)
    if not path.is_file():
        raise JobError(
            f"{where}: schema file {value} not found (paths are relative to the working directory, {Path.cwd()})"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise JobError(f"{where}: cannot read schema file {value}: {exc}") from exc
    try:
        data = yaml.safe_load(text) if path.suffix.lower() in (".yaml", ".yml") else json.loads(text)
    except json.JSONDecodeError as exc:
        raise JobError(f"{where}: {value}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
    except yaml.YAMLError as exc:
        raise JobError(f"{where}: {value}: invalid YAML: {exc}") from None
    return check_schema(data, f"{where} ({value})")


def label_schema(labels: list[str]) -> dict[str, Any]:
    """The schema behind `labels: [...]`: an object with one `label` string out of the set."""
    return {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": list(labels)}},
        "required": ["label"],
        "additionalProperties": False,
    }


def _types(node: dict[str, Any]) -> set[str]:
    t = node.get("type")
    if isinstance(t, str):
        return {t}
    if isinstance(t, list):
        return {x for x in t if isinstance(x, str)}
    return set()


class _StrictWalk:
    def __init__(self) -> None:
        self.issues: list[StrictIssue] = []
        self.properties = 0
        self.enum_values = 0

    def add(self, at: tuple[Any, ...], keyword: str, message: str) -> None:
        self.issues.append(StrictIssue(pointer(at), keyword, message))

    def walk(self, node: Any, at: tuple[Any, ...], depth: int) -> None:
        if not isinstance(node, dict):
            self.add(at, "schema", "boolean schemas (true/false) are not supported; write an object schema")
            return
        for key in node:
            if key not in _STRICT_KEYWORDS:
                hint = _HINTS.get(key, "remove it (the check on our side still enforces it)")
                self.add(at, key, f"not supported in strict mode; {hint}")
        fmt = node.get("format")
        if isinstance(fmt, str) and fmt not in _STRICT_FORMATS:
            self.add(
                at,
                "format",
                f"format {fmt!r} is not supported in strict mode "
                f"(supported: {', '.join(sorted(_STRICT_FORMATS))}); remove it",
            )
        if isinstance(node.get("enum"), list):
            self.enum_values += len(node["enum"])
        props = node.get("properties")
        if "object" in _types(node) or isinstance(props, dict):
            self._object(node, props if isinstance(props, dict) else {}, at, depth + 1)
        items = node.get("items")
        if isinstance(items, dict):
            self.walk(items, (*at, "items"), depth)
        elif isinstance(items, list):
            self.add(at, "items", "a list of item schemas (tuple) is not supported; use one `items` schema")
        for i, option in enumerate(node.get("anyOf") or []):
            self.walk(option, (*at, "anyOf", i), depth)
        for defs in ("$defs", "definitions"):
            for name, sub in (node.get(defs) or {}).items():
                self.walk(sub, (*at, defs, name), 0)

    def _object(self, node: dict[str, Any], props: dict[str, Any], at: tuple[Any, ...], depth: int) -> None:
        if depth > STRICT_MAX_DEPTH:
            self.add(at, "properties", f"objects nest deeper than {STRICT_MAX_DEPTH} levels; flatten the schema")
        if node.get("additionalProperties") is not False:
            self.add(at, "additionalProperties", 'every object needs "additionalProperties": false; add it')
        required = node.get("required") or []
        missing = [p for p in props if p not in required]
        if missing:
            self.add(
                at,
                "required",
                f"propert{'y' if len(missing) == 1 else 'ies'} "
                f"{', '.join(repr(m) for m in missing)} not in `required`: strict mode needs "
                "every property required; list them and allow null "
                '(e.g. "type": ["string", "null"]) for optional ones',
            )
        self.properties += len(props)
        for name, sub in props.items():
            self.walk(sub, (*at, "properties", name), depth)


def strict_issues(schema: dict[str, Any]) -> list[StrictIssue]:
    """Why OpenAI strict mode would reject `schema` (empty when it can be sent with `strict: true`)."""
    w = _StrictWalk()
    if "anyOf" in schema:
        w.add((), "anyOf", "the root of a strict schema cannot be `anyOf`; make the root an object")
    if _types(schema) != {"object"}:
        w.add((), "type", 'the root of a strict schema must be "type": "object"')
    w.walk(schema, (), 0)
    if w.properties > STRICT_MAX_PROPERTIES:
        w.add((), "properties", f"{w.properties} properties in all; strict mode allows {STRICT_MAX_PROPERTIES}")
    if w.enum_values > STRICT_MAX_ENUM_VALUES:
        w.add((), "enum", f"{w.enum_values} enum values in all; strict mode allows {STRICT_MAX_ENUM_VALUES}")
    return w.issues
