"""End to end against the simulator over loopback, asserting on what the simulator recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from pipeline.sim import FaultRule, sim_chat_text
from pipeline.sim.config import KeyLimits

from .conftest import output, reviews, run_job, write_job
from .loopsim import LoopSim, run_job_virtual


def chat_records(sim: Any) -> list[Any]:
    return [r for r in sim.records if r.path.endswith("/chat/completions")]


def test_all_rows_ok_in_input_order(tmp_path: Path, sim: Any) -> None:
    job = write_job(tmp_path, sim.url, rows=40)
    summary = run_job(job)
    df = output(tmp_path)
    assert df.height == 40 and summary.failed_rows == 0
    assert df["review_id"].to_list() == reviews(40)["review_id"].to_list()
    assert set(df["label__status"]) == {"ok"}
    assert df.columns[:2] == ["review_id", "text"]
    for col in [
        "label",
        "label__error",
        "label__attempts",
        "label__prompt_tokens",
        "label__completion_tokens",
        "label__cached",
        "label__finish_reason",
    ]:
        assert col in df.columns
    # each row got the answer to its own prompt
    for rec in chat_records(sim):
        text = rec.body["messages"][1]["content"].removeprefix("Review: ")
        row = df.filter(pl.col("text") == text)
        assert row["label"][0] == sim_chat_text(rec.body["messages"])[: len(row["label"][0])]
    assert len(chat_records(sim)) == 40
    assert (df["label__prompt_tokens"] > 0).all()


def test_second_run_sends_nothing_and_writes_same_output(tmp_path: Path, sim: Any) -> None:
    job = write_job(tmp_path, sim.url, rows=30)
    run_job(job)
    first = output(tmp_path)
    n = len(sim.records)
    summary = run_job(job)
    assert len(sim.records) == n, "a finished job must not send again"
    assert summary.rows_resumed == 30
    assert output(tmp_path).equals(first)
    # starting over: every answer comes from the cache, still zero requests
    summary = run_job(job, fresh=True)
    assert len(sim.records) == n
    assert summary.stats.cache_hits == 30
    again = output(tmp_path)
    volatile = ["label__cached", "label__attempts"]  # how the answer was obtained this time
    assert again.drop(volatile).equals(first.drop(volatile))
    assert again["label__cached"].all() and (again["label__attempts"] == 0).all()


def _peak_in_flight(recs: list[Any]) -> int:
    events = sorted([(r.t_start, 1) for r in recs] + [(r.t_end, -1) for r in recs], key=lambda e: (e[0], e[1]))
    level = peak = 0
    for _, d in events:
        level += d
        peak = max(peak, level)
    return peak


def test_rate_and_concurrency_limits_hold(tmp_path: Path) -> None:
    # on the loop clock (tests/loopsim.py): the server's windows and ours are one clock, whatever the load
    rpm, conc, period = 30, 4, 1.0
    sim = LoopSim(KeyLimits(rpm=rpm, concurrency=conc), window_s=period, latency_s=0.1)
    job = write_job(
        tmp_path, "http://127.0.0.1:9/v1", rows=90, limits=f"{{rpm: {rpm}, concurrency: {conc}, period_s: {period}}}"
    )
    summary = run_job_virtual(job, sim)
    recs = sim.records
    assert summary.failed_rows == 0 and len(recs) == 90
    assert [r for r in recs if r.status == 429] == []
    starts = sorted(r.t_start for r in recs)
    for i, t in enumerate(starts):
        in_window = sum(1 for u in starts[i:] if u < t + period)
        assert in_window <= rpm, f"{in_window} request starts within {period}s of t={t - starts[0]:.3f}"
    assert _peak_in_flight(recs) <= conc
    # the limits were the ceiling, not something else: ~rpm per period once started
    span = starts[-1] - starts[0]
    assert len(starts) / max(span, 1e-9) >= 0.8 * rpm / period


def test_concurrency_limit_holds_over_sockets(tmp_path: Path, sim_factory: Any) -> None:
    # The same run over loopback: the server counts what is in flight on its side, so no clock is compared.
    conc = 4
    sim = sim_factory(default_limits={"concurrency": conc}, latency_s=0.02)
    job = write_job(tmp_path, sim.url, rows=30, limits=f"{{concurrency: {conc}}}")
    summary = run_job(job)
    recs = chat_records(sim)
    assert summary.failed_rows == 0 and len(recs) == 30
    assert [r for r in recs if r.status == 429] == []
    assert _peak_in_flight(recs) <= conc


def test_429_storms_end_with_every_row_ok(tmp_path: Path) -> None:
    # on the loop clock: the gate's pauses without Retry-After (1, 2, 4 ... s) cost no wall time
    sim = LoopSim(
        faults=[
            FaultRule(kind="rate_limit", first=15, retry_after=0.2),
            FaultRule(kind="empty_429", every=3, times=12),
        ]
    )
    job = write_job(tmp_path, "http://127.0.0.1:9/v1", rows=30)
    summary = run_job_virtual(job, sim)
    df = output(tmp_path)
    assert set(df["label__status"]) == {"ok"}
    assert summary.stats.rate_limited >= 15
    assert sum(1 for r in sim.records if r.status == 429) >= 15


def test_transient_faults_are_retried(tmp_path: Path, sim: Any) -> None:
    sim.set_faults(
        [
            FaultRule(kind="status", status=502, every=4, times=5),
            FaultRule(kind="reset", every=5, times=3),
            FaultRule(kind="malformed_json", every=6, times=3),
            FaultRule(kind="error_in_200", every=7, times=2),
            FaultRule(kind="hang", first=1, hang_s=30),
        ]
    )
    job = write_job(tmp_path, sim.url, rows=30, timeout=1)
    summary = run_job(job)
    df = output(tmp_path)
    assert set(df["label__status"]) == {"ok"}, df.filter(pl.col("label__status") != "ok")["label__error"].to_list()
    assert summary.stats.retries >= 10
    assert df["label__attempts"].max() >= 2


def test_bad_request_fails_only_that_row(tmp_path: Path, sim: Any) -> None:
    sim.set_faults(
        [
            FaultRule(
                kind="status",
                status=400,
                error_type="invalid_request_error",
                error_code="context_length_exceeded",
                when_contains="#7)",
            )
        ]
    )
    job = write_job(tmp_path, sim.url, rows=20)
    summary = run_job(job)
    df = output(tmp_path)
    bad = df.filter(pl.col("label__status") == "error")
    assert bad["review_id"].to_list() == ["r00007"]
    assert "HTTP 400 context_length_exceeded" in bad["label__error"][0]
    assert "(request id: sim-" in bad["label__error"][0]
    assert bad["label__attempts"][0] == 1
    assert summary.failed_rows == 1


def test_failover_to_backup_url(tmp_path: Path, sim: Any) -> None:
    job = write_job(tmp_path, "http://127.0.0.1:9/v1", rows=10, fallback=f"[{sim.url}]")
    run_job(job)
    assert set(output(tmp_path)["label__status"]) == {"ok"}
    assert len(chat_records(sim)) == 10


def test_null_input_is_skipped_not_sent(tmp_path: Path, sim: Any) -> None:
    data = reviews(5).with_columns(
        pl.when(pl.col("review_id") == "r00002").then(None).otherwise(pl.col("text")).alias("text")
    )
    job = write_job(tmp_path, sim.url, data=data)
    run_job(job)
    df = output(tmp_path)
    row = df.filter(pl.col("review_id") == "r00002")
    assert row["label__status"][0] == "skipped" and "`text` is null" in row["label__error"][0]
    assert len(chat_records(sim)) == 4
