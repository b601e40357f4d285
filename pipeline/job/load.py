"""Read a job file: YAML with line numbers, validation errors that name the key, the line and a fix."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import JobError, mask_secrets
from .model import STEP_KINDS, JobFile, job_json_schema


@dataclass(frozen=True)
class LoadedJob:
    """A validated job file and where it came from."""

    path: Path
    spec: JobFile
    raw: dict[str, Any]


def _line_index(node: yaml.Node | None, prefix: tuple[Any, ...], out: dict[tuple[Any, ...], int]) -> None:
    if node is None:
        return
    out.setdefault(prefix, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else str(k)
            out[(*prefix, key)] = k.start_mark.line + 1
            _line_index(v, (*prefix, key), out)
            # keep the key's own line for "unknown key" errors
            out[(*prefix, key)] = k.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _line_index(v, (*prefix, i), out)


def _schema_at(schema: dict[str, Any], root: dict[str, Any], loc: tuple[Any, ...]) -> dict[str, Any] | None:
    """The JSON-schema node for a pydantic error location (tagged-union tags included in `loc`)."""
    defs = root.get("$defs", {})

    def deref(s: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in s:
            s = defs[s["$ref"].rsplit("/", 1)[-1]]
        return s

    node = deref(schema)
    for part in loc:
        node = deref(node)
        if "anyOf" in node:
            options = [deref(o) for o in node["anyOf"] if deref(o).get("type") != "null"]
            if len(options) == 1:
                node = options[0]
        if "oneOf" in node and isinstance(part, str) and "discriminator" in node:
            target = node["discriminator"].get("mapping", {}).get(part)
            if target:
                node = deref({"$ref": target})
                continue
        if isinstance(part, int):
            node = node.get("items", {})
        elif "properties" in node and part in node["properties"]:
            node = node["properties"][part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return None
    node = deref(node)
    if "anyOf" in node:
        options = [deref(o) for o in node["anyOf"] if deref(o).get("type") != "null"]
        if len(options) == 1:
            node = options[0]
    return node


def _where(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _format_errors(exc: ValidationError, path: Path, lines: dict[tuple[Any, ...], int]) -> str:
    schema = job_json_schema()
    msgs = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        # pydantic puts the union tag ("chat") into loc; it is not a key of the file
        file_loc = tuple(
            p
            for p in loc
            if not (
                isinstance(p, str) and p in STEP_KINDS and loc.index(p) > 0 and isinstance(loc[loc.index(p) - 1], int)
            )
        )
        line = None
        for n in range(len(file_loc), -1, -1):
            if file_loc[:n] in lines:
                line = lines[file_loc[:n]]
                break
        where = f"{path}:{line}" if line else str(path)
        if err["type"] == "extra_forbidden":
            key = str(loc[-1])
            parent = _schema_at(schema, schema, loc[:-1]) or {}
            allowed = sorted(parent.get("properties", {}))
            hint = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            text = f"unknown key `{key}` in {_where(file_loc[:-1])}"
            if hint:
                text += f"; did you mean `{hint[0]}`?"
            if allowed:
                text += f" (allowed: {', '.join(allowed)})"
        elif err["type"] == "missing":
            text = f"missing required key `{_where(file_loc)}`"
        elif err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            text = f"{_where(file_loc)}: {err['msg']}"
        else:
            value = err.get("input")
            shown = repr(value) if not isinstance(value, dict | list) else type(value).__name__
            msg = err["msg"].removeprefix("Value error, ")
            # our own validators quote the offending value themselves; pydantic's do not
            text = f"{_where(file_loc)}: {msg}" if ", got " in msg else f"{_where(file_loc)}: {msg} (got {shown[:80]})"
        msgs.append(f"{where}: {text}")
    return mask_secrets("\n".join(msgs))


def load_job(path: str | Path) -> LoadedJob:
    """Parse and validate a job file; raise JobError with every problem, file and line named."""
    p = Path(path)
    if not p.exists():
        raise JobError(f"job file not found: {p}")
    if p.is_dir():
        raise JobError(f"{p} is a folder, not a job file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise JobError(f"cannot read job file {p}: {exc}") from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        snippet = ""
        if mark is not None:
            src = text.splitlines()
            if 0 <= mark.line < len(src):
                snippet = f"\n    {src[mark.line]}\n    {' ' * mark.column}^"
        raise JobError(mask_secrets(f"{p}{line}: YAML syntax error: {exc.problem or exc}{snippet}")) from exc
    except yaml.YAMLError as exc:
        raise JobError(f"{p}: YAML error: {exc}") from exc
    if not isinstance(raw, dict):
        raise JobError(
            f"{p}: a job file is a YAML mapping (version, name, input, steps, output), got {type(raw).__name__}"
        )
    if raw.get("version") not in (None, 1):
        raise JobError(f"{p}: job file version {raw.get('version')!r} is not supported; this pipeline reads version 1")
    lines: dict[tuple[Any, ...], int] = {}
    _line_index(node, (), lines)
    if "name" not in raw:
        raw = {**raw, "name": p.stem}  # the job file's name, as most jobs omit it
    try:
        spec = JobFile.model_validate(raw)
    except ValidationError as exc:
        raise JobError(_format_errors(exc, p, lines)) from exc
    return LoadedJob(path=p, spec=spec, raw=raw)
