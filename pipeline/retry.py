"""Pure failure policy: map a server's answer to an error class, and compute how long to wait."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

from .errors import (
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
    if status == 429:
        return RateLimited(message, status=status, code=code or "rate_limit_exceeded", retry_after=retry_after)
    if code in _RATE_CODES:
        return RateLimited(message, status=status, code=code, retry_after=retry_after)
    if status in _TRANSIENT_STATUS or status >= 500:
        return TransientError(message, status=status, code=code, retry_after=retry_after)
    if status in _ROW_STATUS or 400 <= status < 500:
        return RowError(message, status=status, code=code, param=_error_param(parsed))
    # 200 with an error body and nothing else to go on: the gateway failed upstream, try again.
    return TransientError(message, status=status, code=code, retry_after=retry_after)
