"""What a chat step keeps of each answer: its text, or JSON checked against a schema (response_schema,
labels, or the arguments of a tool call), placed in typed columns, or a verdict saying why not."""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ..cache import canonical_json
from ..errors import JobError, TransientError
from ..job.model import STRUCTURED_FORMS, ChatStep, StructuredVia, ToolChoice
from ..structured import Checker, StrictIssue, label_schema, load_schema, strict_issues
from ..structured.arrow import Col, field_types

Message = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Verdict:
    """One choice of an answer, judged."""

    values: dict[str, Any] | None  # column -> value when the answer is usable
    raw: str | None  # the answer as given: the text, or the called function's arguments
    reason: str | None = None  # why it is not usable (the row's error)
    followup: tuple[Message, ...] = ()  # appended to the conversation to re-ask; empty: re-asking cannot help
    finish_reason: str | None = None
    label: str | None = None  # the label as the model wrote it (for its probability)

    @property
    def ok(self) -> bool:
        return self.values is not None


def _no_content(message: Message, finish: str | None, raw: str | None = None) -> Verdict:
    """A message without the expected content: refused, filtered, or broken (then retried)."""
    if message.get("refusal"):
        refusal = str(message["refusal"])
        return Verdict(None, refusal, f"the model refused: {refusal}", finish_reason=finish)
    if finish == "content_filter":
        return Verdict(None, raw, "the answer was withheld by the provider's content filter", finish_reason=finish)
    raise TransientError(f"answer has no content (finish_reason={finish!r})")


class Shape(ABC):
    """How one step turns a message into column values."""

    structured = False

    @abstractmethod
    def columns(self) -> list[tuple[str, pa.DataType]]:
        """The columns one choice fills (the step adds lists for n > 1 and its accounting columns)."""

    # the forms this shape can be sent in (response_schema and labels: all of them)
    forms: tuple[StructuredVia, ...] = ()

    def request_fields(self, form: StructuredVia = "json_schema") -> dict[str, Any]:
        """What the step adds to every request body (response_format, tools, tool_choice)."""
        return {}

    def form_messages(self, messages: list[Message], form: StructuredVia) -> list[Message]:
        """The messages as sent in `form` (unchanged unless the form carries the schema in the prompt)."""
        return messages

    @abstractmethod
    def judge(self, message: Message, finish: str | None) -> Verdict:
        """The verdict on one choice's message; raises TransientError when the answer is broken."""

    def notes(self) -> list[str]:
        return []

    def identity(self) -> str:
        """What the job file does not show but decides the output (the content of schema files)."""
        return ""


class TextShape(Shape):
    """The plain chat step: the answer's text in the output column."""

    def __init__(self, output: str) -> None:
        self.output = output

    def columns(self) -> list[tuple[str, pa.DataType]]:
        return [(self.output, pa.string())]

    def judge(self, message: Message, finish: str | None) -> Verdict:
        content = message.get("content")
        if isinstance(content, str):
            return Verdict({self.output: content}, content, finish_reason=finish)
        if message.get("tool_calls"):
            return Verdict(None, None, "the model answered with a tool call, not text", finish_reason=finish)
        return _no_content(message, finish)


class _Placement:
    """Where the top-level fields of an answer go: `<output>_<field>` columns, or one struct column."""

    def __init__(self, output: str, fields: list[tuple[str, Col]], layout: str, single: bool) -> None:
        self.output = output
        self.fields = fields
        self.layout = "single" if single else layout

    def column(self, name: str) -> str:
        return f"{self.output}_{name}"

    def columns(self) -> list[tuple[str, pa.DataType]]:
        if self.layout == "single":
            return [(self.output, self.fields[0][1].type)]
        if self.layout == "struct":
            return [(self.output, Col("struct", fields=tuple(self.fields)).type)]
        return [(self.column(name), col.type) for name, col in self.fields]

    def place(self, values: dict[str, Any]) -> dict[str, Any]:
        if self.layout == "single":
            return {self.output: values.get(self.fields[0][0])}
        if self.layout == "struct":
            return {self.output: {name: values.get(name) for name, _ in self.fields}}
        return {self.column(name): values.get(name) for name, _ in self.fields}


def _fields(schema: dict[str, Any], where: str) -> list[tuple[str, Col]]:
    fields = field_types(schema)
    if fields is None:
        raise JobError(
            f"{where}: the schema must describe a JSON object with `properties` (its fields become the columns)"
        )
    return fields


def _decide_strict(wanted: bool | None, issues: list[StrictIssue], where: str) -> bool:
    if wanted and issues:
        raise JobError(
            f"{where}: strict: true, but strict mode cannot take this schema:\n" + "\n".join(f"  - {i}" for i in issues)
        )
    return (not issues) if wanted is None else wanted


def _strict_note(where: str, issues: list[StrictIssue]) -> str:
    return (
        f"{where}: sent with strict: false because OpenAI strict mode cannot take the schema (answers are "
        "still checked on our side). To send it strict, change:\n" + "\n".join(f"  - {i}" for i in issues)
    )


class SchemaShape(Shape):
    """`response_schema` or `labels`: JSON answers, checked and typed. Asked for as response_format
    json_schema, or in another form when the server refuses it (`request_fields`, `form_messages`)."""

    structured = True
    forms = STRUCTURED_FORMS

    def __init__(self, spec: ChatStep) -> None:
        where = f"step `{spec.name}`, response_schema"
        self.labels = spec.labels
        if spec.labels is not None:
            schema = label_schema(spec.labels)
            where = f"step `{spec.name}`, labels"
        else:
            assert spec.response_schema is not None
            schema = load_schema(spec.response_schema, where)
        self.schema = schema
        fields = _fields(schema, where)
        self.checker = Checker(schema, fields, spec.labels)
        self.place = _Placement(spec.output_column, fields, spec.output_layout, single=spec.labels is not None)
        self.issues = strict_issues(schema)
        self.strict = _decide_strict(spec.strict, self.issues, where)
        self._where = where
        self._name = re.sub(r"[^A-Za-z0-9_-]", "_", str(schema.get("title") or spec.name))[:64]
        if spec.labels is not None:
            self.instruction = (
                f'Reply with only {{"label": "<label>"}}, where <label> is exactly one of: {", ".join(spec.labels)}.'
            )
        else:
            self.instruction = "Reply with only the corrected JSON object, with no other text."

    def columns(self) -> list[tuple[str, pa.DataType]]:
        return self.place.columns()

    def request_fields(self, form: StructuredVia = "json_schema") -> dict[str, Any]:
        """What a request in `form` adds to the body (the prompt form adds nothing: see `form_messages`)."""
        if form == "json_schema":
            return {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": self._name, "schema": self.schema, "strict": self.strict},
                }
            }
        if form == "json_object":  # llama.cpp and others constrain the answer with `schema`
            return {"response_format": {"type": "json_object", "schema": self.schema}}
        if form == "tools":
            fn = {"name": self._name, "description": "Give the answer.", "parameters": self.schema}
            return {
                "tools": [{"type": "function", "function": fn}],
                "tool_choice": {"type": "function", "function": {"name": self._name}},
            }
        return {}

    def form_messages(self, messages: list[Message], form: StructuredVia) -> list[Message]:
        """The messages as sent in `form`: json_object and prompt forms tell the schema in a system
        message (json_object needs the word JSON in the messages on OpenAI-like servers)."""
        if form not in ("json_object", "prompt"):
            return messages
        if self.labels is not None:
            text = self.instruction
        else:
            text = (
                "Reply with only a JSON object, with no other text, that matches this JSON Schema:\n"
                + canonical_json(self.schema).decode()
            )
        if messages and messages[0].get("role") == "system" and isinstance(messages[0].get("content"), str):
            return [{**messages[0], "content": f"{messages[0]['content']}\n\n{text}"}, *messages[1:]]
        return [{"role": "system", "content": text}, *messages]

    def notes(self) -> list[str]:
        return [_strict_note(self._where, self.issues)] if self.issues and not self.strict else []

    def identity(self) -> str:
        return canonical_json(self.schema).decode()

    def judge(self, message: Message, finish: str | None) -> Verdict:
        content = message.get("content")
        if message.get("tool_calls") and not (isinstance(content, str) and content.strip()):
            return self._judge_call(message, finish)
        if not isinstance(content, str):
            v = _no_content(message, finish)
            if v.reason and message.get("refusal"):
                ask = "Please answer the request above. " + self.instruction.replace("corrected ", "")
                return Verdict(
                    None,
                    v.raw,
                    v.reason,
                    ({"role": "assistant", "content": v.raw}, {"role": "user", "content": ask}),
                    finish,
                )
            return v
        j = self.checker.judge_text(content)
        if j.ok:
            return Verdict(self.place.place(j.values or {}), content, finish_reason=finish, label=j.label)
        reason, feedback = j.reason, j.feedback
        if finish == "length":
            reason = f"cut off at the token limit (finish_reason: length): {reason}"
            feedback = (
                "Your answer was cut off at the token limit before it was complete. "
                "Answer again, more briefly, so that the whole answer fits."
            )
        follow = (
            {"role": "assistant", "content": content},
            {"role": "user", "content": f"{feedback}\n{self.instruction}"},
        )
        return Verdict(None, content, reason, follow, finish)

    def _judge_call(self, message: Message, finish: str | None) -> Verdict:
        """An answer given as a function call (the `tools` form): its arguments are the answer."""
        call = _Call(message)
        if call.name != self._name:
            return Verdict(
                None,
                call.raw,
                f"the model called an unknown function {call.name!r}",
                (call.echo, call.reply(f"Error: there is no function {call.name!r}. Call `{self._name}`.")),
                finish,
            )
        j = self.checker.judge_text(call.raw) if call.text else self.checker.judge_value(call.args)
        if j.ok:
            return Verdict(self.place.place(j.values or {}), call.raw, finish_reason=finish, label=j.label)
        reason, feedback = j.reason, j.feedback
        if finish == "length":
            reason = f"cut off at the token limit (finish_reason: length): {reason}"
            feedback = "The arguments were cut off at the token limit. Make them shorter."
        return Verdict(
            None,
            call.raw,
            reason,
            (call.echo, call.reply(f"Error: {feedback}\nCall `{self._name}` again with corrected arguments.")),
            finish,
        )


class _Call:
    """The first function call of a message: its name, arguments, the echo of it for a re-ask, and the
    tool message answering it."""

    def __init__(self, message: Message) -> None:
        calls = message.get("tool_calls") or [{}]
        call = calls[0] if isinstance(calls[0], dict) else {}
        fn = call.get("function") or {}
        self.id = call.get("id") or "call_0"
        self.name = fn.get("name")
        self.args = fn.get("arguments")
        self.text = isinstance(self.args, str)
        self.raw = self.args if isinstance(self.args, str) else json.dumps(self.args, ensure_ascii=False)
        self.echo: Message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.raw}}],
        }

    def reply(self, text: str) -> Message:
        return {"role": "tool", "tool_call_id": self.id, "content": text}


class ToolShape(Shape):
    """`tools`: the model calls a function; the arguments are checked against its parameters schema."""

    structured = True

    def __init__(self, spec: ChatStep) -> None:
        assert spec.tools is not None
        self.step = spec.name
        self.checkers: dict[str, Checker] = {}
        self.schemas: dict[str, dict[str, Any]] = {}
        self.tools: list[dict[str, Any]] = []
        self._notes: list[str] = []
        merged: dict[str, Col] = {}
        owner: dict[str, str] = {}
        for tool in spec.tools:
            fn = tool.function
            where = f"step `{spec.name}`, tools[{fn.name}].parameters"
            schema = load_schema(fn.parameters, where)
            fields = _fields(schema, where)
            for name, col in fields:
                if name in merged and merged[name] != col:
                    raise JobError(
                        f"step `{spec.name}`: field `{name}` of tools {owner[name]} and {fn.name} has "
                        f"different types ({merged[name].type} vs {col.type}); they share one column"
                    )
                merged.setdefault(name, col)
                owner.setdefault(name, fn.name)
            issues = strict_issues(schema)
            strict = _decide_strict(fn.strict if fn.strict is not None else spec.strict, issues, where)
            if issues and not strict:
                self._notes.append(_strict_note(where, issues))
            self.checkers[fn.name] = Checker(schema, fields)
            self.schemas[fn.name] = schema
            body: dict[str, Any] = {"name": fn.name, "parameters": schema}
            if fn.description:
                body["description"] = fn.description
            if strict:
                body["strict"] = True
            self.tools.append({"type": "function", "function": body})
        self.place = _Placement(spec.output_column, list(merged.items()), spec.output_layout, single=False)
        self.tool_column = f"{spec.name}__tool" if len(spec.tools) > 1 else None
        names = list(self.checkers)
        choice = spec.tool_choice
        if isinstance(choice, ToolChoice):
            self.choice: Any = {"type": "function", "function": {"name": choice.function.name}}
        elif choice is not None:
            self.choice = choice
        else:
            self.choice = {"type": "function", "function": {"name": names[0]}} if len(names) == 1 else "required"
        self.call_hint = (
            f"the function `{names[0]}`"
            if len(names) == 1
            else f"one of the functions {', '.join(f'`{n}`' for n in names)}"
        )

    def columns(self) -> list[tuple[str, pa.DataType]]:
        cols = self.place.columns()
        if self.tool_column:
            cols.append((self.tool_column, pa.string()))
        return cols

    def request_fields(self, form: StructuredVia = "json_schema") -> dict[str, Any]:
        return {"tools": self.tools, "tool_choice": self.choice}

    def notes(self) -> list[str]:
        return list(self._notes)

    def identity(self) -> str:
        return canonical_json(self.schemas).decode()

    def judge(self, message: Message, finish: str | None) -> Verdict:
        calls = message.get("tool_calls")
        if not calls:
            content = message.get("content")
            if isinstance(content, str):
                return Verdict(
                    None,
                    content,
                    "the model answered in text instead of calling a function",
                    (
                        {"role": "assistant", "content": content},
                        {"role": "user", "content": f"Do not answer in text: call {self.call_hint}."},
                    ),
                    finish,
                )
            v = _no_content(message, finish)
            if v.reason and message.get("refusal"):
                return Verdict(
                    None,
                    v.raw,
                    v.reason,
                    (
                        {"role": "assistant", "content": v.raw},
                        {"role": "user", "content": f"Please call {self.call_hint}."},
                    ),
                    finish,
                )
            return v
        call = _Call(message)
        name, args, raw, echo, reply = call.name, call.args, call.raw, call.echo, call.reply
        checker = self.checkers.get(str(name))
        if checker is None:
            return Verdict(
                None,
                raw,
                f"the model called an unknown function {name!r}",
                (echo, reply(f"Error: there is no function {name!r}. Call {self.call_hint}.")),
                finish,
            )
        j = checker.judge_text(raw) if isinstance(args, str) else checker.judge_value(args)
        if j.ok:
            values = self.place.place(j.values or {})
            if self.tool_column:
                values[self.tool_column] = name
            return Verdict(values, raw, finish_reason=finish)
        reason, feedback = j.reason, j.feedback
        if finish == "length":
            reason = f"cut off at the token limit (finish_reason: length): {reason}"
            feedback = "The arguments were cut off at the token limit. Make them shorter."
        return Verdict(
            None,
            raw,
            f"arguments of `{name}`: {reason}",
            (echo, reply(f"Error: {feedback}\nCall `{name}` again with corrected arguments.")),
            finish,
        )


def build_shape(spec: ChatStep) -> Shape:
    """The shape of a chat step's answers (raises JobError on a bad schema)."""
    if spec.tools is not None:
        return ToolShape(spec)
    if spec.response_schema is not None or spec.labels is not None:
        return SchemaShape(spec)
    return TextShape(spec.output_column)
