"""Request fields the real API checks, and its 400 answers (`param` names the field) for bad ones."""

from __future__ import annotations

from typing import Any

from .faults import SimError

# name -> (type, minimum, maximum); OpenAI answers 400 for an unknown field, a wrong type or a value
# out of range, with these messages and codes
_NUM, _INT, _BOOL, _STR, _OBJ, _ARR, _ANY = "decimal", "integer", "boolean", "string", "object", "array", "any"
CHAT: dict[str, tuple[str, float | None, float | None]] = {
    "model": (_STR, None, None),
    "messages": (_ARR, None, None),
    "temperature": (_NUM, 0, 2),
    "top_p": (_NUM, 0, 1),
    "max_tokens": (_INT, 1, None),
    "max_completion_tokens": (_INT, 1, None),
    "n": (_INT, 1, 128),
    "stop": (_ANY, None, None),
    "presence_penalty": (_NUM, -2, 2),
    "frequency_penalty": (_NUM, -2, 2),
    "seed": (_INT, None, None),
    "logprobs": (_BOOL, None, None),
    "top_logprobs": (_INT, 0, 20),
    "response_format": (_OBJ, None, None),
    "stream": (_BOOL, None, None),
    "stream_options": (_OBJ, None, None),
    "user": (_STR, None, None),
    "logit_bias": (_OBJ, None, None),
    "tools": (_ARR, None, None),
    "tool_choice": (_ANY, None, None),
    "parallel_tool_calls": (_BOOL, None, None),
    "functions": (_ARR, None, None),
    "function_call": (_ANY, None, None),
    "service_tier": (_STR, None, None),
    "reasoning_effort": (_STR, None, None),
    "verbosity": (_STR, None, None),
    "store": (_BOOL, None, None),
    "metadata": (_OBJ, None, None),
    "modalities": (_ARR, None, None),
    "audio": (_OBJ, None, None),
    "prediction": (_OBJ, None, None),
    "web_search_options": (_OBJ, None, None),
    "prompt_cache_key": (_STR, None, None),
    "safety_identifier": (_STR, None, None),
}
EMBEDDINGS: dict[str, tuple[str, float | None, float | None]] = {
    "model": (_STR, None, None),
    "input": (_ANY, None, None),
    "dimensions": (_INT, 1, None),
    "encoding_format": (_STR, None, None),
    "user": (_STR, None, None),
}
# multipart fields of /audio/transcriptions (file_* and duration_s are the simulator's own record)
TRANSCRIPTION_FIELDS = {
    "model",
    "language",
    "prompt",
    "temperature",
    "response_format",
    "timestamp_granularities[]",
    "stream",
    "chunking_strategy",
    "include[]",
    "include",
    "file_name",
    "file_size",
    "file_sha256",
}
CONTEXT_TOKENS = 128_000  # chat models' context window in the simulator


def _type_ok(kind: str, v: Any) -> bool:
    if kind == _ANY:
        return True
    if kind == _NUM:
        return isinstance(v, int | float) and not isinstance(v, bool)
    if kind == _INT:
        return isinstance(v, int) and not isinstance(v, bool)
    return isinstance(v, {_BOOL: bool, _STR: str, _OBJ: dict, _ARR: list}[kind])


def _json_type(v: Any) -> str:
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int | float):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, dict):
        return "an object"
    if isinstance(v, list):
        return "an array"
    return "null"


def check(body: dict[str, Any], fields: dict[str, tuple[str, float | None, float | None]]) -> None:
    """Raise the 400 OpenAI answers for the first unknown, mistyped or out-of-range field of `body`."""
    for name, value in body.items():
        spec = fields.get(name)
        if spec is None:
            raise SimError(400, f"Unrecognized request argument supplied: {name}", param=name, code="unknown_parameter")
        kind, lo, hi = spec
        if value is None:
            continue
        if not _type_ok(kind, value):
            raise SimError(
                400,
                f"Invalid type for '{name}': expected {'an' if kind[0] in 'aeiou' else 'a'} "
                f"{kind}, but got {_json_type(value)} instead.",
                param=name,
                code="invalid_type",
            )
        if kind in (_NUM, _INT):
            if lo is not None and value < lo:
                raise SimError(
                    400,
                    f"Invalid '{name}': {kind} below minimum value. Expected a value >= {lo:g}, "
                    f"but got {value} instead.",
                    param=name,
                    code=f"{kind}_below_min_value",
                )
            if hi is not None and value > hi:
                raise SimError(
                    400,
                    f"Invalid '{name}': {kind} above maximum value. Expected a value <= {hi:g}, "
                    f"but got {value} instead.",
                    param=name,
                    code=f"{kind}_above_max_value",
                )


def check_form(fields: dict[str, Any]) -> None:
    """400 for a multipart field /audio/transcriptions does not know."""
    for name in fields:
        if name not in TRANSCRIPTION_FIELDS:
            raise SimError(400, f"Unrecognized request argument supplied: {name}", param=name, code="unknown_parameter")


def check_context(prompt_tokens: int, max_tokens: int | None, window: int = CONTEXT_TOKENS) -> None:
    """400 `context_length_exceeded`, as a real model answers a prompt longer than its context."""
    if prompt_tokens + (max_tokens or 0) > window:
        raise SimError(
            400,
            f"This model's maximum context length is {window} tokens. However, you requested "
            f"{prompt_tokens + (max_tokens or 0)} tokens ({prompt_tokens} in the messages, {max_tokens or 0} in "
            "the completion). Please reduce the length of the messages or completion.",
            param="messages",
            code="context_length_exceeded",
        )
