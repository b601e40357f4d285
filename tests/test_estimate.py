"""`pipeline estimate`: packed embed requests, observed completions, prices, the --json shape."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.endpoints.embed import BATCH_SHARE
from pipeline.estimate import estimate
from pipeline.plan import build_plan
from pipeline.pricing import Price, PriceTable, default_prices

from .conftest import output, run_job, write_job
from .test_embed import docs, embed_records, write_embed_job

runner = CliRunner()


def test_embed_estimate_counts_packed_requests_as_the_run_sends_them(tmp_path: Path, sim: Any) -> None:
    data = docs(1000)
    # duplicates are sent once; nulls are skipped
    data = data.vstack(data.head(50).with_columns(doc_id=data.head(50)["doc_id"] + "-dup"))
    job = write_embed_job(
        tmp_path, sim.url, data=data, step="batch_size: 64", limits="{rpm: 100000, tpm: 100000000, concurrency: 50}"
    )
    est = estimate(build_plan(job)).steps[0]
    assert est.rows == 1050 and est.cached == 0
    assert est.requests == 16  # ceil(1000 distinct texts / 64), not one per row
    run_job(job)
    sent = [r for r in embed_records(sim) if r.status == 200]
    # the run may close a batch early when rows trickle in (linger), never pack tighter
    assert est.requests <= len(sent) <= est.requests + 3, [r.n_inputs for r in sent]
    assert estimate(build_plan(job)).steps[0].requests == 0  # every row is in the cache now


def test_embed_estimate_packs_by_tokens_under_the_token_budget(tmp_path: Path, sim: Any) -> None:
    # tpm 60,000 per minute: 1,000 tokens a second; a request holds BATCH_SHARE of that (issue 8: a
    # request never holds more than a per-second server allows), and the estimate packs as the run does
    job = write_embed_job(
        tmp_path, sim.url, rows=600, step="batch_size: 2048", limits="{rpm: 100000, tpm: 60000, concurrency: 50}"
    )
    est = estimate(build_plan(job))
    s = est.steps[0]
    assert s.prompt_tokens > 1000
    per_request = BATCH_SHARE * 1000
    assert s.prompt_tokens / per_request <= s.requests <= s.prompt_tokens / per_request * 1.3 + 1
    assert est.binding_limit["local"] == "tokens/min"
    # (the first request goes at once: the budget paces the other n - 1, of the mean request's tokens)
    assert abs(est.minutes - s.prompt_tokens / 60000 * (s.requests - 1) / s.requests) < 1e-6


def test_chat_completions_from_max_tokens_then_from_observed_answers(tmp_path: Path, sim: Any) -> None:
    job = write_job(tmp_path, sim.url, rows=30)
    plan = build_plan(job)
    before = estimate(plan, plan.prices).steps[0]
    assert before.completion_tokens == 30 * 5 and before.completion_basis.startswith("max_tokens")
    assert before.cost is not None and before.cost > 0
    run_job(job)
    df = output(tmp_path)
    # a re-run with the cache cleared: completions counted from what the answers held
    import shutil

    shutil.rmtree(tmp_path / "cache")
    after = estimate(build_plan(job)).steps[0]
    assert after.completion_basis.startswith("observed")
    assert after.completion_tokens == round(float(df["label__completion_tokens"].mean()) * 30)  # type: ignore[arg-type]


def test_estimate_json_has_the_spec_shape(tmp_path: Path, sim: Any) -> None:
    job = write_job(tmp_path, sim.url, rows=12, limits="{rpm: 60, tpm: 1000000, concurrency: 5}")
    prices = tmp_path / "prices.yaml"
    prices.write_text("gpt-4o-mini: {input: 1.0, output: 2.0}\n")
    res = runner.invoke(app, ["estimate", str(job), "--json", "--prices", str(prices)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert {"steps", "duration_s", "binding_limit"} <= data.keys()
    (step,) = data["steps"]
    assert {"name", "requests", "prompt_tokens", "completion_tokens", "cost_usd"} <= step.keys()
    assert step["name"] == "label" and step["requests"] == 12 and step["completion_tokens"] == 60
    assert step["cost_usd"] == (step["prompt_tokens"] * 1.0 + 60 * 2.0) / 1e6
    assert data["duration_s"] == 11.0 and data["binding_limit"] == "local: requests/min"  # 11 paced after the first
    assert sim.records == []


def test_price_table_defaults_overrides_and_dated_names(tmp_path: Path) -> None:
    table = default_prices()
    assert table.as_of and table.get("gpt-4o-mini-2024-07-18") == table.get("gpt-4o-mini")
    assert table.get("no-such-model") is None
    p = Price(input=1.0, output=4.0, cached_input=0.5)
    assert p.tokens(1000, 500) == (1000 + 2000) / 1e6
    assert p.tokens(1000, 0, cached=400) == (600 + 200) / 1e6
    assert p.worst_case(1100, 100) == (1000 + 400) / 1e6
    assert Price(input=1.0).tokens(10, 5) is None  # completion tokens with no output price: unknown
    assert PriceTable({"m": p}).over({"m": Price(input=2.0)}).get("m") == Price(input=2.0)


def test_transcribe_estimate_counts_audio_minutes_and_pieces(tmp_path: Path, sim: Any) -> None:
    from .test_transcribe import LONG_LAYOUT, run, write_wav
    from .test_transcribe import write_job as write_transcribe_job

    d = tmp_path / "in"
    write_wav(d / "a.wav", [(30.0, 300.0)], seed=1)
    write_wav(d / "b.wav", [(90.0, 400.0)], seed=2)
    write_wav(d / "long.wav", LONG_LAYOUT, seed=3)  # 153 s, 2.4 MB: over a 1 MB upload limit
    job = write_transcribe_job(tmp_path, sim.url, str(d / "*.wav"), step="max_upload_mb: 1")
    plan = build_plan(job)
    s = estimate(plan, plan.prices).steps[0]
    assert s.audio_minutes == round((30 + 90 + 153) / 60, 3)
    assert s.requests > 3  # files over 1 MB go in pieces
    assert s.cost == pytest.approx((30 + 90 + 153) / 60 * default_prices().models["whisper-1"].audio_minute)  # type: ignore[operator]
    run(job)
    sent = [r for r in sim.records if r.path.endswith("/audio/transcriptions") and r.status == 200]
    assert abs(len(sent) - s.requests) <= 1, (len(sent), s.requests)  # pieces are cut at silences
    df = pl.read_parquet(tmp_path / "out" / "transcripts.parquet")
    assert df["tr__cost"].sum() == pytest.approx(s.cost, rel=1e-3)  # the answers' durations


@pytest.mark.parametrize("api", ["responses", "completion"])
def test_prompt_tokens_of_responses_and_completion_steps_match_what_the_run_is_billed(
    tmp_path: Path, sim: Any, api: str
) -> None:
    """The prompts sampled exactly (the model's vocabulary) scale the cheap count for Responses and
    legacy-completion steps too, as for chat: the estimate is what the simulator bills, within 15%."""
    import yaml

    from .test_responses_api import label_job

    job = label_job(tmp_path, sim.url, "responses", rows=40)
    if api == "completion":
        spec = yaml.safe_load(job.read_text())
        spec["steps"] = [
            {
                "name": "tagline",
                "kind": "completion",
                "provider": "apiyi",
                "model": "gpt-3.5-turbo-instruct",
                "prompt": "A tagline for this {{ row.product }}, from the review: {{ row.text }}\nTagline:",
                "params": {"max_tokens": 8},
            }
        ]
        job.write_text(yaml.safe_dump(spec, allow_unicode=True))
    est = estimate(build_plan(job)).steps[0]
    run_job(job)
    billed = sum(r.prompt_tokens for r in sim.records if r.status == 200)
    assert 0.85 <= est.prompt_tokens / billed <= 1.15, (est.prompt_tokens, billed)


def test_completion_steps_count_completions_from_observed_answers_after_a_run(tmp_path: Path, sim: Any) -> None:
    """Legacy completions, like chat: before a run max_tokens bounds each answer; after one, the mean
    of the answers it got (summed unrounded: a mean of 16.2 over 300 rows is 4,860 tokens, not 4,800)."""
    import shutil

    from .test_completion import write_job as completion_job

    job = completion_job(tmp_path, sim.url, rows=20, params="{max_tokens: 40}")
    before = estimate(build_plan(job)).steps[0]
    assert before.completion_basis.startswith("max_tokens") and before.completion_tokens == 40 * before.requests
    run_job(job)
    billed = sum(r.completion_tokens for r in sim.records if r.status == 200)
    shutil.rmtree(tmp_path / "cache")
    after = estimate(build_plan(job)).steps[0]
    assert after.completion_basis.startswith("observed")
    assert after.completion_tokens < before.completion_tokens
    assert abs(after.completion_tokens - billed) <= 1, (after.completion_tokens, billed)
