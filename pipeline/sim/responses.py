"""POST /v1/responses: the Responses API's request checks, answers and SSE events.

The answer is planned by the chat planner (`answers.plan_chat`) on the equivalent chat request, so a
prompt gets the same text, labels, schema instances and tool arguments from both APIs.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

from . import answers, params
from .faults import SimError
from .schema import strict_error
from .tokens import chat_prompt_tokens, encode

_NUM, _INT, _BOOL, _STR, _OBJ, _ARR, _ANY = "decimal", "integer", "boolean", "string", "object", "array", "any"
FIELDS: dict[str, tuple[str, float | None, float | None]] = {
    "model": (_STR, None, None),
    "input": (_ANY, None, None),
    "instructions": (_STR, None, None),
    "text": (_OBJ, None, None),
    "tools": (_ARR, None, None),
    "tool_choice": (_ANY, None, None),
    "parallel_tool_calls": (_BOOL, None, None),
    "max_output_tokens": (_INT, 16, None),
    "max_tool_calls": (_INT, 1, None),
    "temperature": (_NUM, 0, 2),
    "top_p": (_NUM, 0, 1),
    "top_logprobs": (_INT, 0, 20),
    "stream": (_BOOL, None, None),
    "stream_options": (_OBJ, None, None),
    "store": (_BOOL, None, None),
    "metadata": (_OBJ, None, None),
    "user": (_STR, None, None),
    "previous_response_id": (_STR, None, None),
    "reasoning": (_OBJ, None, None),
    "truncation": (_STR, None, None),
    "include": (_ARR, None, None),
    "background": (_BOOL, None, None),
    "service_tier": (_STR, None, None),
    "prompt_cache_key": (_STR, None, None),
    "safety_identifier": (_STR, None, None),
}
# Chat Completions parameters that moved: the Responses API names the new place in its 400
MOVED = {
    "response_format": "text.format",
    "max_tokens": "max_output_tokens",
    "max_completion_tokens": "max_output_tokens",
    "messages": "input",
}
_ROLES = ("user", "system", "developer", "assistant")
_PART_TYPES = (
    "input_text",
    "input_image",
    "output_text",
    "refusal",
    "input_file",
    "computer_screenshot",
    "summary_text",
)
_ITEM_TYPES = ("message", "function_call", "function_call_output")


def _listing(values: tuple[str, ...]) -> str:
    quoted = [f"'{v}'" for v in values]
    return ", ".join(quoted[:-1]) + f", and {quoted[-1]}"


def _invalid_value(value: Any, allowed: tuple[str, ...], param: str) -> SimError:
    return SimError(
        400, f"Invalid value: '{value}'. Supported values are: {_listing(allowed)}.", param=param, code="invalid_value"
    )


def _missing(param: str) -> SimError:
    return SimError(400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")


def check_fields(body: dict[str, Any]) -> None:
    """The Responses API's 400 for an unknown, moved, mistyped or out-of-range field."""
    for name in body:
        if name in MOVED:
            raise SimError(
                400,
                f"Unsupported parameter: '{name}'. In the Responses API, this parameter has moved "
                f"to '{MOVED[name]}'. Try again with the new parameter.",
                param=name,
                code="unsupported_parameter",
            )
        if name not in FIELDS:
            raise SimError(400, f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")
    params.check(body, FIELDS)


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The chat messages equivalent to `instructions` + `input` (function items become their text)."""
    msgs: list[dict[str, Any]] = []
    if isinstance(body.get("instructions"), str):
        msgs.append({"role": "system", "content": body["instructions"]})
    inp = body.get("input")
    if isinstance(inp, str):
        msgs.append({"role": "user", "content": inp})
        return msgs
    if inp is None:
        raise _missing("input")
    if not isinstance(inp, list) or not inp:
        raise SimError(
            400,
            "Invalid 'input': expected a string or a non-empty array of input items.",
            param="input",
            code="invalid_type",
        )
    for i, item in enumerate(inp):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise SimError(400, f"Invalid type for '{where}': expected an object.", param=where, code="invalid_type")
        kind = item.get("type", "message")
        if kind not in _ITEM_TYPES:
            raise _invalid_value(kind, _ITEM_TYPES, f"{where}.type")
        if kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                raise _missing(f"{where}.call_id")
            msgs.append({"role": "tool", "content": str(item.get("output", ""))})
            continue
        if kind == "function_call":
            msgs.append({"role": "assistant", "content": str(item.get("arguments", ""))})
            continue
        role = item.get("role")
        if role is None:
            raise _missing(f"{where}.role")
        if role not in _ROLES:
            raise _invalid_value(role, _ROLES, f"{where}.role")
        content = item.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                ptype = part.get("type") if isinstance(part, dict) else None
                if ptype not in _PART_TYPES:
                    raise _invalid_value(ptype, _PART_TYPES, f"{where}.content[{j}].type")
                if ptype in ("input_text", "output_text") and not isinstance(part.get("text"), str):
                    raise _missing(f"{where}.content[{j}].text")
        elif not isinstance(content, str):
            raise SimError(
                400,
                f"Invalid type for '{where}.content': expected one of a string or array of input "
                "content, but got " + ("null" if content is None else type(content).__name__) + " instead.",
                param=f"{where}.content",
                code="invalid_type",
            )
        msgs.append({"role": role, "content": content})
    return msgs


def _format(body: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The chat `response_format` equivalent to `text.format`, after the Responses API's checks."""
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise SimError(
            400, "Invalid type for 'text.format': expected an object.", param="text.format", code="invalid_type"
        )
    kind = fmt.get("type")
    if kind not in ("text", "json_object", "json_schema"):
        raise _invalid_value(kind, ("text", "json_object", "json_schema"), "text.format.type")
    if kind == "text":
        return None
    if kind == "json_object":
        said = json.dumps([m.get("content") for m in messages], ensure_ascii=False).lower()
        if "json" not in said:
            raise SimError(
                400,
                "Response input messages must contain the word 'json' in some form to use "
                "'text.format' of type 'json_object'.",
                param="input",
            )
        return {"type": "json_object"}
    if not fmt.get("name"):
        raise _missing("text.format.name")
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        raise _missing("text.format.schema")
    err = strict_error(schema) if fmt.get("strict") else None
    if err:
        raise SimError(
            400,
            f"Invalid schema for response_format '{fmt['name']}': {err}",
            param="text.format.schema",
            code="invalid_json_schema",
        )
    return {"type": "json_schema", "json_schema": {"name": fmt["name"], "schema": schema, "strict": fmt.get("strict")}}


def _tools(body: dict[str, Any]) -> tuple[list[dict[str, Any]] | None, Any]:
    """The chat `tools` and `tool_choice` equivalent to the Responses API's function tools."""
    tools = body.get("tools")
    if not tools:
        return None, None
    out = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise SimError(400, f"Invalid type for '{where}': expected an object.", param=where, code="invalid_type")
        if tool.get("type") != "function":
            raise _invalid_value(tool.get("type"), ("function",), f"{where}.type")
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise _missing(f"{where}.name")  # also the chat shape {"type": "function", "function": {...}}
        if tool.get("strict", True):  # the Responses API makes function tools strict by default
            err = strict_error(tool.get("parameters"))
            if err:
                raise SimError(
                    400,
                    f"Invalid schema for function '{tool['name']}': {err}",
                    param=f"{where}.parameters",
                    code="invalid_function_parameters",
                )
        out.append({"type": "function", "function": {"name": tool["name"], "parameters": tool.get("parameters")}})
    choice = body.get("tool_choice")
    names = [t.get("name") for t in tools]
    if isinstance(choice, dict):
        if choice.get("type") != "function":
            raise _invalid_value(choice.get("type"), ("function",), "tool_choice.type")
        if choice.get("name") not in names:
            raise SimError(
                400, f"Tool choice '{choice.get('name')}' not found in 'tools' parameter.", param="tool_choice"
            )
        return out, {"type": "function", "function": {"name": choice["name"]}}
    if choice is not None and choice not in ("none", "auto", "required"):
        raise _invalid_value(choice, ("none", "auto", "required"), "tool_choice")
    return out, choice


class Request:
    """A checked /v1/responses request and its chat equivalent (what the chat planner answers)."""

    def __init__(self, body: dict[str, Any]) -> None:
        check_fields(body)
        self.body = body
        self.model = body["model"]
        messages = _messages(body)
        chat: dict[str, Any] = {"messages": messages}
        rf = _format(body, messages)
        if rf is not None:
            chat["response_format"] = rf
        tools, choice = _tools(body)
        if tools:
            chat["tools"] = tools
            if choice is not None:
                chat["tool_choice"] = choice
        if body.get("max_output_tokens") is not None:
            chat["max_tokens"] = body["max_output_tokens"]
        self.chat = chat
        self.input_tokens = chat_prompt_tokens(messages, chat)
        self.max_output_tokens: int | None = body.get("max_output_tokens")
        self.stream = bool(body.get("stream"))

    def plan(self, fault: str | None = None, structured: bool = True, cached_share: float = 0.0) -> answers.Plan:
        plan = answers.plan_chat(self.chat, self.input_tokens, fault, structured=structured)
        plan.cached_tokens = int(self.input_tokens * cached_share)
        return plan


def _item_id(prefix: str, seq: int, i: int) -> str:
    return f"{prefix}_sim{hashlib.sha256(f'{seq}#{i}'.encode()).hexdigest()[:24]}"


def _output(plan: answers.Plan, seq: int) -> list[dict[str, Any]]:
    c = plan.choices[0]
    if c.tool_calls is not None:
        return [
            {
                "id": _item_id("fc", seq, k),
                "type": "function_call",
                "status": "completed",
                "call_id": call["id"],
                "name": call["function"]["name"],
                "arguments": call["function"]["arguments"],
            }
            for k, call in enumerate(c.tool_calls)
        ]
    status = "incomplete" if c.finish_reason == "length" else "completed"
    part: dict[str, Any]
    if c.refusal is not None:
        part = {"type": "refusal", "refusal": c.refusal}
    else:
        part = {"type": "output_text", "text": c.content or "", "annotations": [], "logprobs": []}
    return [
        {"id": _item_id("msg", seq, 0), "type": "message", "status": status, "role": "assistant", "content": [part]}
    ]


def response_object(req: Request, plan: answers.Plan, seq: int, *, done: bool = True) -> dict[str, Any]:
    """The Response object (`done=False`: as `response.created` shows it, in progress and empty)."""
    body = req.body
    incomplete = plan.choices[0].finish_reason == "length"
    text_format = (body.get("text") or {}).get("format") or {"type": "text"}
    tools = [{"type": "function", "description": None, "strict": True, **t} for t in body.get("tools") or []]
    usage = {
        "input_tokens": plan.prompt_tokens,
        "input_tokens_details": {"cached_tokens": plan.cached_tokens},
        "output_tokens": plan.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": plan.prompt_tokens + plan.completion_tokens,
    }
    return {
        "id": f"resp_sim{hashlib.sha256(str(seq).encode()).hexdigest()[:24]}",
        "object": "response",
        "created_at": int(time.time()),
        "status": ("incomplete" if incomplete else "completed") if done else "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if done and incomplete else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": req.model,
        "output": _output(plan, seq) if done else [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": {"format": text_format},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": tools,
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": usage if done else None,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


def events(
    req: Request, plan: answers.Plan, seq: int, *, truncated: bool = False
) -> Iterator[tuple[dict[str, Any], int]]:
    """The SSE events of a streamed answer, each with its number of output tokens (for pacing).

    `truncated`: the stream stops after a few deltas (no `.done` events, no `response.completed`)."""
    n = 0

    def ev(kind: str, **fields: Any) -> dict[str, Any]:
        nonlocal n
        n += 1
        return {"type": kind, "sequence_number": n - 1, **fields}

    final = response_object(req, plan, seq)
    yield ev("response.created", response=response_object(req, plan, seq, done=False)), 0
    yield ev("response.in_progress", response=response_object(req, plan, seq, done=False)), 0
    for idx, item in enumerate(final["output"]):
        if item["type"] == "function_call":
            yield (
                ev(
                    "response.output_item.added",
                    output_index=idx,
                    item={**item, "arguments": "", "status": "in_progress"},
                ),
                0,
            )
            for k, (text, group) in enumerate(answers.pieces(encode(item["arguments"]))):
                if truncated and k >= 2:
                    return
                yield (
                    ev("response.function_call_arguments.delta", item_id=item["id"], output_index=idx, delta=text),
                    len(group),
                )
            yield (
                ev(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=idx,
                    arguments=item["arguments"],
                ),
                0,
            )
            yield ev("response.output_item.done", output_index=idx, item=item), 0
            continue
        part = item["content"][0]
        yield (
            ev("response.output_item.added", output_index=idx, item={**item, "status": "in_progress", "content": []}),
            0,
        )
        empty = {**part, "text": ""} if part["type"] == "output_text" else {**part, "refusal": ""}
        yield ev("response.content_part.added", item_id=item["id"], output_index=idx, content_index=0, part=empty), 0
        key = "text" if part["type"] == "output_text" else "refusal"
        delta_kind = "response.output_text.delta" if key == "text" else "response.refusal.delta"
        for k, (text, group) in enumerate(answers.pieces(encode(part[key]))):
            if truncated and k >= 2:
                return
            extra: dict[str, Any] = {"logprobs": []} if key == "text" else {}
            yield ev(delta_kind, item_id=item["id"], output_index=idx, content_index=0, delta=text, **extra), len(group)
        done_kind = "response.output_text.done" if key == "text" else "response.refusal.done"
        yield ev(done_kind, item_id=item["id"], output_index=idx, content_index=0, **{key: part[key]}), 0
        yield ev("response.content_part.done", item_id=item["id"], output_index=idx, content_index=0, part=part), 0
        yield ev("response.output_item.done", output_index=idx, item=item), 0
    last = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
    yield ev(last, response=final), 0
