"""The `params` of each step kind checked against the OpenAI request schema: known keys, types, ranges."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Param:
    """What the API accepts for one request field."""

    type: str  # number | integer | boolean | string | object | array | string_or_array | any
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()


_NUM, _INT, _BOOL, _STR, _OBJ = "number", "integer", "boolean", "string", "object"

# POST /chat/completions (the step builds model, messages, tools, response_format for structured steps)
CHAT: dict[str, Param] = {
    "temperature": Param(_NUM, 0, 2),
    "top_p": Param(_NUM, 0, 1),
    "max_tokens": Param(_INT, 1),
    "max_completion_tokens": Param(_INT, 1),
    "n": Param(_INT, 1, 128),
    "stop": Param("string_or_array"),
    "presence_penalty": Param(_NUM, -2, 2),
    "frequency_penalty": Param(_NUM, -2, 2),
    "seed": Param(_INT),
    "logprobs": Param(_BOOL),
    "top_logprobs": Param(_INT, 0, 20),
    "response_format": Param(_OBJ),
    "stream": Param(_BOOL),
    "user": Param(_STR),
    "logit_bias": Param(_OBJ),
    "parallel_tool_calls": Param(_BOOL),
    "service_tier": Param(_STR, choices=("auto", "default", "flex", "scale", "priority")),
    "reasoning_effort": Param(_STR, choices=("minimal", "low", "medium", "high")),
    "verbosity": Param(_STR, choices=("low", "medium", "high")),
    "store": Param(_BOOL),
    "metadata": Param(_OBJ),
    "modalities": Param("array"),
    "audio": Param(_OBJ),
    "prediction": Param(_OBJ),
    "web_search_options": Param(_OBJ),
    "prompt_cache_key": Param(_STR),
    "safety_identifier": Param(_STR),
}
# POST /embeddings (the step builds model and input)
EMBED: dict[str, Param] = {
    "dimensions": Param(_INT, 1),
    "encoding_format": Param(_STR, choices=("float", "base64")),
    "user": Param(_STR),
}
# POST /audio/transcriptions: language, prompt, temperature, response_format, timestamp_granularities
# are keys of the step itself
TRANSCRIBE: dict[str, Param] = {
    "chunking_strategy": Param("any"),
    "include": Param("array"),
}
# POST /completions (legacy; the step builds model and prompt)
COMPLETION: dict[str, Param] = {
    "suffix": Param(_STR),
    "max_tokens": Param(_INT, 0),
    "temperature": Param(_NUM, 0, 2),
    "top_p": Param(_NUM, 0, 1),
    "n": Param(_INT, 1, 128),
    "logprobs": Param(_INT, 0, 5),
    "echo": Param(_BOOL),
    "stop": Param("string_or_array"),
    "presence_penalty": Param(_NUM, -2, 2),
    "frequency_penalty": Param(_NUM, -2, 2),
    "best_of": Param(_INT, 0, 20),
    "logit_bias": Param(_OBJ),
    "seed": Param(_INT),
    "user": Param(_STR),
}
# POST /responses (`api: responses` on a chat step): chat names that map are accepted (max_tokens and
# max_completion_tokens -> max_output_tokens, reasoning_effort -> reasoning.effort, verbosity -> text.verbosity)
RESPONSES: dict[str, Param] = {
    "temperature": Param(_NUM, 0, 2),
    "top_p": Param(_NUM, 0, 1),
    "max_tokens": Param(_INT, 16),
    "max_completion_tokens": Param(_INT, 16),
    "max_output_tokens": Param(_INT, 16),
    "stream": Param(_BOOL),
    "user": Param(_STR),
    "parallel_tool_calls": Param(_BOOL),
    "service_tier": Param(_STR, choices=("auto", "default", "flex", "scale", "priority")),
    "reasoning_effort": Param(_STR, choices=("minimal", "low", "medium", "high")),
    "verbosity": Param(_STR, choices=("low", "medium", "high")),
    "store": Param(_BOOL),
    "metadata": Param(_OBJ),
    "prompt_cache_key": Param(_STR),
    "safety_identifier": Param(_STR),
    "truncation": Param(_STR, choices=("auto", "disabled")),
}
# POST /images/generations (the step builds model and prompt); per-model values in `image_problems`
IMAGE: dict[str, Param] = {
    "n": Param(_INT, 1, 10),
    "size": Param(_STR),
    "quality": Param(_STR),
    "style": Param(_STR, choices=("vivid", "natural")),
    "response_format": Param(_STR, choices=("url", "b64_json")),
    "background": Param(_STR, choices=("transparent", "opaque", "auto")),
    "output_format": Param(_STR, choices=("png", "jpeg", "webp")),
    "output_compression": Param(_INT, 0, 100),
    "moderation": Param(_STR, choices=("low", "auto")),
    "user": Param(_STR),
}
IMAGE_SIZES = {
    "dall-e-2": ("256x256", "512x512", "1024x1024"),
    "dall-e-3": ("1024x1024", "1792x1024", "1024x1792"),
    "gpt-image-1": ("1024x1024", "1536x1024", "1024x1536", "auto"),
}
IMAGE_QUALITIES = {
    "dall-e-2": ("standard",),
    "dall-e-3": ("standard", "hd"),
    "gpt-image-1": ("low", "medium", "high", "auto"),
}
_GPT_IMAGE_ONLY = ("background", "output_format", "output_compression", "moderation")


def image_problems(model: str, params: Mapping[str, Any], step: str) -> list[str]:
    """What `model` does not take of an image step's params (models other than these three: not checked)."""
    if model not in IMAGE_SIZES:
        return []
    out: list[str] = []
    for key, allowed in (("size", IMAGE_SIZES[model]), ("quality", IMAGE_QUALITIES[model])):
        if key in params and params[key] not in allowed:
            out.append(
                f"step `{step}`: params.{key} {params[key]!r} is not one {model} makes; valid: {', '.join(allowed)}"
            )
    if "style" in params and model != "dall-e-3":
        out.append(f"step `{step}`: params.style applies to dall-e-3 only, not {model}")
    if model == "dall-e-3" and int(params.get("n") or 1) != 1:
        out.append(f"step `{step}`: dall-e-3 makes one image per request; params.n must be 1, got {params['n']!r}")
    if model == "gpt-image-1" and "response_format" in params:
        out.append(f"step `{step}`: gpt-image-1 always answers b64_json; remove params.response_format")
    for key in _GPT_IMAGE_ONLY:
        if key in params and model != "gpt-image-1":
            out.append(f"step `{step}`: params.{key} applies to gpt-image-1 only, not {model}")
    return out


BY_KIND: dict[str, tuple[str, dict[str, Param]]] = {
    "chat": ("chat completions (/chat/completions)", CHAT),
    "embed": ("embeddings (/embeddings)", EMBED),
    "transcribe": ("transcriptions (/audio/transcriptions)", TRANSCRIBE),
    "completion": ("legacy completions (/completions)", COMPLETION),
    "responses": ("the Responses API (/responses)", RESPONSES),
    "image": ("image generations (/images/generations)", IMAGE),
}


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "list"
    return "null" if value is None else type(value).__name__


def _type_ok(p: Param, v: Any) -> bool:
    if p.type == "any":
        return True
    if p.type == _NUM:
        return isinstance(v, int | float) and not isinstance(v, bool)
    if p.type == _INT:
        return isinstance(v, int) and not isinstance(v, bool)
    if p.type == _BOOL:
        return isinstance(v, bool)
    if p.type == _STR:
        return isinstance(v, str)
    if p.type == _OBJ:
        return isinstance(v, dict)
    if p.type == "array":
        return isinstance(v, list)
    return isinstance(v, str) or (isinstance(v, list) and all(isinstance(s, str) for s in v))


def _expected(p: Param) -> str:
    what = {
        _NUM: "a number",
        _INT: "a whole number",
        _BOOL: "true or false",
        _STR: "text",
        _OBJ: "a mapping",
        "array": "a list",
        "string_or_array": "text or a list of texts",
    }.get(p.type, "a value")
    if p.choices:
        return "one of " + ", ".join(p.choices)
    if p.lo is not None and p.hi is not None:
        return f"{what} from {p.lo:g} to {p.hi:g}"
    if p.lo is not None:
        return f"{what} >= {p.lo:g}"
    return what


def check_params(
    kind: str, params: Mapping[str, Any], step: str, provider: str, extra: str = "error"
) -> tuple[list[str], list[str]]:
    """(problems, notes) for a step's params. Unknown keys are problems unless the provider's
    `extra_params` is warn (a note) or allow."""
    endpoint, known = BY_KIND[kind]
    problems: list[str] = []
    notes: list[str] = []
    for key, value in params.items():
        p = known.get(key)
        if p is None:
            if extra == "allow":
                continue
            hint = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
            text = f"step `{step}`: params.{key} is not a parameter of {endpoint}"
            if hint:
                text += f"; did you mean `{hint[0]}`?"
            if extra == "warn":
                notes.append(f"{text}; sent as is (provider `{provider}` has extra_params: warn)")
            else:
                listed = "" if hint else f" (known: {', '.join(sorted(known)) or 'none'})."
                problems.append(
                    f"{text}{listed} For a server with parameters of its own, set "
                    f"extra_params: warn on provider `{provider}`"
                )
            continue
        shown = f"{value!r} ({_kind_of(value)})"
        if value is None or not _type_ok(p, value):
            problems.append(f"step `{step}`: params.{key} must be {_expected(p)}, got {shown}")
        elif (p.choices and value not in p.choices) or (
            p.type in (_NUM, _INT) and ((p.lo is not None and value < p.lo) or (p.hi is not None and value > p.hi))
        ):
            problems.append(f"step `{step}`: params.{key} must be {_expected(p)}, got {value!r}")
    return problems, notes
