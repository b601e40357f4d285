"""Error classification by status and body, Retry-After parsing, backoff bounds."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import ConnectError, FatalError, RateLimited, RowError, TransientError
from pipeline.retry import backoff_delay, classify, parse_retry_after


def body(code: str | None = None, type_: str | None = None, message: str = "m") -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "code": code, "param": None}}).encode()


@pytest.mark.parametrize(
    ("status", "payload", "cls"),
    [
        (429, body("rate_limit_exceeded"), RateLimited),
        (429, b"", RateLimited),
        (429, body(type_="new_api_error"), RateLimited),
        (429, body("insufficient_quota"), FatalError),
        (401, body("invalid_api_key"), FatalError),
        (403, body(type_="insufficient_user_quota"), FatalError),
        (404, body("model_not_found"), FatalError),
        (400, body("context_length_exceeded"), RowError),
        (413, b"too big", RowError),
        (422, b'{"detail":[{"msg":"bad"}]}', RowError),
        (500, b"Internal Server Error", TransientError),
        (502, b"<html>bad gateway</html>", TransientError),
        (524, b"", TransientError),
        (408, b"", TransientError),
        (200, body("server_error", "upstream_error"), TransientError),
        (200, body("rate_limit_exceeded"), RateLimited),
        (200, body("insufficient_quota"), FatalError),
    ],
)
def test_classify(status: int, payload: bytes, cls: type) -> None:
    err = classify(status, payload, {})
    assert type(err) is cls
    assert err.status == status


def test_request_id_kept_in_message() -> None:
    err = classify(500, body(message="upstream failed (request id: 2024abc)"), {})
    assert "(request id: 2024abc)" in err.short()
    assert err.short().startswith("HTTP 500")


def test_remapped_status_classified_by_code() -> None:
    # a gateway that shows an upstream "model not found" as 429 must not be retried forever
    assert isinstance(classify(429, body("model_not_found"), {}), FatalError)


def test_retry_after_parsing() -> None:
    assert parse_retry_after({"Retry-After": "7"}) == 7
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"llm_provider-retry-after": "60"}) == 60
    assert parse_retry_after({}) is None
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({"Retry-After": "-3"}) is None
    err = classify(429, b"", {"Retry-After": "2"})
    assert isinstance(err, RateLimited) and err.retry_after == 2


@given(st.integers(min_value=1, max_value=40), st.integers(min_value=0, max_value=2**32))
def test_backoff_bounds(attempt: int, seed: int) -> None:
    d = backoff_delay(attempt, base=1.0, cap=60.0, rng=random.Random(seed))
    assert 0 <= d <= min(60.0, 2 ** (attempt - 1))


def test_error_tree_retryability() -> None:
    assert RateLimited("x").retryable and TransientError("x").retryable and ConnectError("x").retryable
    assert not RowError("x").retryable and not FatalError("x").retryable
