"""ProviderClient on a virtual clock: retries, backoff, Retry-After, 429 slow-down, probe, give-up."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from pipeline.cache import NoCache
from pipeline.calls import CallError, ProviderClient, RunStats
from pipeline.endpoints.base import load_json
from pipeline.errors import ConnectError, FatalError, TransientError
from pipeline.job.model import Retry
from pipeline.limits import AdmissionGate
from pipeline.records import Parsed, Usage
from pipeline.transport import HttpRequest, HttpResponse

try:
    from tests.fakeclock import run_virtual, virtual_time
except ImportError:  # pragma: no cover
    from fakeclock import run_virtual, virtual_time  # type: ignore[no-redef]

OK = json.dumps(
    {"choices": [{"message": {"content": "hi"}}], "usage": {"prompt_tokens": 7, "completion_tokens": 1}}
).encode()


def err(status: int, code: str | None = None) -> bytes:
    return json.dumps({"error": {"message": f"failure {status}", "type": code, "code": code}}).encode()


@dataclass
class FakeTransport:
    """Answers from a script; records the virtual time of every send."""

    script: list[Any]
    sent: list[float] = field(default_factory=list)

    async def send(self, req: HttpRequest) -> HttpResponse:
        self.sent.append(virtual_time())
        step = self.script.pop(0) if self.script else (200, OK, {})
        if isinstance(step, Exception):
            raise step
        status, body, headers = step
        return HttpResponse(status, body, headers)


def parse(body: bytes) -> Parsed:
    obj = load_json(body)
    return Parsed({"text": obj["choices"][0]["message"]["content"]}, Usage(obj["usage"]["prompt_tokens"], 1))


def client(script: list[Any], *, attempts: int = 6, rpm: int | None = None) -> tuple[ProviderClient, FakeTransport]:
    t = FakeTransport(list(script))
    gate = AdmissionGate(rpm=rpm, tpm=None, concurrency=4)
    c = ProviderClient(
        t,
        gate,
        NoCache(),
        Retry(max_attempts=attempts, backoff_base_s=1, backoff_cap_s=60),
        RunStats(),
        rng=random.Random(1),
    )
    return c, t


def call(c: ProviderClient) -> Any:
    return c.call(HttpRequest("/chat/completions", json_body={}), tokens=10, cache_key=None, parse=parse)


def run(make: Callable[[], Any]) -> Any:
    async def main() -> Any:
        return await make()

    return run_virtual(main())


def test_transient_errors_retry_with_growing_jittered_backoff() -> None:
    c, t = client([(500, err(500), {}), (502, b"bad gateway", {}), TransientError("reset"), (200, OK, {})])
    reply = run(lambda: call(c))
    assert reply.attempts == 4 and reply.parsed.values == {"text": "hi"}
    gaps = [b - a for a, b in zip(t.sent, t.sent[1:], strict=False)]
    assert [g <= cap for g, cap in zip(gaps, [1, 2, 4], strict=True)] == [True, True, True]
    assert c.stats.retries == 3


def test_retry_after_on_5xx_is_honoured() -> None:
    c, t = client([(503, err(503), {"Retry-After": "30"}), (200, OK, {})])
    run(lambda: call(c))
    assert t.sent[1] - t.sent[0] >= 30


def test_429_pauses_the_provider_for_retry_after() -> None:
    c, t = client([(429, err(429, "rate_limit_exceeded"), {"Retry-After": "20"}), (200, OK, {})])
    run(lambda: call(c))
    assert t.sent[1] - t.sent[0] >= 20
    assert c.stats.rate_limited == 1
    assert c.gate.stats().rate_factor < 1.0


def test_429_storm_without_retry_after_slows_everyone() -> None:
    c, t = client([(429, b"", {})] * 3 + [(200, OK, {})] * 20, rpm=600)

    async def many() -> list[Any]:
        import asyncio

        return await asyncio.gather(*(call(c) for _ in range(20)))

    replies = run(many)
    assert all(r.parsed.values == {"text": "hi"} for r in replies)
    # after the first 429 nobody is sent until the pause is over
    first_429 = t.sent[0]
    assert all(s == first_429 or s >= first_429 + 1 for s in t.sent[1:])


def test_gives_up_after_max_attempts() -> None:
    c, t = client([(500, err(500), {})] * 10, attempts=3)
    with pytest.raises(CallError) as e:
        run(lambda: call(c))
    assert e.value.attempts == 3 and len(t.sent) == 3
    assert e.value.error.status == 500


def test_bad_request_is_not_retried() -> None:
    c, t = client([(400, err(400, "invalid_request_error"), {})])
    with pytest.raises(CallError) as e:
        run(lambda: call(c))
    assert e.value.attempts == 1 and len(t.sent) == 1


def test_fatal_error_stops_every_caller_after_one_request() -> None:
    c, t = client([(401, err(401, "invalid_api_key"), {})] + [(200, OK, {})] * 10)

    async def many() -> list[Any]:
        import asyncio

        return await asyncio.gather(*(call(c) for _ in range(10)), return_exceptions=True)

    results = run(many)
    assert all(isinstance(r, FatalError) for r in results)
    assert len(t.sent) == 1


def test_malformed_200_is_retried() -> None:
    c, t = client([(200, b'{"choices": [', {}), (200, OK, {})])
    assert run(lambda: call(c)).attempts == 2


def test_connect_error_is_retried() -> None:
    c, t = client([ConnectError("refused"), (200, OK, {})])
    assert run(lambda: call(c)).attempts == 2


def test_request_bigger_than_budget_fails_at_once() -> None:
    t = FakeTransport([])
    gate = AdmissionGate(rpm=None, tpm=1000, concurrency=4)
    c = ProviderClient(t, gate, NoCache(), Retry(), RunStats())

    async def big() -> Any:
        return await c.call(HttpRequest("/x", json_body={}), tokens=5000, cache_key=None, parse=parse)

    with pytest.raises(CallError, match="5000 tokens"):
        run(big)
    assert t.sent == []
