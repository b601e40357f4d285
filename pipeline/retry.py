"""Pure failure policy: map a server's answer to an error class, and compute how long to wait."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

from .errors import (
    ConcurrencyLimited,
    FatalError,
    RateLimited,
    RequestError,
    RowError,
    TransientError,
)

# Codes/types that mean "your account or job is wrong": stop, do not retry (API_FACTS.md, Errors).
_FATAL_CODES = frozenset(
    {
        "insufficient_quota",
        "insufficient_user_quota",
        "invalid_api_key",
        "account_deactivated",
        "billing_hard_limit_reached",
        "model_not_found",
        "access_terminated",
        "pre_consume_token_quota_failed",
    }
)
_RATE_CODES = frozenset({"rate_limit_exceeded", "new_api_error", "one_api_error", "requests", "tokens"})
# Unknown-model answers that carry no `model_not_found` code: LiteLLM ("Invalid model name passed in
# model=x", code "400"), vLLM ("The model `x` does not exist."), Ollama ('model "x" not found').
_MODEL_NOT_FOUND = re.compile(
    r"invalid model name passed in model\s*=|the model [`'\"]?[^`'\"]*[`'\"]? does not exist"
    r"|\bmodel [`'\"][^`'\"]+[`'\"] not found|\bmodel_not_found\b",
    re.IGNORECASE,
)
_TRANSIENT_STATUS = frozenset({408, 409, 425, 500, 502, 503, 504, 520, 521, 522, 523, 524, 529})
_ROW_STATUS = frozenset({400, 404, 405, 413, 415, 422})


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from Retry-After-like headers, or None when the server gave none.

    Accepts `retry-after-ms`, `retry-after` (seconds or an HTTP date) and LiteLLM's
    `llm_provider-retry-after`. Negative or absurd values are ignored.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms is not None:
        try:
            value = float(raw_ms) / 1000.0
            if 0 <= value <= 3600:
                return value
        except ValueError:
            pass
    for name in ("retry-after", "llm_provider-retry-after"):
        raw = lowered.get(name)
        if raw is None:
            continue
        try:
            value = float(raw)
        except ValueError:
            try:
                when = parsedate_to_datetime(raw)
            except (TypeError, ValueError):
                continue
            from datetime import datetime

            value = (when - datetime.now(UTC)).total_seconds()
        if 0 <= value <= 3600:
            return value
    return None


def backoff_delay(attempt: int, *, base: float = 1.0, cap: float = 60.0, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**(attempt-1))].

    `attempt` counts failed attempts so far (1 after the first failure).
    """
    upper = min(cap, base * (2 ** max(0, attempt - 1)))
    return (rng or random).uniform(0.0, upper) if upper > 0 else 0.0


def _error_fields(body: Any) -> tuple[str | None, str | None]:
    """(code-or-type, message) from an OpenAI-shaped, FastAPI-shaped or plain body."""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            code = err.get("code") or err.get("type")
            msg = err.get("message")
            # one-api puts the useful code in `type` and a generic one in `code`
            kind = err.get("type")
            code_s = str(code) if code is not None else None
            if isinstance(kind, str) and kind in _RATE_CODES | _FATAL_CODES and code_s not in _FATAL_CODES:
                code_s = kind
            return code_s, str(msg) if msg is not None else json.dumps(err, ensure_ascii=False)[:500]
        if isinstance(err, str):
            return None, err
        detail = body.get("detail")
        if detail is not None:  # FastAPI / infinity
            return None, json.dumps(detail, ensure_ascii=False)[:500] if not isinstance(detail, str) else detail
        msg = body.get("message")
        if isinstance(msg, str):
            return (str(body.get("code")) if body.get("code") is not None else None), msg
    return None, None


def _error_param(body: Any) -> str | None:
    """OpenAI's `error.param`: which request field a 4xx blames (e.g. `input`, `dimensions`)."""
    err = body.get("error") if isinstance(body, dict) else None
    param = err.get("param") if isinstance(err, dict) else None
    return param if isinstance(param, str) and param else None


def classify(status: int, body: bytes, headers: Mapping[str, str]) -> RequestError:
    """Turn a failed HTTP answer (status >= 400, or 200 with an `error` body) into our error class.

    Classification is by status AND body, because gateways remap statuses (an upstream 404 seen as 429)
    and some servers answer errors that are not OpenAI-shaped.
    """
    parsed: Any = None
    text = body.decode("utf-8", errors="replace").strip()
    if text:
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
    code, message = _error_fields(parsed)
    if message is None:
        message = text[:500] if text else "(empty body)"
    retry_after = parse_retry_after(headers)
    if status == 200 and code is not None and code.isdigit() and 400 <= int(code) < 600:
        status = int(code)  # an error inside a 200 (or a stream) carrying its HTTP status (LiteLLM)

    if code in _FATAL_CODES:
        return FatalError(message, status=status, code=code)
    if 400 <= status < 500 and status != 429 and _MODEL_NOT_FOUND.search(message):
        return FatalError(message, status=status, code="model_not_found")
    if status in (401, 403):
        return FatalError(message, status=status, code=code)
    if status == 429 or code in _RATE_CODES:
        if retry_after is None:  # no Retry-After: the reset of the exhausted limit, if the server said
            retry_after = _reset_wait(headers)
        cls = ConcurrencyLimited if _PARALLEL.search(message) else RateLimited
        return cls(message, status=status, code=code or "rate_limit_exceeded", retry_after=retry_after)
    if status in _TRANSIENT_STATUS or status >= 500:
        return TransientError(message, status=status, code=code, retry_after=retry_after)
    if status in _ROW_STATUS or 400 <= status < 500:
        return RowError(message, status=status, code=code, param=_error_param(parsed))
    # 200 with an error body and nothing else to go on: the gateway failed upstream, try again.
    return TransientError(message, status=status, code=code, retry_after=retry_after)


# A 429 about requests in flight rather than per minute: LiteLLM "max_parallel_requests", others
# "too many concurrent requests", "parallel requests".
_PARALLEL = re.compile(r"parallel[ _]requests|concurrent requests|concurrency limit", re.IGNORECASE)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


@dataclass(frozen=True, slots=True)
class RateHeaders:
    """OpenAI-style x-ratelimit-* headers of one answer (limits per minute; resets in seconds)."""

    limit_requests: int | None = None
    limit_tokens: int | None = None
    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    reset_requests_s: float | None = None
    reset_tokens_s: float | None = None


def parse_duration(text: str) -> float | None:
    """Seconds from an OpenAI reset duration (`6m0s`, `1s`, `20ms`, `1h2m3.5s`) or a plain number."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return value if value >= 0 else None
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    return total if pos == len(text) and pos else None


def _int(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        value = int(float(raw))
    except ValueError:
        return None
    return value if value >= 0 else None


def parse_rate_headers(headers: Mapping[str, str]) -> RateHeaders | None:
    """The x-ratelimit-* headers of an answer, or None when it has none."""
    if not hasattr(headers, "getall"):  # a plain dict (tests): aiohttp's headers are case-insensitive
        headers = {k.lower(): v for k, v in headers.items()}
    get = headers.get
    if (
        get("x-ratelimit-limit-requests") is None
        and get("x-ratelimit-limit-tokens") is None
        and get("x-ratelimit-remaining-requests") is None
        and get("x-ratelimit-remaining-tokens") is None
    ):
        return None
    reset_r, reset_t = get("x-ratelimit-reset-requests"), get("x-ratelimit-reset-tokens")
    return RateHeaders(
        limit_requests=_int(get("x-ratelimit-limit-requests")),
        limit_tokens=_int(get("x-ratelimit-limit-tokens")),
        remaining_requests=_int(get("x-ratelimit-remaining-requests")),
        remaining_tokens=_int(get("x-ratelimit-remaining-tokens")),
        reset_requests_s=parse_duration(reset_r) if reset_r is not None else None,
        reset_tokens_s=parse_duration(reset_t) if reset_t is not None else None,
    )


def _reset_wait(headers: Mapping[str, str]) -> float | None:
    """For a 429 without Retry-After: the reset of the limit the server says is exhausted."""
    h = parse_rate_headers(headers)
    if h is None:
        return None
    waits = [
        reset
        for remaining, reset in ((h.remaining_requests, h.reset_requests_s), (h.remaining_tokens, h.reset_tokens_s))
        if remaining == 0 and reset is not None
    ]
    return max(waits) if waits else None
