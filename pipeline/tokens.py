"""Offline token estimates for pacing: bundled BPE vocabularies (bpe-openai), or a CJK-aware heuristic."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

# Per-message framing tokens of the chat format (role, separators) and the reply primer.
MESSAGE_OVERHEAD = 4
REPLY_PRIMER = 3

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")
_DIGITS = re.compile(r"[0-9]+")

TOKENIZERS = ("o200k_base", "cl100k_base", "heuristic")


class Counter(Protocol):
    def __call__(self, text: str) -> int: ...


@functools.cache
def _bpe(name: str) -> Any:
    import warnings

    import bpe_openai

    with warnings.catch_warnings():
        # bpe-openai 0.1.x loads its bundled vocabularies with a deprecated importlib call
        warnings.simplefilter("ignore", DeprecationWarning)
        return bpe_openai.get_encoding(name)


def bpe(name: str) -> Any:
    """The bundled BPE vocabulary `name` (o200k_base or cl100k_base), loaded on first use (100+ MB)."""
    if name not in ("o200k_base", "cl100k_base"):
        raise ValueError(f"unknown vocabulary {name!r}; choose o200k_base or cl100k_base")
    return _bpe(name)


# bpe-openai refuses a text of 1,000,000 characters ("Input too long to encode safely") or one that
# makes more tokens than its chunk limit (TokenLimitError): long texts are encoded piece by piece.
CHUNK_CHARS = 100_000


def encode_safely(enc: Any, text: str, stop_after: int | None = None) -> list[int]:
    """Token ids of `text`, encoded in pieces the vocabulary accepts; stops once `stop_after` ids are
    known. Pieces are cut every CHUNK_CHARS characters, which may count a token or two more than a
    single pass would: close enough to pace requests and to decide whether a text is too long."""
    if len(text) <= CHUNK_CHARS:
        return list(enc.encode_ordinary(text))
    ids: list[int] = []
    for i in range(0, len(text), CHUNK_CHARS):
        ids.extend(enc.encode_ordinary(text[i : i + CHUNK_CHARS]))
        if stop_after is not None and len(ids) >= stop_after:
            break
    return ids


def _heuristic(text: str) -> int:
    # Measured never to under-count cl100k on CJK news text (API_FACTS.md): 1.3/CJK char, 0.3/other.
    # Digits: cl100k and o200k cut a run of digits into groups of up to three, and the character before
    # the run (a space, '#', '$') becomes a token of its own: a run costs ceil(len / 3) + 0.7 (its
    # separator's 0.3 is counted with the other characters). At 0.3 per digit, "#1000" after "#999"
    # would add 0.3 where the server counts one more token (a pacer reserving to the token then under-
    # reserves), and a column of numbers would be under-counted by a third.
    cjk = len(_CJK.findall(text))
    runs = _DIGITS.findall(text)
    if not runs:
        return int(1.3 * cjk + 0.3 * (len(text) - cjk)) + 1
    n = sum(len(r) for r in runs)
    groups = sum((len(r) + 2) // 3 for r in runs)
    return int(1.3 * cjk + 0.3 * (len(text) - cjk - n) + groups + 0.7 * len(runs)) + 1


def tokenizer_for(model: str, override: str | None = None) -> str:
    """The counter used to reserve tokens for `model`: the provider's `tokenizer`, else the heuristic.

    The estimate only paces: the reservation is corrected from `usage` as soon as the answer is in,
    so an over-count holds budget for one request's latency, not for the window. The heuristic never
    under-counts OpenAI's vocabularies and costs no memory; a BPE vocabulary costs 100+ MB of RAM
    per process, so it is loaded only when a job asks for exact counts (`tokenizer: o200k_base`).
    """
    return override or "heuristic"


def exact_tokenizer_for(model: str) -> str:
    """The OpenAI vocabulary closest to `model` (o200k for current models, cl100k for older ones)."""
    m = model.lower()
    if m.startswith(("gpt-4o", "gpt-4.1", "gpt-5", "o1", "o3", "o4", "chatgpt-4o")):
        return "o200k_base"
    if m.startswith(("gpt-4", "gpt-3.5", "text-embedding")):
        return "cl100k_base"
    return "o200k_base"


@functools.cache
def counter(name: str) -> Counter:
    """A function text -> token count for the named vocabulary (or `heuristic`)."""
    if name == "heuristic":
        return _heuristic
    if name not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {name!r}; choose one of {', '.join(TOKENIZERS)}")
    enc = _bpe(name)

    def count(text: str) -> int:
        if not text:
            return 0
        try:
            return len(encode_safely(enc, text))
        except Exception:  # a text the vocabulary refuses still gets an estimate: it only paces
            return _heuristic(text)

    return count


def content_text(content: Any) -> str:
    """The text of a chat message content: a string, or the text parts of a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


def chat_prompt_tokens(
    messages: Iterable[dict[str, Any]], count: Counter, known: Mapping[str, int] | None = None
) -> int:
    """Prompt tokens of a chat request in OpenAI's framing: content + 4 per message + 3. `known`: counts
    of contents already counted (a step's fixed messages, counted once per run)."""
    total = REPLY_PRIMER
    for m in messages:
        content = m.get("content")
        n = known.get(content) if known is not None and isinstance(content, str) else None
        total += (count(content_text(content)) if n is None else n) + MESSAGE_OVERHEAD
    return total
