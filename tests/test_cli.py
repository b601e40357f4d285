"""The command line: exit codes, clear messages before any request, kill -9 and Ctrl-C recovery."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import diskcache
import polars as pl
import pytest
from typer.testing import CliRunner

from pipeline.cli import app

from .conftest import SIM_KEY_ENV, output, take_over_logs, write_job

runner = CliRunner()


def cli(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_run_ok_exit_0(tmp_path: Path, sim: Any) -> None:
    job = write_job(tmp_path, sim.url, rows=10)
    res = cli("run", str(job), "--quiet")
    assert res.exit_code == 0, res.output
    assert output(tmp_path).height == 10


def test_some_rows_failed_exit_1(tmp_path: Path, sim: Any) -> None:
    from pipeline.sim import FaultRule

    sim.set_faults([FaultRule(kind="status", status=400, error_type="invalid_request_error", when_contains="#3)")])
    job = write_job(tmp_path, sim.url, rows=10)
    res = cli("run", str(job))
    assert res.exit_code == 1
    assert "1 row(s) failed" in res.output and "--retry-failed" in res.output
    res = cli("inspect", str(tmp_path / "out" / "labeled.parquet"))
    assert res.exit_code == 0 and "r00003" in res.output and "HTTP 400" in res.output
    # given the job file instead, it names the output the job writes
    res = cli("inspect", str(job))
    assert res.exit_code == 2 and "looks like a job file" in res.output and "labeled.parquet" in res.output
    # the fault is gone: --retry-failed redoes only that row
    sim.set_faults([])
    n = len(sim.records)
    res = cli("run", str(job), "--retry-failed", "--quiet")
    assert res.exit_code == 0, res.output
    assert len(sim.records) == n + 1
    assert set(output(tmp_path)["label__status"]) == {"ok"}


def _bad(tmp_path: Path, sim: Any, mutate: Any) -> Any:
    job = write_job(tmp_path, sim.url, rows=5)
    mutate(job)
    res = cli("run", str(job), "--quiet")
    assert res.exit_code == 2, res.output
    assert sim.records == [], "nothing may be sent for a bad job"
    return res.output


def _edit(old: str, new: str) -> Any:
    def f(job: Path) -> None:
        text = job.read_text()
        assert old in text
        job.write_text(text.replace(old, new))

    return f


def test_yaml_syntax_error(tmp_path: Path, sim: Any) -> None:
    msg = _bad(tmp_path, sim, _edit("name: test-job", "name: [test-job"))
    assert "YAML syntax error" in msg and "job.yaml:" in msg


def test_unknown_key(tmp_path: Path, sim: Any) -> None:
    msg = _bad(tmp_path, sim, _edit("max_attempts:", "max_atempts:"))
    assert "unknown key `max_atempts`" in msg and "did you mean `max_attempts`" in msg


def test_missing_input_file(tmp_path: Path, sim: Any) -> None:
    msg = _bad(tmp_path, sim, _edit("reviews.csv", "nope.csv"))
    assert "input file not found" in msg and "nope.csv" in msg


def test_unknown_column(tmp_path: Path, sim: Any) -> None:
    msg = _bad(tmp_path, sim, _edit("row.text", "row.txt"))
    assert "unknown column `txt`" in msg and "did you mean `text`" in msg and "step `label`" in msg


def test_duplicate_ids(tmp_path: Path, sim: Any) -> None:
    def dup(job: Path) -> None:
        csv = tmp_path / "reviews.csv"
        df = pl.read_csv(csv)
        df.with_columns(
            pl.when(pl.col("review_id") == "r00003")
            .then(pl.lit("r00001"))
            .otherwise(pl.col("review_id"))
            .alias("review_id")
        ).write_csv(csv)

    msg = _bad(tmp_path, sim, dup)
    assert "duplicate" in msg and "'r00001' (2 times)" in msg


def test_unknown_provider(tmp_path: Path, sim: Any) -> None:
    msg = _bad(tmp_path, sim, _edit("provider: local", "provider: lokal"))
    assert "unknown provider 'lokal'" in msg


def test_missing_api_key(tmp_path: Path, sim: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SIM_KEY_ENV)
    msg = _bad(tmp_path, sim, lambda job: None)
    assert SIM_KEY_ENV in msg and "not set" in msg


def test_validate_renders_sample_rows(tmp_path: Path, sim: Any) -> None:
    job = write_job(tmp_path, sim.url, rows=5)
    res = cli("validate", str(job))
    assert res.exit_code == 0, res.output
    # no request is sent; the one GET /models checks the step's model (issue 13)
    assert "Review: I love it" in res.output and [r.path for r in sim.records] == ["/v1/models"]


def test_401_stops_the_run_quickly(tmp_path: Path, sim_factory: Any) -> None:
    sim = sim_factory(keys={"the-right-key": {}})
    job = write_job(tmp_path, sim.url, rows=200)
    res = cli("run", str(job), "--quiet")
    assert res.exit_code == 3, res.output
    assert "401" in res.output and "aborted" in res.output
    assert 1 <= len(sim.records) <= 3


def test_identical_failures_stop_the_run(tmp_path: Path, sim: Any) -> None:
    from pipeline.sim import FaultRule

    sim.set_faults(
        [FaultRule(kind="status", status=400, error_type="invalid_request_error", error_code="unsupported_parameter")]
    )
    job = write_job(tmp_path, sim.url, rows=300, extra="run: {stop_after_identical_failures: 10}")
    res = cli("run", str(job), "--quiet")
    assert res.exit_code == 3, res.output
    assert "10 rows in a row failed" in res.output
    assert len(sim.records) < 150


def test_cache_and_models_commands(tmp_path: Path, sim: Any) -> None:
    job = write_job(tmp_path, sim.url, rows=5)
    assert cli("run", str(job), "--quiet").exit_code == 0
    res = cli("cache", "stats", "--dir", str(tmp_path / "cache"))
    assert "5 entries" in res.output
    res = cli("cache", "clear", "--dir", str(tmp_path / "cache"), "--yes")
    assert "removed 5" in res.output
    res = cli("models", "--sim")
    assert res.exit_code == 0 and "gpt-4o-mini" in res.output


def _spawn(job: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "run", str(job), "--quiet"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_for(sim: Any, n: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while sum(1 for r in sim.records if r.status == 200) < n:
        assert time.monotonic() < deadline, "the run did not get going"
        time.sleep(0.02)


def _stored_answers(cache_dir: Path) -> set[int]:
    """The simulator's request numbers of the chat answers in a run's cache (ids "chatcmpl-sim-N")."""
    take_over_logs(cache_dir)
    with diskcache.Cache(str(cache_dir)) as dc:
        bodies = [dc.get(k) for k in dc.iterkeys()]
    return {int(json.loads(b)["id"].rsplit("-", 1)[1]) for b in bodies if isinstance(b, bytes)}


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_killed_run_resumes_without_resending(tmp_path: Path, sim_factory: Any, sig: int) -> None:
    sim = sim_factory(latency_s=0.05)
    job = write_job(tmp_path, sim.url, rows=400, limits="{rpm: 100000, concurrency: 8}")
    env = {**os.environ, SIM_KEY_ENV: "test-key"}
    proc = _spawn(job, env)
    _wait_for(sim, 60)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130, stderr.decode()
        assert b"Resume with" in stderr
        answered_seqs = {r.seq for r in sim.records if r.status == 200}  # every answer on the wire was let in
    else:
        assert proc.returncode == -signal.SIGKILL
        # kill -9 can land while answers are on their way: those never reached the client (unfinished
        # rows). Every answer the client stored (read from its cache, not guessed from the time) must
        # not be sent again.
        answered_seqs = _stored_answers(tmp_path / "cache")
    answered = {r.body["messages"][1]["content"] for r in sim.records if r.seq in answered_seqs}
    assert 0 < len(answered) < 400
    before = len(sim.records)
    proc = _spawn(job, env)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr.decode()
    resent = [r for r in sim.records[before:] if r.body["messages"][1]["content"] in answered]
    assert resent == [], f"{len(resent)} answered requests were sent again"
    df = output(tmp_path)
    assert df.height == 400 and set(df["label__status"]) == {"ok"}
    sent = {r.body["messages"][1]["content"] for r in sim.records if r.status == 200}
    assert len(sent) == 400


def test_estimate_counts_requests_tokens_and_cost(tmp_path: Path, sim: Any) -> None:
    job = write_job(tmp_path, sim.url, rows=12, limits="{rpm: 6000, tpm: 1000000, concurrency: 5}")
    prices = tmp_path / "prices.yaml"
    prices.write_text("gpt-4o-mini: {input: 0.15, output: 0.60}\n")
    res = runner.invoke(app, ["estimate", str(job), "--prices", str(prices)], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "12" in res.output and "binding: requests/min" in res.output and "0.0" in res.output
    assert sim.records == []
    # after a run every request is in the cache: nothing left to pay for
    assert cli("run", str(job), "--quiet").exit_code == 0
    from pipeline.estimate import estimate
    from pipeline.plan import build_plan

    est = estimate(build_plan(job)).steps[0]
    assert (est.requests, est.cached, est.rows) == (0, 12, 12)
    bad = tmp_path / "bad.yaml"
    bad.write_text("gpt-4o-mini: 3\n")
    res = cli("estimate", str(job), "--prices", str(bad))
    assert res.exit_code == 2 and "needs `input` and `output`" in res.output


def test_second_concurrent_run_of_a_job_is_refused(tmp_path: Path, sim: Any) -> None:
    from pipeline.sinks import WorkDir

    job = write_job(tmp_path, sim.url, rows=5)
    with WorkDir(tmp_path / "out" / "labeled.parquet", "x").locked():
        res = cli("run", str(job), "--quiet")
    assert res.exit_code == 2 and "another run of this job" in res.output
    assert sim.records == []
    assert cli("run", str(job), "--quiet").exit_code == 0


def test_estimate_piped_to_a_file_keeps_its_headers_whole(tmp_path: Path) -> None:
    # not a terminal: rich would lay the table out in 80 columns and cut headers ("reques…", "comple…")
    job = write_job(tmp_path, "http://127.0.0.1:9", rows=6, limits="{rpm: 60, tpm: 1000000, concurrency: 5}")
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    res = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "estimate", str(job)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    header = next(line for line in res.stdout.splitlines() if "step" in line)
    for name in ("requests", "cached", "skipped", "prompt tokens", "completion", "cost USD"):
        assert name in header, header
    assert "gpt-4o-mini" in res.stdout and "(5.0 s)" in res.stdout  # 6 requests at 60/min (5 paced), to a tenth


def test_live_progress_bar_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal the run draws rich's live bar with the console (once a TypeError: the bar was given
    the lazy console wrapper, which rich's live display cannot enter as a context manager)."""
    import io

    from rich.console import Console

    from pipeline import cli
    from pipeline.records import Progress

    screen = io.StringIO()
    lazy = cli._LazyConsole(stderr=True)
    lazy._console = Console(file=screen, force_terminal=True, width=120)
    monkeypatch.setattr(cli, "err", lazy)
    snapshot = Progress(
        total_rows=3, rows_done=2, rows_ok=2, rows_failed=0, rows_skipped=0, rows_resumed=0, requests=2,
        cache_hits=0, retries=0, rate_limited=0, tokens=40, elapsed_s=1.0, req_per_min=120.0, tok_per_min=2400.0,
    )  # fmt: skip
    with cli._ProgressView(3, quiet=False) as view:
        assert view.live
        view(snapshot)
    assert "2/3" in screen.getvalue() and "120 req/min" in screen.getvalue()


def test_run_leaves_the_collector_on(tmp_path: Path, sim: Any) -> None:
    """`run` turns the garbage collector off while it imports and plans; a run that stops on a bad job
    (and one that ran) leave it on for the rest of the process (tests run the CLI in-process)."""
    import gc

    _bad(tmp_path, sim, _edit("row.text", "row.txt"))
    assert gc.isenabled()
    (tmp_path / "ok").mkdir()
    job = write_job(tmp_path / "ok", sim.url, rows=5)
    assert cli("run", str(job), "--quiet").exit_code == 0
    assert gc.isenabled()
