"""The simulator playing real servers' limits: per-second windows, lower real limits, x-ratelimit-*
headers, Retry-After on limit 429s, LiteLLM's max_parallel_requests; and a run through the last one."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import polars as pl

from pipeline.sim import KeyLimits
from pipeline.sim.limits import fmt_duration

try:
    from tests.conftest import output, run_job, write_job
except ModuleNotFoundError:  # tests/ collected as plain directory
    from conftest import output, run_job, write_job  # type: ignore[no-redef]

HEADERS = {"Authorization": "Bearer k"}
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


async def _post(url: str, n: int) -> list[tuple[int, Any, Any]]:
    async with aiohttp.ClientSession() as http:

        async def one() -> tuple[int, Any, Any]:
            async with http.post(url + "/chat/completions", json=BODY, headers=HEADERS) as r:
                return r.status, r.headers.copy(), await r.json()

        return list(await asyncio.gather(*(one() for _ in range(n))))


def test_per_second_enforcement_scale_headers_and_retry_after(sim_factory: Any) -> None:
    # 240 per minute enforced per second at half: 2 a second
    sim = sim_factory(
        default_limits=KeyLimits(rpm=240), limit_period_s=1, limit_scale=0.5, rate_headers=True, limit_retry_after=True
    )
    answers = asyncio.run(_post(sim.url, 3))
    assert sorted(s for s, _, _ in answers) == [200, 200, 429]
    ok = next(h for s, h, _ in answers if s == 200)
    assert ok["x-ratelimit-limit-requests"] == "120"  # per minute, as OpenAI reports it
    refused, body = next((h, b) for s, h, b in answers if s == 429)
    assert 0 < int(refused["retry-after-ms"]) <= 1000 and refused["retry-after"] == "1"
    assert refused["x-ratelimit-remaining-requests"] == "0"
    assert "per 1s" in body["error"]["message"]
    assert [fmt_duration(x) for x in (0.0201, 1, 1.5, 360)] == ["21ms", "1s", "1.5s", "6m0s"]


def test_litellm_max_parallel_requests(sim_factory: Any) -> None:
    sim = sim_factory(max_parallel_requests=1, latency_s=0.2)
    answers = asyncio.run(_post(sim.url, 3))
    assert sorted(s for s, _, _ in answers) == [200, 429, 429]
    _, headers, body = next(a for a in answers if a[0] == 429)
    assert headers["retry-after"] == "60"
    assert body["error"]["code"] == "429" and "Limit type: max_parallel_requests" in body["error"]["message"]


def test_run_behind_a_parallel_request_limit_lowers_concurrency(tmp_path: Path, sim_factory: Any) -> None:
    # issue 14: 429s for parallel requests spend no attempt, and the gate sends fewer at once
    sim = sim_factory(max_parallel_requests=2, latency_s=0.05)
    job = write_job(
        tmp_path,
        sim.url,
        rows=30,
        limits="{rpm: 100000, tpm: 100000000, concurrency: 8}",
        retry="{max_attempts: 1, backoff_base_s: 0.01, backoff_cap_s: 0.05}",
    )
    summary = run_job(job)
    df = output(tmp_path)
    assert df["label__status"].to_list() == ["ok"] * 30
    assert df["label__attempts"].to_list() == [1] * 30
    records = [r for r in sim.records if r.path.endswith("/chat/completions")]
    refused = [r for r in records if r.status == 429]
    assert refused, "the run never hit the parallel limit: the test shows nothing"
    assert summary.stats.rate_limited == len(refused)
    gate = summary.limits["local"]
    assert gate.concurrency is not None and gate.concurrency <= 2
    # after the cap came down, nothing more was refused: the last 429 is among the first requests
    last_refusal = max(r.seq for r in refused)
    assert last_refusal < min(r.seq for r in records) + 20
    assert isinstance(df, pl.DataFrame)
