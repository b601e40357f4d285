"""POST /v1/images/generations: per-model request checks, deterministic PNGs, and the images-per-minute limit.

The PNGs are small (8x8 pixels, two colours drawn from the request) whatever `size` asks: the size is
nominal. `output_format` jpeg/webp is accepted for gpt-image-1 but the bytes are still a PNG.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import time
import zlib
from collections import deque
from dataclasses import dataclass
from typing import Any

from . import params
from .faults import SimError

_NUM, _INT, _STR, _BOOL = "decimal", "integer", "string", "boolean"
FIELDS: dict[str, tuple[str, float | None, float | None]] = {
    "prompt": (_STR, None, None),
    "model": (_STR, None, None),
    "n": (_INT, 1, 10),
    "size": (_STR, None, None),
    "quality": (_STR, None, None),
    "style": (_STR, None, None),
    "response_format": (_STR, None, None),
    "background": (_STR, None, None),
    "output_format": (_STR, None, None),
    "output_compression": (_INT, 0, 100),
    "moderation": (_STR, None, None),
    "user": (_STR, None, None),
    "stream": (_BOOL, None, None),
    "partial_images": (_INT, 0, 3),
}
MODELS = ("dall-e-2", "dall-e-3", "gpt-image-1")
PROMPT_MAX = {"dall-e-2": 1000, "dall-e-3": 4000, "gpt-image-1": 32000}
SIZES = {
    "dall-e-2": ("256x256", "512x512", "1024x1024"),
    "dall-e-3": ("1024x1024", "1792x1024", "1024x1792"),
    "gpt-image-1": ("1024x1024", "1536x1024", "1024x1536", "auto"),
}
QUALITIES = {
    "dall-e-2": ("standard",),
    "dall-e-3": ("standard", "hd"),
    "gpt-image-1": ("low", "medium", "high", "auto"),
}
_GPT_IMAGE_ONLY = ("background", "output_format", "output_compression", "moderation", "partial_images", "stream")
_CHOICES = {
    "style": ("vivid", "natural"),
    "response_format": ("url", "b64_json"),
    "background": ("transparent", "opaque", "auto"),
    "output_format": ("png", "jpeg", "webp"),
    "moderation": ("low", "auto"),
}


def _listing(values: tuple[str, ...]) -> str:
    quoted = [f"'{v}'" for v in values]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + f", and {quoted[-1]}"


def _invalid(value: Any, allowed: tuple[str, ...], param: str) -> SimError:
    return SimError(
        400, f"Invalid value: '{value}'. Supported values are: {_listing(allowed)}.", param=param, code="invalid_value"
    )


@dataclass
class Request:
    """A checked image generation request."""

    prompt: str
    model: str
    n: int
    size: str
    quality: str
    style: str | None
    response_format: str  # "url" or "b64_json"
    output_format: str = "png"
    background: str = "auto"

    def image_id(self, i: int) -> str:
        key = f"{self.model}|{self.size}|{self.quality}|{self.style}|{self.prompt}#{i}"
        return hashlib.sha256(key.encode()).hexdigest()[:24]


def parse(body: dict[str, Any]) -> Request:
    """Check `body` as the real endpoint does for its model (400 naming `param`); the parsed request."""
    model = body.get("model") or "dall-e-2"
    if not isinstance(model, str) or model not in MODELS:
        raise _invalid(model, MODELS, "model")
    if model == "gpt-image-1" and "response_format" in body:
        raise SimError(400, "Unknown parameter: 'response_format'.", param="response_format", code="unknown_parameter")
    params.check(body, FIELDS)
    prompt = body.get("prompt")
    if prompt is None:
        raise SimError(400, "Missing required parameter: 'prompt'.", param="prompt", code="missing_required_parameter")
    if not prompt:
        raise SimError(
            400,
            "Invalid 'prompt': string too short. Expected a string with minimum length 1, but got "
            "an empty string instead.",
            param="prompt",
            code="string_below_min_length",
        )
    if len(prompt) > PROMPT_MAX[model]:
        raise SimError(
            400,
            f"Invalid 'prompt': string too long. Expected a string with maximum length "
            f"{PROMPT_MAX[model]}, but got a string with length {len(prompt)} instead.",
            param="prompt",
            code="string_above_max_length",
        )
    n = body.get("n") or 1
    if model == "dall-e-3" and n > 1:
        raise SimError(
            400,
            f"Invalid 'n': integer above maximum value. Expected a value <= 1, but got {n} instead.",
            param="n",
            code="integer_above_max_value",
        )
    size = body.get("size") or ("auto" if model == "gpt-image-1" else "1024x1024")
    if size not in SIZES[model]:
        raise _invalid(size, SIZES[model], "size")
    quality = body.get("quality") or ("auto" if model == "gpt-image-1" else "standard")
    if quality not in QUALITIES[model]:
        raise _invalid(quality, QUALITIES[model], "quality")
    if body.get("style") is not None and model != "dall-e-3":
        raise SimError(
            400,
            f"The 'style' parameter is only supported for dall-e-3, not {model}.",
            param="style",
            code="invalid_value",
        )
    if model != "gpt-image-1":
        for name in _GPT_IMAGE_ONLY:
            if body.get(name) is not None:
                raise SimError(
                    400, f"The '{name}' parameter is only supported for gpt-image-1.", param=name, code="invalid_value"
                )
    for name, allowed in _CHOICES.items():
        v = body.get(name)
        if v is not None and v not in allowed:
            raise _invalid(v, allowed, name)
    if body.get("stream"):
        raise SimError(400, "Streaming image generation is not supported by the simulator.", param="stream")
    fmt = "b64_json" if model == "gpt-image-1" else body.get("response_format") or "url"
    return Request(
        prompt,
        model,
        n,
        size,
        quality,
        body.get("style"),
        fmt,
        body.get("output_format") or "png",
        body.get("background") or "auto",
    )


def png(seed: str, side: int = 8) -> bytes:
    """A valid side x side RGB PNG: a checkerboard of two colours taken from `seed`."""
    d = hashlib.sha256(seed.encode()).digest()
    a, b = d[:3], d[3:6]
    rows = b"".join(b"\x00" + b"".join(a if (x + y) % 2 else b for x in range(side)) for y in range(side))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def response(req: Request, base_url: str) -> dict[str, Any]:
    """The answer: `url`s under `base_url` (served by the simulator) or `b64_json`; usage for gpt-image-1."""
    data = []
    for i in range(req.n):
        image_id = req.image_id(i)
        item: dict[str, Any]
        if req.response_format == "b64_json":
            item = {"b64_json": base64.b64encode(png(image_id)).decode()}
        else:
            item = {"url": f"{base_url}/v1/sim-files/{image_id}.png"}
        if req.model == "dall-e-3":
            item["revised_prompt"] = f"A detailed picture of {req.prompt}"
        data.append(item)
    out: dict[str, Any] = {"created": int(time.time()), "data": data}
    if req.model == "gpt-image-1":
        text_tokens = max(1, len(req.prompt) // 4)
        per_image = {"low": 272, "medium": 1056, "high": 4160, "auto": 1056}[req.quality]
        out.update(
            background="transparent" if req.background == "transparent" else "opaque",
            output_format=req.output_format,
            quality=req.quality if req.quality != "auto" else "medium",
            size=req.size if req.size != "auto" else "1024x1024",
            usage={
                "input_tokens": text_tokens,
                "output_tokens": per_image * req.n,
                "total_tokens": text_tokens + per_image * req.n,
                "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": 0},
            },
        )
    return out


class ImageLimits:
    """Images per rolling window per key (`ipm`): a request of n images needs n free places; a refused
    request counts nothing."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._by_key: dict[str | None, deque[tuple[float, int]]] = {}

    def used(self, key: str | None, now: float) -> int:
        q = self._by_key.setdefault(key, deque())
        while q and q[0][0] <= now - self.window_s:
            q.popleft()
        return sum(n for _, n in q)

    def try_admit(self, key: str | None, now: float, n: int, limit: int | None) -> int | None:
        """Count `n` images for `key`; None if admitted, else the images already used in the window."""
        if limit is None or n <= 0:
            return None
        used = self.used(key, now)
        if used + n > limit:
            return used
        self._by_key[key].append((now, n))
        return None


def ipm_error(limit: int, used: int, requested: int, masked_key: str) -> SimError:
    return SimError(
        429,
        f"Rate limit reached for images per min (IPM): Limit {limit}, Used {used}, Requested {requested} on key "
        f"{masked_key}. Please try again later.",
        "rate_limit_exceeded",
        "rate_limit_exceeded",
    )
