"""Exact token counting (o200k_base via bpe-openai), shared with the client to reserve exactly."""

from __future__ import annotations

import json
import warnings
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=2)
def _encoding(vocabulary: str = "o200k_base") -> Any:
    # bpe-openai loads its bundled vocabularies with a deprecated importlib.resources call.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import bpe_openai

        return bpe_openai.get_encoding(vocabulary)


def preload_vocabularies() -> None:
    """Load both vocabularies the simulator counts in (once per process)."""
    for vocabulary in ("o200k_base", "cl100k_base"):
        _encoding(vocabulary)


def vocabulary_for(model: Any) -> str:
    """The vocabulary the real API counts a model's prompt in: cl100k_base for the GPT-3.5 / GPT-4
    generation (gpt-3.5-turbo-instruct, gpt-4, gpt-4-turbo) and for the embedding models of that
    generation (text-embedding-3-small/-large, text-embedding-ada-002), o200k_base for the others."""
    m = model.lower() if isinstance(model, str) else ""
    if m.startswith(("text-embedding-3", "text-embedding-ada-002")):
        return "cl100k_base"
    if m.startswith(("gpt-3.5", "gpt-4")) and not m.startswith(("gpt-4o", "gpt-4.1", "gpt-4.5")):
        return "cl100k_base"
    return "o200k_base"


# bpe-openai refuses texts of 1M characters or more: long texts are encoded in pieces (a token or two
# more at each cut; exact for everything shorter)
_CHUNK = 100_000


def encode(text: str, vocabulary: str = "o200k_base") -> list[int]:
    """Token ids of `text` (no special tokens)."""
    enc = _encoding(vocabulary)
    if len(text) <= _CHUNK:
        return list(enc.encode_ordinary(text))
    ids: list[int] = []
    for i in range(0, len(text), _CHUNK):
        ids.extend(enc.encode_ordinary(text[i : i + _CHUNK]))
    return ids


def decode(tokens: list[int]) -> str:
    return str(_encoding().decode(tokens))


def token_bytes(token: int) -> bytes:
    return bytes(_encoding().decode_single_token_bytes(token))


def count_tokens(text: str, vocabulary: str = "o200k_base") -> int:
    """Number of tokens of `text` (o200k_base unless said otherwise)."""
    if not text:
        return 0
    return len(encode(text, vocabulary))


def content_text(content: Any) -> str:
    """Text of a message content: a string, or the `text` of the text parts of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return "\n".join(parts)
    return ""


def content_tokens(content: Any, vocabulary: str = "o200k_base") -> int:
    """Tokens of a message content; for a list of parts, of their texts joined with no separator."""
    if isinstance(content, str):
        return count_tokens(content, vocabulary)
    if isinstance(content, list):
        return count_tokens(
            "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)), vocabulary
        )
    return 0


def chat_prompt_tokens(messages: list[Any], body: dict[str, Any] | None = None) -> int:
    """Prompt tokens of a chat request: sum over messages of (content tokens + 4), plus 3, plus (with
    `body`) its tool definitions and answer schema (see `definition_tokens`), in the vocabulary of the
    body's model."""
    vocabulary = vocabulary_for(body.get("model")) if body is not None else "o200k_base"
    total = 3
    for m in messages:
        total += content_tokens(m.get("content") if isinstance(m, dict) else None, vocabulary) + 4
    return total + (definition_tokens(body, vocabulary) if body is not None else 0)


# What a chat body carries besides its messages that the real API bills as prompt tokens.
DEFINITION_FIELDS = ("response_format", "tools", "tool_choice", "functions", "function_call")


def definition_tokens(body: dict[str, Any], vocabulary: str = "o200k_base") -> int:
    """Tokens of a chat body's tool definitions and response_format schema, as the real API counts
    them in `prompt_tokens` (roughly: the JSON of those fields, tokenised)."""
    fields = {k: body[k] for k in DEFINITION_FIELDS if body.get(k) is not None}
    if not fields:
        return 0
    return count_tokens(json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False), vocabulary)
