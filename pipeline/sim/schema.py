"""Deterministic JSON instances for a JSON schema (and deliberate violations of it)."""

from __future__ import annotations

import copy
import hashlib
import math
import uuid
from typing import Any

_WORDS = (  # noqa: SIM905
    "alpha bravo cedar delta ember fjord grove harbor iris juniper kestrel lumen meadow nectar "
    "orchid pebble quartz river sierra tundra umber valley willow xenon yarrow zephyr"
).split()
_LABEL_NAMES = ("sentiment", "label", "polarity", "category", "class", "classification", "tone")


class _Gen:
    def __init__(self, root: dict[str, Any], seed: str, label: str | None) -> None:
        self.root = root
        self.seed = seed
        self.label = label

    def h(self, path: str) -> int:
        return int.from_bytes(hashlib.sha256(f"{self.seed}|{path}".encode()).digest()[:8], "big")

    def resolve(self, schema: Any) -> dict[str, Any]:
        seen = 0
        while isinstance(schema, dict) and "$ref" in schema and seen < 32:
            ref = schema["$ref"]
            target: Any = self.root
            if ref.startswith("#"):
                for part in ref[1:].split("/"):
                    if part:
                        target = target.get(part.replace("~1", "/").replace("~0", "~"), {})
            else:
                target = {}
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **rest}
            seen += 1
        return schema if isinstance(schema, dict) else {}

    def value(self, schema: Any, path: str, name: str) -> Any:
        s = self.resolve(schema)
        if "const" in s:
            return s["const"]
        if "enum" in s and s["enum"]:
            return self.enum_value(s["enum"], path, name)
        for key in ("anyOf", "oneOf"):
            if s.get(key):
                options = [self.resolve(o) for o in s[key]]
                non_null = [o for o in options if o.get("type") != "null"] or options
                return self.value(non_null[0], path, name)
        if s.get("allOf"):
            merged: dict[str, Any] = {}
            for part in s["allOf"]:
                part = self.resolve(part)
                props = {**merged.get("properties", {}), **part.get("properties", {})}
                merged = {**merged, **part, "properties": props}
            rest = {k: v for k, v in s.items() if k != "allOf"}
            return self.value({**merged, **rest}, path, name)
        t = s.get("type")
        if isinstance(t, list):
            non_null = [x for x in t if x != "null"]
            t = non_null[0] if non_null else "null"
        if t is None:
            t = "object" if "properties" in s else "array" if "items" in s else "string"
        return getattr(self, f"gen_{t}", self.gen_string)(s, path, name)

    def enum_value(self, options: list[Any], path: str, name: str) -> Any:
        if self.label is not None and is_label_name(name):
            for exact in (True, False):
                for opt in options:
                    low = opt.lower() if isinstance(opt, str) else None
                    if low and (low == self.label if exact else self.label.startswith(low[:3])):
                        return opt
        return options[self.h(path) % len(options)]

    def gen_object(self, s: dict[str, Any], path: str, name: str) -> dict[str, Any]:
        props = s.get("properties") or {}
        out = {k: self.value(v, f"{path}.{k}", k) for k, v in props.items()}
        for k in s.get("required") or []:
            if k not in out:
                out[k] = self.gen_string({}, f"{path}.{k}", k)
        return out

    def gen_array(self, s: dict[str, Any], path: str, name: str) -> list[Any]:
        prefix = s.get("prefixItems") or []
        lo = int(s.get("minItems", 0))
        hi = s.get("maxItems")
        n = 1 + self.h(path + "#n") % 2
        n = max(n, lo, len(prefix))
        if hi is not None:
            n = min(n, int(hi))
        items = s.get("items") if isinstance(s.get("items"), dict) else {}
        out: list[Any] = []
        for i in range(n):
            sub = prefix[i] if i < len(prefix) else items
            v = self.value(sub, f"{path}[{i}]", name)
            if s.get("uniqueItems") and v in out:
                enum = self.resolve(sub).get("enum")
                v = next((e for e in enum or [] if e not in out), v)
                if v in out and isinstance(v, str):
                    v = f"{v}-{i}"
                elif v in out and isinstance(v, (int, float)) and not isinstance(v, bool):
                    v = v + i
            out.append(v)
        return out

    def gen_string(self, s: dict[str, Any], path: str, name: str) -> str:
        if self.label is not None and is_label_name(name):
            text = self.label
        else:
            fmt = s.get("format")
            hv = self.h(path)
            if fmt == "date-time":
                text = f"2024-{1 + hv % 12:02d}-{1 + hv % 28:02d}T12:00:00Z"
            elif fmt == "date":
                text = f"2024-{1 + hv % 12:02d}-{1 + hv % 28:02d}"
            elif fmt == "time":
                text = f"{hv % 24:02d}:00:00"
            elif fmt == "email":
                text = f"{_WORDS[hv % len(_WORDS)]}@example.com"
            elif fmt in ("uri", "url"):
                text = f"https://example.com/{_WORDS[hv % len(_WORDS)]}"
            elif fmt == "uuid":
                text = str(uuid.UUID(bytes=hashlib.sha256(f"{self.seed}|{path}".encode()).digest()[:16]))
            else:
                words = [_WORDS[(hv >> (5 * i)) % len(_WORDS)] for i in range(2 + hv % 3)]
                text = " ".join(words)
        lo, hi = s.get("minLength"), s.get("maxLength")
        if lo is not None and len(text) < int(lo):
            text = text + "x" * (int(lo) - len(text))
        if hi is not None:
            text = text[: int(hi)]
        return text

    def _bounds(self, s: dict[str, Any]) -> tuple[float | None, float | None]:
        lo = s.get("minimum")
        hi = s.get("maximum")
        if s.get("exclusiveMinimum") is not None and not isinstance(s["exclusiveMinimum"], bool):
            lo = s["exclusiveMinimum"] + 1e-9 if lo is None else max(lo, s["exclusiveMinimum"] + 1e-9)
        if s.get("exclusiveMaximum") is not None and not isinstance(s["exclusiveMaximum"], bool):
            hi = s["exclusiveMaximum"] - 1e-9 if hi is None else min(hi, s["exclusiveMaximum"] - 1e-9)
        return lo, hi

    def gen_integer(self, s: dict[str, Any], path: str, name: str) -> int:
        lo, hi = self._bounds(s)
        ilo = math.ceil(lo) if lo is not None else None
        ihi = math.floor(hi) if hi is not None else None
        if ilo is not None and ihi is not None:
            return ilo + self.h(path) % (ihi - ilo + 1) if ihi >= ilo else ilo
        if ilo is not None:
            return ilo + self.h(path) % 10
        if ihi is not None:
            return ihi - self.h(path) % 10
        return 1 + self.h(path) % 100

    def gen_number(self, s: dict[str, Any], path: str, name: str) -> float:
        lo, hi = self._bounds(s)
        frac = (self.h(path) % 1000) / 1000
        if lo is not None and hi is not None:
            return round(lo + (hi - lo) * frac, 6) if hi > lo else lo
        if lo is not None:
            return round(lo + 10 * frac, 6)
        if hi is not None:
            return round(hi - 10 * frac, 6)
        return round(frac, 3)

    def gen_boolean(self, s: dict[str, Any], path: str, name: str) -> bool:
        return bool(self.h(path) & 1)

    def gen_null(self, s: dict[str, Any], path: str, name: str) -> None:
        return None


def is_label_name(name: str) -> bool:
    n = name.lower()
    return any(x in n for x in _LABEL_NAMES)


def schema_instance(schema: dict[str, Any], seed: str, label: str | None = None) -> Any:
    """A deterministic instance of `schema`; string/enum fields named like a label get `label`."""
    gen = _Gen(schema if isinstance(schema, dict) else {}, seed, label)
    return gen.value(gen.root, "$", "")


def violate(schema: dict[str, Any], instance: Any) -> Any:
    """A JSON value that does NOT validate against `schema` (derived from a valid instance)."""
    gen = _Gen(schema if isinstance(schema, dict) else {}, "", None)
    root = gen.resolve(gen.root)
    if isinstance(instance, dict):
        bad = copy.deepcopy(instance)
        required = root.get("required") or []
        if required and required[0] in bad:
            del bad[required[0]]
            return bad
        for k, sub in (root.get("properties") or {}).items():
            if "enum" in gen.resolve(sub) and k in bad:
                bad[k] = "__not_in_enum__"
                return bad
    if isinstance(instance, str):
        return 12345
    return "__not_the_requested_schema__"


_UNSUPPORTED_STRICT = ("allOf", "not", "dependentRequired", "dependentSchemas", "if", "then", "else")


def strict_error(schema: Any) -> str | None:
    """Why OpenAI would reject `schema` with strict: true (its documented rules), or None."""
    if not isinstance(schema, dict) or schema.get("type") != "object" or "anyOf" in schema:
        return "In context=(), the root of a strict schema must be an object and not use 'anyOf'."
    return _strict_walk(schema, ())


def _strict_walk(node: Any, ctx: tuple[str, ...]) -> str | None:
    if not isinstance(node, dict):
        return None
    where = f"In context={ctx!r}"
    for key in _UNSUPPORTED_STRICT:
        if key in node:
            return f"{where}, '{key}' is not permitted."
    props = node.get("properties")
    t = node.get("type")
    if t == "object" or (isinstance(t, list) and "object" in t) or isinstance(props, dict):
        if node.get("additionalProperties") is not False:
            return f"{where}, 'additionalProperties' is required to be supplied and to be false."
        props = props or {}
        missing = [k for k in props if k not in (node.get("required") or [])]
        if missing:
            return (
                f"{where}, 'required' is required to be supplied and to be an array including every key in "
                f"properties. Missing '{missing[0]}'."
            )
        for k, sub in props.items():
            err = _strict_walk(sub, (*ctx, "properties", k))
            if err:
                return err
    subs: list[tuple[tuple[str, ...], Any]] = []
    if isinstance(node.get("items"), dict):
        subs.append(((*ctx, "items"), node["items"]))
    for i, o in enumerate(node.get("anyOf") or []):
        subs.append(((*ctx, "anyOf", str(i)), o))
    for defs in ("$defs", "definitions"):
        for name, sub in (node.get(defs) or {}).items():
            subs.append(((*ctx, defs, name), sub))
    for c, sub in subs:
        err = _strict_walk(sub, c)
        if err:
            return err
    return None
