"""Embeddings: OpenAI-like input validation, deterministic unit vectors, shuffled data items."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import numpy as np

from .faults import SimError
from .tokens import count_tokens, vocabulary_for

MAX_INPUTS = 2048
MAX_ITEM_TOKENS = 8191
MAX_REQUEST_TOKENS = 300_000


def native_dimensions(model: str) -> int:
    return 3072 if model.startswith("text-embedding-3-large") else 1536


def sim_embedding(text: str, model: str, dimensions: int | None = None) -> np.ndarray:
    """Deterministic float32 unit vector for `text` under `model` (first `dimensions`, renormalised)."""
    seed = int.from_bytes(hashlib.sha256((model + text).encode("utf-8")).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(native_dimensions(model))
    if dimensions is not None:
        v = v[:dimensions]
    v /= np.linalg.norm(v)
    return v.astype(np.float32)


def parse_request(body: dict[str, Any]) -> tuple[str, list[str], list[int], int | None, str]:
    """Validate an embeddings request: (model, inputs, tokens per input, dimensions, encoding_format)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise SimError(400, "you must provide a model parameter", param="model")
    raw = body.get("input")
    if raw is None:
        raise SimError(400, "'input' is a required property", param="input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs:
        raise SimError(400, "'$.input' is invalid: expected a non-empty string or array of strings.", param="input")
    if len(inputs) > MAX_INPUTS:
        raise SimError(
            400,
            f"'$.input' is too long. Maximum length is {MAX_INPUTS}, but got {len(inputs)} items.",
            param="input",
        )
    vocabulary = vocabulary_for(model)  # text-embedding-3 / ada-002: cl100k_base, as OpenAI bills them
    tokens = []
    for i, text in enumerate(inputs):
        if not isinstance(text, str):
            raise SimError(400, f"'$.input[{i}]' is invalid: expected a string.", param="input")
        if not text:
            raise SimError(400, f"'$.input[{i}]' is invalid: empty strings are not allowed.", param="input")
        n = count_tokens(text, vocabulary)
        if n > MAX_ITEM_TOKENS:
            raise SimError(
                400,
                f"This model's maximum context length is {MAX_ITEM_TOKENS + 1} tokens, however you "
                f"requested {n} tokens in input[{i}]. Please reduce your prompt.",
                param="input",
            )
        tokens.append(n)
    total = sum(tokens)
    if total > MAX_REQUEST_TOKENS:
        raise SimError(400, f"Requested {total} tokens, max {MAX_REQUEST_TOKENS} tokens per request", param="input")
    dims = body.get("dimensions")
    if dims is not None:
        if not model.startswith("text-embedding-3"):
            raise SimError(400, f"This model ({model}) does not support specifying dimensions.", param="dimensions")
        if not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= native_dimensions(model):
            raise SimError(
                400,
                f"Invalid 'dimensions': must be an integer in [1, {native_dimensions(model)}].",
                param="dimensions",
            )
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise SimError(
            400, f"Invalid 'encoding_format': {fmt!r}; expected 'float' or 'base64'.", param="encoding_format"
        )
    return model, inputs, tokens, dims, fmt


def shuffled_order(inputs: list[str]) -> list[int]:
    """A deterministic permutation of the input positions, never the identity for 2+ inputs."""
    keys = [hashlib.sha256(f"{i}:{t}".encode()).digest()[:8] for i, t in enumerate(inputs)]
    order = sorted(range(len(inputs)), key=keys.__getitem__)
    if len(order) > 1 and order == sorted(order):
        order.reverse()
    return order


def embeddings_response(model: str, inputs: list[str], dims: int | None, fmt: str, total: int) -> dict[str, Any]:
    data = []
    for i in shuffled_order(inputs):
        v = sim_embedding(inputs[i], model, dims)
        emb: Any = base64.b64encode(v.astype("<f4").tobytes()).decode() if fmt == "base64" else v.tolist()
        data.append({"object": "embedding", "index": i, "embedding": emb})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": total, "total_tokens": total},
    }
