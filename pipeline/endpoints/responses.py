"""`api: responses` on a chat step: the same dialogue as chat (messages, schema or labels, tools, re-asks,
columns), sent to the Responses API (/responses) and its answers read back as chat messages.

System messages stay input items with role `system`, where the templates put them, rather than becoming
`instructions`: the conversation is sent as written (any number of system messages, in any position, and
re-asks append to it unchanged), and `instructions` would add nothing the items do not carry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from ..cache import canonical_json, request_key
from ..errors import RequestError, TransientError
from ..job.model import ChatStep, StructuredVia
from ..records import StepResult, Usage
from ..requests import HttpRequest
from ..tokens import Counter, chat_prompt_tokens
from .base import Prepared, cached_tokens, load_json
from .chat import ChatAnswer, ChatRuntime, _Ask
from .chat_shape import Verdict
from .negotiate import FormChoice
from .sse import ResponsesStream

ENDPOINT = "/responses"
# chat parameter names and where the Responses API takes them
_RENAMED = {"max_tokens": "max_output_tokens", "max_completion_tokens": "max_output_tokens"}
_NESTED = {"reasoning_effort": ("reasoning", "effort"), "verbosity": ("text", "verbosity")}
# why a Response stopped short, as chat's finish_reason
_INCOMPLETE = {"max_output_tokens": "length", "content_filter": "content_filter"}


def input_items(messages: list[dict[str, Any]] | tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    """Chat messages as Responses input items (tool calls and their answers as function items)."""
    items: list[dict[str, Any]] = []
    for m in messages:
        role = m.get("role")
        if role == "tool":
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": m.get("tool_call_id") or "call_0",
                    "output": str(m.get("content") or ""),
                }
            )
            continue
        content = m.get("content")
        if isinstance(content, str) and content:
            items.append({"role": role, "content": content})
        for call in m.get("tool_calls") or []:
            fn = call.get("function") or {}
            items.append(
                {
                    "type": "function_call",
                    "call_id": call.get("id") or "call_0",
                    "name": fn.get("name"),
                    "arguments": fn.get("arguments") or "",
                }
            )
    return items


def request_extras(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The chat body's response_format / tools / tool_choice in the Responses API's shape."""
    out: dict[str, Any] = {}
    rf = fields.get("response_format")
    if isinstance(rf, dict) and rf.get("type") == "json_schema":
        js = rf["json_schema"]
        out["text"] = {"format": {"type": "json_schema", **js}}
    if fields.get("tools"):
        out["tools"] = [{"type": "function", **t["function"]} for t in fields["tools"]]
    choice = fields.get("tool_choice")
    if isinstance(choice, dict):
        out["tool_choice"] = {"type": "function", "name": choice["function"]["name"]}
    elif choice is not None:
        out["tool_choice"] = choice
    return out


def request_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The step's params under the Responses API's names."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key in _NESTED:
            outer, inner = _NESTED[key]
            out.setdefault(outer, {})[inner] = value
        else:
            out[_RENAMED.get(key, key)] = value
    return out


def as_chat(obj: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """A Response's output as a chat message, and its status as chat's finish_reason."""
    output = obj.get("output")
    if not isinstance(output, list):
        raise TransientError(f"answer has no output: {str(obj)[:200]!r}")
    texts: list[str] = []
    refusal: str | None = None
    calls: list[dict[str, Any]] = []
    for item in output:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "function_call":
            calls.append(
                {
                    "id": item.get("call_id") or "call_0",
                    "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments")},
                }
            )
        elif item.get("type") == "message":
            for part in item.get("content") or []:
                if isinstance(part, dict) and part.get("type") == "output_text":
                    texts.append(str(part.get("text") or ""))
                elif isinstance(part, dict) and part.get("type") == "refusal":
                    refusal = str(part.get("refusal") or "")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if refusal is not None:
        message["refusal"] = refusal
    if calls:
        message["tool_calls"] = calls
    status = obj.get("status")
    finish: str | None
    if status == "incomplete":
        details = obj.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        finish = _INCOMPLETE.get(str(reason), "length")
    elif calls:
        finish = "tool_calls"
    elif status == "completed":
        finish = "stop"
    else:
        raise TransientError(f"the Response is {status!r}, not completed: {str(obj)[:200]!r}")
    return message, finish


class ResponsesRuntime(ChatRuntime):
    """A chat step with `api: responses`: chat's dialogue, the Responses API's wire shape. Structured
    output goes as text.format json_schema only (no negotiation of other forms); `stream` sends the request
    streamed and assembles its events into the Response (cached as the unstreamed body)."""

    def __init__(self, spec: ChatStep, cache_ns: str, count: Counter) -> None:
        super().__init__(spec, cache_ns, count, "json_schema")
        self._pinned = "json_schema" if self.shape.forms else None
        self._wire_params = request_params(self._params)

    def _choice(self) -> FormChoice | None:
        return None

    def _streaming(self) -> bool:
        return self._stream

    def _ask(self, messages: list[dict[str, Any]] | tuple[dict[str, Any], ...], n: int, count: bool = True) -> _Ask:
        # (always counted: drafts are chat's)
        form: StructuredVia | None = self._start
        extra, extra_tokens = self._extra(form)
        body: dict[str, Any] = {
            "model": self.spec.model,
            "input": input_items(messages),
            **self._wire_params,
            **request_extras(extra),
        }
        # the cache key leaves streaming out: a streamed answer is stored as the Response it assembles to
        key = request_key(self.cache_ns, ENDPOINT, canonical_json(body))
        if self._stream:
            body["stream"] = True
        prompt = chat_prompt_tokens(list(messages), self._count) + extra_tokens
        return _Ask(
            HttpRequest(
                ENDPOINT, json_body=body, data=canonical_json(body), stream=ResponsesStream if self._stream else None
            ),
            tokens=prompt + self._reserve,
            cache_key=key,
            completion_charge=self._completion_charge,
            prompt_estimate=prompt,
            messages=tuple(messages),
            n=1,
            form=form,
            streamed=self._stream,
        )

    def parse(self, body: bytes) -> ChatAnswer:
        obj = load_json(body)
        if obj.get("error"):
            raise TransientError(f"the Response failed: {str(obj['error'])[:200]}")
        message, finish = as_chat(obj)
        verdict: Verdict = self.shape.judge(message, finish)
        usage = obj.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("input_tokens"), int):
            u = Usage(
                int(usage["input_tokens"]),
                int(usage.get("output_tokens") or 0),
                cached_tokens=cached_tokens(usage, "input_tokens_details"),
            )
        else:
            u = Usage(0, self._count(verdict.raw or ""), estimated=True)
        return ChatAnswer({}, u, (verdict,), (), ())

    def current(self, ask: Prepared) -> _Ask:
        assert isinstance(ask, _Ask)
        return ask

    def replay(self, first: Prepared | None, body: bytes) -> StepResult | None:
        return None  # (a Response is not a chat completion: the long way, through `parse`)

    def quick_key(self, row: Mapping[str, Any]) -> str | None:
        return None  # (its body is not chat's: `draft` keys it)

    def serial(self, ask: Prepared) -> asyncio.Lock | None:
        return None

    def takes_over(self, ask: Prepared, err: RequestError, cuts: int) -> bool:
        return False

    def answered(self, ask: Prepared) -> None:
        return None
