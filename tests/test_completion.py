"""The `completion` kind (legacy /completions), a plain request/response kind on the sans-I/O protocol."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import diskcache
import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.sim import FaultRule
from pipeline.sim import completions as simc

from .conftest import SIM_KEY_ENV, reviews, run_job

MODEL = "gpt-3.5-turbo-instruct"
PROMPT = "Continue the review: {{ row.text }}"


def write_job(tmp_path: Path, url: str, *, rows: int = 8, params: str = "{max_tokens: 12}") -> Path:
    df = reviews(rows).with_columns(
        pl.when(pl.col("review_id") == "r00005").then(None).otherwise(pl.col("text")).alias("text")
    )
    df.write_csv(tmp_path / "reviews.csv")
    job = tmp_path / "job.yaml"
    job.write_text(
        textwrap.dedent(f"""\
        version: 1
        name: complete
        providers:
          local: {{base_url: {url}, api_key_env: {SIM_KEY_ENV}, limits: {{rpm: 100000, concurrency: 20}}}}
        input: {{path: {tmp_path / "reviews.csv"}, id: review_id}}
        steps:
          - name: more
            kind: completion
            provider: local
            model: {MODEL}
            prompt: "{PROMPT}"
            params: {params}
        output: {{path: {tmp_path / "out.parquet"}}}
        cache: {{dir: {tmp_path / "cache"}}}
        retry: {{max_attempts: 2, backoff_base_s: 0.01, backoff_cap_s: 0.02}}
        """)
    )
    return job


def expected(text: str, **params: Any) -> list[str]:
    """What the simulator answers for the row's prompt, choice by choice."""
    req = simc.parse({"model": MODEL, "prompt": f"Continue the review: {text}", **params})
    return [c.text for c in simc.plan(req)]


def calls(sim: Any) -> list[Any]:
    return [r for r in sim.records if r.path.endswith("/completions") and "chat" not in r.path]


def test_each_row_gets_its_own_completion_and_a_rerun_sends_nothing(tmp_path: Path, sim: Any) -> None:
    job = write_job(tmp_path, sim.url)
    summary = run_job(job)
    df = pl.read_parquet(tmp_path / "out.parquet")
    assert df.schema["more"] == pl.String
    for row in df.iter_rows(named=True):
        if row["text"] is None:
            assert row["more__status"] == "skipped" and row["more"] is None
            continue
        assert row["more__status"] == "ok", row["more__error"]
        assert row["more"] == expected(row["text"], max_tokens=12)[0]
        assert row["more__finish_reason"] in ("stop", "length")
        assert row["more__prompt_tokens"] > 0 and row["more__completion_tokens"] > 0
    assert len(calls(sim)) == 7 == summary.stats.requests, "one request per row with a prompt"
    assert len(set(df["more"].drop_nulls())) == 7

    again = run_job(job, fresh=True)
    assert len(calls(sim)) == 7 and again.stats.requests == 0 and again.stats.cache_hits == 7
    cols = ["review_id", "more", "more__finish_reason", "more__status", "more__prompt_tokens"]
    redone = pl.read_parquet(tmp_path / "out.parquet")
    assert redone.select(cols).equals(df.select(cols))
    assert set(redone.filter(pl.col("more__status") == "ok")["more__cached"]) == {True}
    run_job(job)  # a resume of a finished job: nothing to do
    assert len(calls(sim)) == 7


def test_n_choices_land_as_a_list_column(tmp_path: Path, sim: Any) -> None:
    job = write_job(tmp_path, sim.url, rows=3, params="{max_tokens: 10, n: 3}")
    run_job(job)
    df = pl.read_parquet(tmp_path / "out.parquet")
    assert df.schema["more"] == pl.List(pl.String)
    for row in df.iter_rows(named=True):
        assert row["more"] == expected(row["text"], max_tokens=10, n=3)
        assert len(row["more__finish_reason"]) == 3


def test_failures_are_per_row(tmp_path: Path, sim: Any) -> None:
    sim.set_faults([FaultRule(kind="status", status=400, error_type="invalid_request_error", when_contains="#3)")])
    job = write_job(tmp_path, sim.url)
    summary = run_job(job)
    df = pl.read_parquet(tmp_path / "out.parquet")
    bad = df.filter(pl.col("review_id") == "r00003").row(0, named=True)
    assert bad["more__status"] == "error" and "HTTP 400" in bad["more__error"] and bad["more"] is None
    ok = df.filter(~pl.col("review_id").is_in(["r00003", "r00005"]))
    assert set(ok["more__status"]) == {"ok"} and ok.height == 6
    assert summary.failed_rows == 1


def test_sample_job_runs_with_every_row_ok(tmp_path: Path, monkeypatch: Any) -> None:
    root = Path(__file__).resolve().parents[1]
    (tmp_path / "sample_data").symlink_to(root / "sample_data")
    spec = yaml.safe_load((root / "jobs" / "complete_prompts.yaml").read_text())
    spec["input"]["limit"] = 20
    spec["cache"] = {"dir": str(tmp_path / "cache")}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True))
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["run", "job.yaml", "--sim", "--sim-latency", "0", "--quiet"])
    assert res.exit_code == 0, res.output
    df = pl.read_parquet(tmp_path / spec["output"]["path"])
    assert df.height == 20 and set(df["tagline__status"]) == {"ok"}
    assert df["tagline"].null_count() == 0 and df["tagline"].n_unique() == 20


@pytest.mark.slow
def test_kill_9_resume_resends_nothing_answered(tmp_path: Path, sim_factory: Any) -> None:
    sim = sim_factory(latency_s=0.05)
    job = write_job(tmp_path, sim.url, rows=300)
    job.write_text(job.read_text().replace("concurrency: 20", "concurrency: 8"))
    env = {**os.environ, SIM_KEY_ENV: "test-key"}

    def spawn() -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "pipeline.cli", "run", str(job), "--quiet"]
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    proc = spawn()
    deadline = time.monotonic() + 60
    while sum(1 for r in calls(sim) if r.status == 200) < 40:  # waits on what the simulator answered
        assert time.monotonic() < deadline and proc.poll() is None, "the run did not get going"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    # the answers the client stored: their texts are the simulator's deterministic answers to one prompt
    with diskcache.Cache(str(tmp_path / "cache")) as dc:
        bodies = [dc.get(k) for k in dc.iterkeys()]
    stored = {c["text"] for b in bodies if isinstance(b, bytes) for c in json.loads(b).get("choices", [])}
    answered = {str(r.body["prompt"]) for r in calls(sim) if r.status == 200}
    answered = {p for p in answered if expected(p.removeprefix("Continue the review: "), max_tokens=12)[0] in stored}
    assert 0 < len(answered) < 299
    before = len(sim.records)
    proc = spawn()
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr.decode()
    later = [r for r in sim.records[before:] if r.path.endswith("/completions") and "chat" not in r.path]
    resent = [r for r in later if str(r.body["prompt"]) in answered]
    assert resent == [], f"{len(resent)} answered requests were sent again"
    df = pl.read_parquet(tmp_path / "out.parquet")
    assert df.height == 300 and (df["more__status"] != "error").all()
