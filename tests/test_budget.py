"""Costs and the budget: per-row cost columns, a run that stops before its budget, and one that continues."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from pipeline.budget import MARK, BudgetReached, Spend
from pipeline.cli import app
from pipeline.errors import JobError

from .conftest import output, run_job, write_job

runner = CliRunner()
# one cent per token, prompt or completion: a request of ~30 tokens costs ~$0.30
PRICES = "prices: {gpt-4o-mini: {input: 10000, output: 10000}}"


def paid(sim: Any) -> float:
    """What the simulator answered, at the test's prices."""
    return sum((r.prompt_tokens + r.completion_tokens) * 0.01 for r in sim.records if r.status == 200)


def test_spend_holds_the_worst_case_and_settles_to_the_actual() -> None:
    s = Spend(1.0)
    a = s.hold(0.6)
    with pytest.raises(BudgetReached):
        s.hold(0.5)  # 0.6 held + 0.5 would cross 1.0
    s.settle(a, 0.2)  # the answer cost less than its worst case: room again
    assert s.spent == pytest.approx(0.2) and s.held == 0
    b = s.hold(0.5)
    s.settle(b, None)  # lost on the way: counted at its worst
    assert s.total == pytest.approx(0.7)
    c = s.hold(0.3)
    s.settle(c, 0.0)  # refused by the server: not billed
    assert s.total == pytest.approx(0.7) and s.refused == 1
    assert Spend(None).hold(100.0) is None  # no budget: nothing held, nothing refused


def test_rows_carry_their_cost(tmp_path: Path, sim: Any) -> None:
    job = write_job(tmp_path, sim.url, rows=10, extra=PRICES)
    summary = run_job(job)
    df = output(tmp_path)
    expected = (df["label__prompt_tokens"] + df["label__completion_tokens"]) * 0.01
    assert (df["label__cost"] - expected).abs().max() < 1e-9  # type: ignore[operator]
    assert summary.cost_usd == pytest.approx(paid(sim))


def test_budget_runs_out_mid_run_never_crossed_then_a_rerun_continues(tmp_path: Path, sim: Any) -> None:
    job = write_job(tmp_path, sim.url, rows=60, extra=PRICES, limits="{rpm: 100000, tpm: 100000000, concurrency: 20}")
    res = runner.invoke(app, ["run", str(job), "--max-cost", "4.00"])
    assert res.exit_code == 4, res.output
    assert "budget reached" in res.output and "--max-cost" in res.output
    spent = paid(sim)
    assert 0 < spent <= 4.00  # stopped before the budget, never after, with 20 requests in flight
    df = output(tmp_path)  # the output is written, every row in it
    assert df.height == 60
    unsent = df.filter(pl.col("label__error").str.contains(MARK))
    ok = df.filter(pl.col("label__status") == "ok")
    assert unsent.height > 0 and ok.height > 0 and unsent.height + ok.height == 60
    assert (unsent["label__attempts"] == 0).all()
    assert df["label__cost"].sum() == pytest.approx(spent)
    answered = {r.body["messages"][1]["content"] for r in sim.records if r.status == 200}
    assert len(answered) == ok.height

    # a higher budget: only the rows not sent go out, and the job's total stays under it
    before = len(sim.records)
    res = runner.invoke(app, ["run", str(job), "--max-cost", "100"])
    assert res.exit_code == 0, res.output
    again = [r.body["messages"][1]["content"] for r in sim.records[before:]]
    assert not set(again) & answered and len(again) == unsent.height
    df = output(tmp_path)
    assert set(df["label__status"]) == {"ok"} and df["label__cost"].sum() == pytest.approx(paid(sim))


def test_budget_in_the_job_needs_every_price(tmp_path: Path, sim: Any) -> None:
    job = write_job(tmp_path, sim.url, rows=3, extra="budget: {max_cost_usd: 1}")
    assert run_job(job).budget_usd == 1  # gpt-4o-mini is priced by the shipped table
    job.write_text(job.read_text() + "prices: {gpt-4o-mini: {input: 1}}\n")
    with pytest.raises(JobError, match="none known for step `label` \\(model gpt-4o-mini: output\\)"):
        run_job(job)
    job.write_text(job.read_text().replace("model: gpt-4o-mini", "model: my-local-model"))
    with pytest.raises(JobError, match="model my-local-model: input, output"):
        run_job(job)
    assert sim.records == [] or all(r.status == 200 for r in sim.records)


def test_cached_prompt_tokens_are_priced_at_the_cached_rate(tmp_path: Path, sim_factory: Any) -> None:
    """usage.prompt_tokens_details.cached_tokens (chat) / input_tokens_details.cached_tokens (Responses):
    those prompt tokens cost the table's cached-input rate, per row and in the run's spend."""
    from .test_responses_api import label_job

    sim = sim_factory(cached_prompt_share=0.5)  # half of every prompt reported as served from the cache
    prices = "prices: {gpt-4o-mini: {input: 10000, output: 10000, cached_input: 1000}}\n"

    def billed(records: list[Any]) -> float:
        return sum(
            (r.prompt_tokens - r.prompt_tokens // 2) * 0.01
            + (r.prompt_tokens // 2) * 0.001
            + r.completion_tokens * 0.01
            for r in records
            if r.status == 200
        )

    job = write_job(tmp_path, sim.url, rows=10, extra=prices)
    summary = run_job(job)
    df = output(tmp_path)
    cached = df["label__prompt_tokens"] // 2
    expected = (df["label__prompt_tokens"] - cached) * 0.01 + cached * 0.001 + df["label__completion_tokens"] * 0.01
    assert (df["label__cost"] - expected).abs().max() < 1e-9  # type: ignore[operator]
    assert summary.cost_usd == pytest.approx(billed(sim.records)) and summary.cost_usd < paid(sim)

    for api in ("responses", "chat"):  # the Responses API reports them under input_tokens_details
        before = len(sim.records)
        job = label_job(tmp_path, sim.url, api, rows=4)
        job.write_text(job.read_text() + prices)
        summary = run_job(job)
        assert summary.cost_usd == pytest.approx(billed(sim.records[before:]))
        out = pl.read_parquet(tmp_path / f"out_{api}.parquet")
        cached = out["analysis__prompt_tokens"] // 2
        expected = (
            (out["analysis__prompt_tokens"] - cached) * 0.01
            + cached * 0.001
            + out["analysis__completion_tokens"] * 0.01
        )
        assert (out["analysis__cost"] - expected).abs().max() < 1e-9  # type: ignore[operator]
