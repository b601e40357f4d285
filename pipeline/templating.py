"""Sandboxed Jinja2 templates over a row: compile once, list the columns they use, render strictly."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import JobError


class NullValue(ValueError):
    """A template used a column whose value is null in this row."""


class RenderError(ValueError):
    """A template failed on this row's values (e.g. a filter raised)."""


class RowView:
    """`row` inside templates: columns as attributes and items, even ones named like dict methods."""

    __slots__ = ("_d",)

    def __init__(self, d: Mapping[str, Any]) -> None:
        self._d = d

    def __getattr__(self, name: str) -> Any:
        try:
            return self._d[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name: str) -> Any:
        return self._d[name]

    def __contains__(self, name: object) -> bool:
        return name in self._d


def _finalize(value: Any) -> Any:
    if value is None:
        raise NullValue("a value used by the template is null")
    return value


_ENV = ImmutableSandboxedEnvironment(
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    keep_trailing_newline=True,
    finalize=_finalize,
)
_ENV.filters["tojson_text"] = lambda v: __import__("json").dumps(v, ensure_ascii=False)


@dataclass(frozen=True)
class Template:
    """A compiled template and the row columns it reads."""

    source: str
    where: str
    columns: frozenset[str]
    static: bool
    _compiled: jinja2.Template
    # For templates that are only text and `{{ row.col }}`: (text, column or None) pieces, rendered
    # without Jinja's per-call context set-up (most templates; 5x faster on cached re-runs).
    _pieces: tuple[tuple[str, str | None], ...] | None = None

    def render(self, row: Mapping[str, Any]) -> str:
        """Render against one row; NullValue when a used column is null, RenderError otherwise."""
        if self.static:
            return self.source
        if self._pieces is not None:
            return self._render_pieces(row)
        try:
            return self._compiled.render(row=RowView(row))
        except NullValue:
            nulls = sorted(c for c in self.columns if row.get(c) is None)
            raise NullValue(f"column {', '.join(f'`{c}`' for c in nulls) or '?'} is null") from None
        except jinja2.UndefinedError as exc:
            raise RenderError(f"{self.where}: {exc.message}") from exc
        except Exception as exc:  # a filter or a sandbox check failed on this row's value
            raise RenderError(f"{self.where}: {type(exc).__name__}: {exc}") from exc

    def _render_pieces(self, row: Mapping[str, Any]) -> str:
        out = []
        for text, column in self._pieces or ():
            if column is None:
                out.append(text)
                continue
            try:
                value = row[column]
            except KeyError:
                raise RenderError(f"{self.where}: 'row' has no column {column!r}") from None
            if value is None:
                raise NullValue(f"column `{column}` is null")
            out.append(value if isinstance(value, str) else str(value))
        return "".join(out)


def _simple_pieces(ast: nodes.Template) -> tuple[tuple[str, str | None], ...] | None:
    """The pieces of a template made only of text and `{{ row.col }}` / `{{ row['col'] }}`, else None."""
    pieces: list[tuple[str, str | None]] = []
    for stmt in ast.body:
        if not isinstance(stmt, nodes.Output):
            return None
        for node in stmt.nodes:
            if isinstance(node, nodes.TemplateData):
                pieces.append((node.data, None))
            elif isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name) and node.node.name == "row":
                pieces.append(("", node.attr))
            elif (
                isinstance(node, nodes.Getitem)
                and isinstance(node.node, nodes.Name)
                and node.node.name == "row"
                and isinstance(node.arg, nodes.Const)
                and isinstance(node.arg.value, str)
            ):
                pieces.append(("", node.arg.value))
            else:
                return None
    return tuple(pieces)


def _scan(ast: nodes.Template, where: str) -> tuple[set[str], set[str]]:
    """(columns read through `row`, other free names) of a parsed template."""
    columns: set[str] = set()
    dynamic = False
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        assert isinstance(node, nodes.Getattr | nodes.Getitem)
        if isinstance(node.node, nodes.Name) and node.node.name == "row":
            if isinstance(node, nodes.Getattr):
                columns.add(node.attr)
            elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                columns.add(node.arg.value)
            else:
                dynamic = True
    assigned = {n.name for n in ast.find_all(nodes.Name) if n.ctx in ("store", "param")}
    free = {n.name for n in ast.find_all(nodes.Name) if n.ctx == "load"} - assigned - {"row"}
    free -= set(_ENV.globals)
    if dynamic:
        free.add("row[<expression>]")
    return columns, free


def compile_template(source: str, where: str) -> Template:
    """Compile `source`; `where` names it in errors (e.g. "step `label`, messages[1].content")."""
    try:
        ast = _ENV.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise JobError(f"{where}: template syntax error on line {exc.lineno}: {exc.message}") from exc
    columns, free = _scan(ast, where)
    if free:
        raise JobError(
            f"{where}: unknown name(s) {', '.join(sorted(free))} in template; "
            "templates see only `row`, e.g. {{ row.text }}"
        )
    static = "{" not in source
    return Template(source, where, frozenset(columns), static, _ENV.from_string(source), _simple_pieces(ast))


def check_columns(templates: Iterable[tuple[Template, str]], available: Iterable[str]) -> list[str]:
    """Every (template, context) that reads a column not in `available`, as messages."""
    have = list(available)
    have_set = set(have)
    problems = []
    for tpl, context in templates:
        for col in sorted(tpl.columns - have_set):
            import difflib

            hint = difflib.get_close_matches(col, have, n=1)
            msg = f"unknown column `{col}` in {tpl.where}"
            if hint:
                msg += f" (did you mean `{hint[0]}`?)"
            msg += f"; {context}: {', '.join(have) or '(none)'}"
            problems.append(msg)
    return problems
