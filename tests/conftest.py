"""Shared fixtures: a simulator on loopback, and small jobs pointed at it."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from pipeline.executor import RunOptions, RunSummary, execute
from pipeline.plan import build_plan
from pipeline.sim import SimConfig, SimulatorThread

SIM_KEY_ENV = "PIPELINE_TEST_KEY"


@pytest.fixture
def sim_factory() -> Iterator[Any]:
    started: list[SimulatorThread] = []

    def make(**cfg: Any) -> SimulatorThread:
        s = SimulatorThread(SimConfig(**cfg))
        s.start()
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


@pytest.fixture
def sim(sim_factory: Any) -> SimulatorThread:
    return sim_factory()


@pytest.fixture(autouse=True)
def _test_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SIM_KEY_ENV, "test-key")


def reviews(n: int) -> pl.DataFrame:
    moods = ["I love it, great value", "Terrible, it broke in a day", "It is fine I guess", "这个产品很好，我很喜欢"]
    return pl.DataFrame(
        {"review_id": [f"r{i:05d}" for i in range(n)], "text": [f"{moods[i % 4]} (#{i})" for i in range(n)]}
    )


def write_job(
    tmp_path: Path,
    url: str,
    *,
    rows: int = 20,
    limits: str = "{rpm: 100000, tpm: 100000000, concurrency: 50}",
    extra: str = "",
    retry: str = "{max_attempts: 6, backoff_base_s: 0.01, backoff_cap_s: 0.05}",
    data: pl.DataFrame | None = None,
    fallback: str = "[]",
    timeout: float = 10,
) -> Path:
    df = data if data is not None else reviews(rows)
    df.write_csv(tmp_path / "reviews.csv")
    job = tmp_path / "job.yaml"
    job.write_text(
        textwrap.dedent(
            f"""\
            version: 1
            name: test-job
            providers:
              local:
                base_url: {url}
                fallback_urls: {fallback}
                api_key_env: {SIM_KEY_ENV}
                limits: {limits}
                timeout_s: {timeout}
            input:
              path: {tmp_path / "reviews.csv"}
              id: review_id
            steps:
              - name: label
                kind: chat
                provider: local
                model: gpt-4o-mini
                messages:
                  - {{role: system, content: "Label the sentiment: positive, negative or neutral."}}
                  - {{role: user, content: "Review: {{{{ row.text }}}}"}}
                params: {{temperature: 0, max_tokens: 5}}
            output:
              path: {tmp_path / "out" / "labeled.parquet"}
            cache: {{dir: {tmp_path / "cache"}}}
            retry: {retry}
            {extra}
            """
        )
    )
    return job


def run_job(job: Path, **opts: Any) -> RunSummary:
    plan = build_plan(job)
    return asyncio.run(execute(plan, RunOptions(**opts)))


def take_over_logs(cache_dir: Path) -> None:
    """Move a killed run's answers still in its answer log into the cache's store, as the next run's
    cache does when it opens, so that reading the store with diskcache finds every answer it stored."""
    from pipeline.cache import ResponseCache

    ResponseCache(cache_dir).close()


def output(job_dir: Path) -> pl.DataFrame:
    return pl.read_parquet(job_dir / "out" / "labeled.parquet")


def peak_in_flight(records: list[Any]) -> int:
    """The most requests of a simulator's record that were open at once."""
    events = sorted([(r.t_start, 1) for r in records] + [(r.t_end, -1) for r in records])
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak
