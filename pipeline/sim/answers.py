"""Deterministic chat and completion answers: text, labels, JSON, tool calls, logprobs, SSE chunks."""

from __future__ import annotations

import codecs
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .faults import SimError
from .schema import is_label_name, schema_instance, violate
from .tokens import content_text, count_tokens, decode, encode, token_bytes

_VOCAB = (  # noqa: SIM905
    "the quick answer is simple and clear because every request gets a stable reply that "
    "depends only on its messages so tests can compare results across runs without surprises "
    "while the client measures tokens latency limits and errors"
).split()
_POSITIVE_EN = re.compile(
    r"\b(great|love|loved|loves|lovely|excellent|good|amazing|awesome|wonderful|fantastic|happy|best|"
    r"perfect|nice|enjoy|enjoyed|recommend)\b",
    re.IGNORECASE,
)
_NEGATIVE_EN = re.compile(
    r"\b(bad|terrible|broken|awful|hate|hated|worst|poor|disappointed|disappointing|horrible|useless|"
    r"refund|angry|slow|waste)\b",
    re.IGNORECASE,
)
_NEGATIVE_ZH = ("不好", "不喜欢", "差", "失望", "糟糕", "坏", "讨厌", "垃圾", "难用")
_POSITIVE_ZH = ("好", "喜欢", "棒", "满意", "赞", "优秀", "不错")
_ASKS_LABEL = re.compile(r"\bsentiment\b|\blabels?\b|\bclassify\b|\bclassification\b|情感|情绪|分类|标签", re.I)
REFUSAL = "I can't help with that."
TOKENS_PER_CHUNK = 4


def sentiment_label(text: str) -> str:
    """'positive', 'negative' or 'neutral' from simple keyword counts."""
    neg = len(_NEGATIVE_EN.findall(text))
    rest = text
    for w in _NEGATIVE_ZH:
        neg += rest.count(w)
        rest = rest.replace(w, " ")
    pos = len(_POSITIVE_EN.findall(text)) + sum(rest.count(w) for w in _POSITIVE_ZH)
    if pos > neg:
        return "positive"
    if neg > pos:
        return "negative"
    return "neutral"


def _last_user_text(messages: list[Any]) -> str:
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            return content_text(m.get("content"))
    return content_text(messages[-1].get("content")) if messages and isinstance(messages[-1], dict) else ""


def _task_text(messages: list[Any]) -> str:
    """The user message that set the task: the last one before the first assistant or tool message.

    In a re-ask (the task, the model's answer, then what was wrong with it) the labels still follow the
    task, not the complaint."""
    for i, m in enumerate(messages):
        if isinstance(m, dict) and m.get("role") in ("assistant", "tool"):
            return _last_user_text(messages[:i]) if i else _last_user_text(messages)
    return _last_user_text(messages)


_VARIANTS = (str.upper, lambda s: f" {s.title()}\n", lambda s: f"  {s}  ", lambda s: s.title() + ".")


def label_variant(label: str, seed: str) -> str:
    """`label` spelled as models sometimes do: other case, spaces, newline, a full stop."""
    return _VARIANTS[int(seed[:4], 16) % len(_VARIANTS)](label)


def _vary_labels(instance: Any, seed: str) -> Any:
    if isinstance(instance, dict):
        return {
            k: label_variant(v, seed) if isinstance(v, str) and is_label_name(k) else v for k, v in instance.items()
        }
    return instance


def _digest(messages: list[Any], choice: int = 0) -> str:
    raw = json.dumps(messages, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    if choice:
        raw += f"#{choice}"
    return hashlib.sha256(raw.encode()).hexdigest()


def sim_chat_text(messages: list[Any], *, choice: int = 0) -> str:
    """The simulator's answer to `messages`: a sentiment label if one is asked for, else a stable sentence."""
    last = _task_text(messages)
    system = " ".join(
        content_text(m.get("content")) for m in messages if isinstance(m, dict) and m.get("role") == "system"
    )
    if _ASKS_LABEL.search(last) or _ASKS_LABEL.search(system):
        return sentiment_label(last)
    d = _digest(messages, choice)
    n = 5 + int(d[6], 16) % 5
    words = [_VOCAB[int(d[8 + 2 * i : 10 + 2 * i], 16) % len(_VOCAB)] for i in range(n)]
    return f"Simulated answer {d[:6]}: {' '.join(words)}."


@dataclass
class Choice:
    """One planned choice of an answer."""

    content: str | None = None
    refusal: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str = "stop"
    completion_tokens: int = 0
    tokens: list[int] = field(default_factory=list)


@dataclass
class Plan:
    """A planned answer: its choices and token usage."""

    choices: list[Choice]
    prompt_tokens: int
    cached_tokens: int = 0  # of the prompt tokens, those reported as served from the prompt cache

    @property
    def completion_tokens(self) -> int:
        return sum(c.completion_tokens for c in self.choices)


def _text_choice(text: str, max_tokens: int | None) -> Choice:
    tokens = encode(text)
    if max_tokens is not None and len(tokens) > max_tokens:
        tokens = tokens[:max_tokens]
        return Choice(content=decode(tokens), finish_reason="length", completion_tokens=len(tokens), tokens=tokens)
    return Choice(content=text, completion_tokens=len(tokens), tokens=tokens)


def max_tokens_of(body: dict[str, Any]) -> int | None:
    for k in ("max_tokens", "max_completion_tokens"):
        v = body.get(k)
        if v is not None:
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise SimError(400, f"Invalid '{k}': expected an integer >= 1.", param=k)
            return v
    return None


def _forced_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    if not tools or choice in (None, "auto", "none"):
        return None
    fns = [t.get("function", {}) for t in tools if isinstance(t, dict)]
    if choice == "required":
        return fns[0] if fns else None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        for fn in fns:
            if fn.get("name") == name:
                return dict(fn)
        raise SimError(400, f"Invalid 'tool_choice': no function named {name!r} in 'tools'.", param="tool_choice")
    return None


_SCHEMA_IN_PROMPT = "JSON Schema:\n"


def _prompt_schema(messages: list[Any]) -> dict[str, Any] | None:
    """A JSON Schema the system message asks the answer to match (the client's `prompt` form)."""
    for m in messages:
        text = content_text(m.get("content")) if isinstance(m, dict) and m.get("role") == "system" else ""
        at = text.find(_SCHEMA_IN_PROMPT)
        if at >= 0:
            try:
                schema, _ = json.JSONDecoder().raw_decode(text[at + len(_SCHEMA_IN_PROMPT) :])
            except ValueError:
                return None
            return schema if isinstance(schema, dict) else None
    return None


def _json_schema(body: dict[str, Any], structured: bool = True) -> dict[str, Any] | None:
    rf = body.get("response_format")
    if not structured:
        return None
    if isinstance(rf, dict) and rf.get("type") == "json_schema":
        schema = (rf.get("json_schema") or {}).get("schema")
        return schema if isinstance(schema, dict) else {}
    if isinstance(rf, dict) and rf.get("type") == "json_object" and isinstance(rf.get("schema"), dict):
        return dict(rf["schema"])  # llama.cpp's form: the schema constrains the JSON object
    if rf is None and isinstance(body.get("messages"), list):
        return _prompt_schema(body["messages"])  # a model that follows the schema it is told
    return None


def plan_chat(body: dict[str, Any], prompt_tokens: int, fault: str | None = None, *, structured: bool = True) -> Plan:
    """The answer to a chat request (optionally altered by a content fault).

    `structured=False` plays a server without structured outputs: response_format json_schema is
    ignored and the answer is plain text (tools still work).
    """
    messages = body["messages"]
    n = body.get("n") or 1
    max_tokens = max_tokens_of(body)
    tool = _forced_tool(body)
    schema = _json_schema(body, structured)
    rf = body.get("response_format")
    label = sentiment_label(_task_text(messages))
    choices = []
    for i in range(n):
        d = _digest(messages, i)
        if fault == "refusal":
            choices.append(Choice(refusal=REFUSAL, completion_tokens=count_tokens(REFUSAL)))
            continue
        if tool is not None:
            params = tool.get("parameters") or {}
            value = schema_instance(params, d, label)
            if fault == "schema_violation":
                value = violate(params, value)
            elif fault == "label_variant":
                value = _vary_labels(value, d)
            args = json.dumps(value, ensure_ascii=False)
            if fault == "invalid_json_answer":
                args = args[: max(1, len(args) // 2)]
            call = {
                "id": f"call_sim{d[:16]}",
                "type": "function",
                "function": {"name": tool.get("name", ""), "arguments": args},
            }
            choices.append(Choice(tool_calls=[call], finish_reason="tool_calls", completion_tokens=count_tokens(args)))
            continue
        if schema is not None:
            instance = schema_instance(schema, d, label)
            if fault == "schema_violation":
                instance = violate(schema, instance)
            elif fault == "label_variant":
                instance = _vary_labels(instance, d)
            text = json.dumps(instance, ensure_ascii=False)
        elif isinstance(rf, dict) and rf.get("type") == "json_object":
            text = json.dumps({"answer": sim_chat_text(messages, choice=i)}, ensure_ascii=False)
        elif fault == "schema_violation":
            text = json.dumps({"unexpected": True})
        else:
            text = sim_chat_text(messages, choice=i)
            if fault == "label_variant":
                text = label_variant(text, d)
        if fault == "invalid_json_answer":
            text = 'Sure! Here is the JSON you asked for: {"answer": "' + text.replace('"', "'")
        choices.append(_text_choice(text, max_tokens))
    return Plan(choices, prompt_tokens)


def _logprob_entries(tokens: list[int], top: int) -> list[dict[str, Any]]:
    out = []
    for i, t in enumerate(tokens):
        lp = -((t * 2654435761 + i) % 1000) / 4000.0
        b = token_bytes(t)
        entry: dict[str, Any] = {"token": b.decode("utf-8", "replace"), "logprob": lp, "bytes": list(b)}
        alts = [{"token": entry["token"], "logprob": lp, "bytes": entry["bytes"]}]
        for j in range(1, top):
            alt = token_bytes((t + 7919 * j) % 199_990)
            alts.append({"token": alt.decode("utf-8", "replace"), "logprob": lp - 1.5 * j, "bytes": list(alt)})
        entry["top_logprobs"] = alts[:top]
        out.append(entry)
    return out


def _logprobs(body: dict[str, Any], c: Choice) -> dict[str, Any] | None:
    if not body.get("logprobs") or c.content is None:
        return None
    return {"content": _logprob_entries(c.tokens, int(body.get("top_logprobs") or 0)), "refusal": None}


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


def chat_response(plan: Plan, body: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    choices = []
    for i, c in enumerate(plan.choices):
        msg: dict[str, Any] = {"role": "assistant", "content": c.content, "refusal": c.refusal}
        if c.tool_calls is not None:
            msg["tool_calls"] = c.tool_calls
        choices.append({"index": i, "message": msg, "logprobs": _logprobs(body, c), "finish_reason": c.finish_reason})
    return {
        **meta,
        "object": "chat.completion",
        "choices": choices,
        "usage": usage(plan.prompt_tokens, plan.completion_tokens, plan.cached_tokens),
    }


def _pieces(tokens: list[int]) -> Iterator[tuple[str, list[int]]]:
    """Consecutive text pieces of a few tokens each, never splitting a UTF-8 character."""
    dec = codecs.getincrementaldecoder("utf-8")("replace")
    for i in range(0, len(tokens), TOKENS_PER_CHUNK):
        group = tokens[i : i + TOKENS_PER_CHUNK]
        text = dec.decode(b"".join(token_bytes(t) for t in group))
        if text:
            yield text, group


def chat_chunks(
    plan: Plan, body: dict[str, Any], meta: dict[str, Any], *, truncated: bool = False
) -> Iterator[tuple[dict[str, Any], int]]:
    """SSE chunks of a streamed chat answer, each with its number of completion tokens (for pacing)."""
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    extra = {"usage": None} if include_usage else {}
    top = int(body.get("top_logprobs") or 0)

    def chunk(i: int, delta: dict[str, Any], finish: str | None = None, lp: Any = None) -> dict[str, Any]:
        choice = {"index": i, "delta": delta, "logprobs": lp, "finish_reason": finish}
        return {**meta, "object": "chat.completion.chunk", "choices": [choice], **extra}

    for i, c in enumerate(plan.choices):
        if c.tool_calls is not None:
            call = c.tool_calls[0]
            head = {
                "index": 0,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""},
            }
            yield chunk(i, {"role": "assistant", "content": None, "tool_calls": [head]}), 0
            for text, group in _pieces(encode(call["function"]["arguments"])):
                yield chunk(i, {"tool_calls": [{"index": 0, "function": {"arguments": text}}]}), len(group)
        elif c.refusal is not None:
            yield chunk(i, {"role": "assistant", "content": None, "refusal": ""}), 0
            for text, group in _pieces(encode(c.refusal)):
                yield chunk(i, {"refusal": text}), len(group)
        else:
            yield chunk(i, {"role": "assistant", "content": "", "refusal": None}), 0
            for k, (text, group) in enumerate(_pieces(c.tokens)):
                if truncated and k >= 2:
                    break
                lp = {"content": _logprob_entries(group, top), "refusal": None} if body.get("logprobs") else None
                yield chunk(i, {"content": text}, None, lp), len(group)
        if truncated:
            return
        yield chunk(i, {}, c.finish_reason), 0
    if include_usage:
        yield (
            {
                **meta,
                "object": "chat.completion.chunk",
                "choices": [],
                "usage": usage(plan.prompt_tokens, plan.completion_tokens, plan.cached_tokens),
            },
            0,
        )


pieces = _pieces  # the Responses API's deltas are cut the same way
