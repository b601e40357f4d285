"""The Ray backend on a local Ray (`ray.init(num_cpus=2)`): same output as the local backend, the global
limit held by four workers, a 429 slowing all, a killed worker's rows redone, a 401 stopping the job, a
stopped run resumed from its parts, the CLI on an existing cluster.

Every figure is read from the simulator's own request log; waits are on what the simulator recorded.
About two minutes on this machine, so they carry the `ray` marker: the default run leaves them out,
`pytest -m ray` runs them, and so does `scripts/test.sh` (after the default run).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import diskcache
import polars as pl
import pyarrow.parquet as pq
import pytest

from pipeline.cache import canonical_json, request_key
from pipeline.endpoints.chat import ENDPOINT
from pipeline.executor import RunOptions, RunSummary
from pipeline.plan import build_plan
from pipeline.sim import FaultRule

from .conftest import write_job
from .test_leasing import most_in_window

ray = pytest.importorskip("ray")

from pipeline.raybackend import RayExecutor, RayOptions, execute_on_ray  # noqa: E402

pytestmark = pytest.mark.ray  # not in the default run: `pytest -m ray` (and scripts/test.sh) runs them


@pytest.fixture(scope="module")
def local_ray() -> Any:
    ray.init(num_cpus=2, include_dashboard=False, namespace="pipeline", log_to_driver=False)
    yield ray
    ray.shutdown()


def on_ray(job: Path, workers: int = 4, chunk_rows: int | None = None, **lease: float) -> RunSummary:
    plan = build_plan(job)
    opts = RayOptions(workers=workers, chunk_rows=chunk_rows, lease=dict(lease))
    return asyncio.run(execute_on_ray(plan, RunOptions(), None, opts))


def chat_calls(sim: Any) -> list[Any]:
    return [r for r in sim.records if r.path.endswith("/chat/completions")]


class SimProcess:
    """The simulator in its own process (`pipeline sim --port 0`): a simulator thread in this process
    would record arrival times late whenever the driver holds the interpreter."""

    def __init__(self, tmp_path: Path, **config: Any) -> None:
        cfg = tmp_path / "sim.json"
        cfg.write_text(json.dumps(config))
        cmd = [sys.executable, "-m", "pipeline.cli", "sim", "--port", "0", "--config", str(cfg)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()  # waits for the line saying where it listens
        assert "listening on" in line, line
        self.url = line.split("listening on ", 1)[1].split()[0]

    def calls(self) -> list[dict[str, Any]]:
        root = self.url.rsplit("/v1", 1)[0]
        with urllib.request.urlopen(f"{root}/_sim/records", timeout=60) as r:
            data = json.loads(r.read())
        recs = data["records"] if isinstance(data, dict) else data
        return [r for r in recs if r["path"].endswith("/chat/completions")]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@pytest.fixture
def sim_process(tmp_path: Path) -> Iterator[Any]:
    started: list[SimProcess] = []

    def make(**config: Any) -> SimProcess:
        s = SimProcess(tmp_path, **config)
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


def test_same_output_as_the_local_backend(tmp_path: Path, sim: Any, local_ray: Any) -> None:
    from .conftest import run_job

    job = write_job(tmp_path, sim.url, rows=60)
    run_job(job)
    out = tmp_path / "out" / "labeled.parquet"
    local = pq.read_table(out)
    out.rename(tmp_path / "local.parquet")
    # another cache: the Ray run sends every request again (the cache is outside the job's fingerprint)
    job.write_text(job.read_text().replace(f"dir: {tmp_path / 'cache'}", f"dir: {tmp_path / 'cache2'}"))
    before = len(chat_calls(sim))
    summary = on_ray(job, workers=4, chunk_rows=7)
    assert len(chat_calls(sim)) - before == 60
    assert summary.status_counts["label"]["ok"] == 60 and summary.stats.requests == 60
    remote = pq.read_table(out)
    assert remote.schema.equals(local.schema, check_metadata=True)
    assert remote.equals(local)


@pytest.mark.parametrize(
    ("period", "rpm", "per_second", "rows"),
    [
        (6.0, 240, False, 300),  # the minute scaled down ten times: no 6 s window above 240
        (60.0, 1200, True, 240),  # a real second, enforced by the simulator: no second above 20
    ],
    ids=["window", "per-second"],
)
def test_four_workers_hold_one_global_limit(
    tmp_path: Path, sim_process: Any, local_ray: Any, period: float, rpm: int, per_second: bool, rows: int
) -> None:
    sim = sim_process(
        default_limits={"rpm": rpm},
        window_s=period,
        limit_period_s=period / 60 if per_second else None,
        latency_s=0.05,
        jitter=0.3,
    )
    limits = f"{{rpm: {rpm}, tpm: 100000000, concurrency: 64, period_s: {period}}}"
    job = write_job(tmp_path, sim.url, rows=rows, limits=limits)
    summary = on_ray(job, workers=4)
    calls = sim.calls()
    starts = [r["t_start"] for r in calls]
    refused = [r for r in calls if r["status"] != 200]
    if not per_second:
        assert refused == []  # zero 429s
        assert summary.status_counts["label"]["ok"] == rows and summary.stats.requests == rows
        assert most_in_window(starts, period) <= rpm
    else:
        # A real second, on real sockets: on a busy machine (CI, other jobs) one request may reach the
        # server a few ms later than the request 20 ahead of it, and land in that one's second. At most one
        # such 429 (retried: every row still ok), and no second ever holds more than one request too many.
        assert [r["status"] for r in refused] in ([], [429])
        assert summary.status_counts["label"]["ok"] == rows and summary.stats.requests == rows + len(refused)
        assert most_in_window(starts, period) <= rpm + len(refused)
        assert most_in_window(starts, period / 60) <= rpm / 60 + len(refused)


def test_a_429_seen_by_one_worker_slows_every_worker(tmp_path: Path, sim_process: Any, local_ray: Any) -> None:
    # one 429 with Retry-After 4 s (on the row whose text ends in #30): the limiter pauses, so no worker
    # sends anything once the grants already on their way (1 s of them) have gone
    fault = FaultRule(kind="rate_limit", when_contains="(#30)", retry_after=4.0, times=1)
    sim = sim_process(faults=[fault.to_dict()], latency_s=0.02)
    job = write_job(tmp_path, sim.url, rows=80, limits="{rpm: 1200, tpm: 100000000, concurrency: 32}")
    summary = on_ray(job, workers=4, chunk_rows=5)
    assert summary.status_counts["label"]["ok"] == 80
    calls = sim.calls()
    hit = next(r for r in calls if r["status"] == 429)
    quiet = [r for r in calls if hit["t_end"] + 1.5 <= r["t_start"] < hit["t_end"] + 4.0]
    assert quiet == [], f"{len(quiet)} requests were sent during the pause"
    assert any(r["t_start"] >= hit["t_end"] + 4.0 for r in calls)


def _key(body: dict[str, Any]) -> str:
    return request_key("local", ENDPOINT, canonical_json(body))


def test_a_killed_workers_rows_are_redone_without_answering_a_request_twice(
    tmp_path: Path, sim_factory: Any, local_ray: Any
) -> None:
    sim = sim_factory(latency_s=0.1)
    job = write_job(tmp_path, sim.url, rows=120, limits="{rpm: 100000, tpm: 100000000, concurrency: 8}")
    plan = build_plan(job)
    runner = RayExecutor(plan, RunOptions(), None, RayOptions(workers=2, chunk_rows=10))
    stored_at_kill: set[str] = set()

    async def main() -> RunSummary:
        run = asyncio.ensure_future(runner.run())
        while sum(1 for r in chat_calls(sim) if r.status == 200) < 30:  # waits on what the simulator answered
            assert not run.done()
            await asyncio.sleep(0.02)
        victim = runner.cluster.workers[0]
        ray.kill(victim.actor, no_restart=True)
        # what the killed worker had stored in the (shared) cache is what counts as answered
        with diskcache.Cache(str(tmp_path / "cache")) as dc:
            stored_at_kill.update(dc.iterkeys())
        return await run

    summary = asyncio.run(main())
    assert summary.status_counts["label"]["ok"] == 120
    assert runner.cluster.redone_rows > 0
    assert any("died" in n for n in summary.notes)
    answered = Counter(_key(r.body) for r in chat_calls(sim) if r.status == 200)
    twice = [k for k, n in answered.items() if n > 1 and k in stored_at_kill]
    assert twice == [], f"{len(twice)} stored answers were asked again"
    df = pl.read_parquet(tmp_path / "out" / "labeled.parquet")
    assert df.height == 120 and df["review_id"].to_list() == sorted(df["review_id"].to_list())


def test_a_401_stops_the_whole_job(tmp_path: Path, sim_factory: Any, local_ray: Any) -> None:
    sim = sim_factory(latency_s=0.05, revoke_after={"test-key": 20})
    job = write_job(tmp_path, sim.url, rows=400, limits="{rpm: 100000, tpm: 100000000, concurrency: 8}")
    summary = on_ray(job, workers=4, chunk_rows=10)
    assert summary.aborted is not None and ("401" in summary.aborted or "invalid" in summary.aborted)
    calls = chat_calls(sim)
    first = next(i for i, r in enumerate(calls) if r.status == 401)
    # after the first 401: at most what was already admitted on every worker (concurrency and grants)
    assert len(calls) - first <= 4 * 8 + 8
    assert summary.rows_processed < 400
    assert not (tmp_path / "out" / "labeled.parquet").exists()


def test_a_stopped_run_resumes_from_its_parts_without_asking_again(
    tmp_path: Path, sim_factory: Any, local_ray: Any
) -> None:
    sim = sim_factory(latency_s=0.05)
    job = write_job(tmp_path, sim.url, rows=150, limits="{rpm: 100000, tpm: 100000000, concurrency: 8}")
    runner = RayExecutor(build_plan(job), RunOptions(), None, RayOptions(workers=2, chunk_rows=10))

    async def stop_midway() -> RunSummary:
        run = asyncio.ensure_future(runner.run())
        while sum(1 for r in chat_calls(sim) if r.status == 200) < 40:  # waits on what the simulator answered
            assert not run.done()
            await asyncio.sleep(0.02)
        runner.request_stop()  # as Ctrl-C: requests on the wire finish, their rows are written
        return await run

    first = asyncio.run(stop_midway())
    assert first.interrupted and 0 < first.rows_processed < 150
    asked = Counter(_key(r.body) for r in chat_calls(sim) if r.status == 200)
    before = len(sim.records)
    second = on_ray(job, workers=2, chunk_rows=10)
    assert second.rows_resumed == first.rows_processed
    assert second.status_counts["label"]["ok"] == 150 - first.rows_processed
    again = [r for r in sim.records[before:] if r.path.endswith("/chat/completions") and _key(r.body) in asked]
    assert again == [], f"{len(again)} answered requests were sent again"
    df = pl.read_parquet(tmp_path / "out" / "labeled.parquet")
    assert df.height == 150 and (df["label__status"] == "ok").all()


def test_the_cli_runs_a_job_on_an_existing_cluster(tmp_path: Path, sim: Any, local_ray: Any) -> None:
    address = ray.get_runtime_context().gcs_address
    job = write_job(tmp_path, sim.url, rows=30)
    cmd = [sys.executable, "-m", "pipeline.cli", "run", str(job), "--backend", "ray", "--ray-address", address]
    proc = subprocess.run([*cmd, "--workers", "2"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = pl.read_parquet(tmp_path / "out" / "labeled.parquet")
    assert df.height == 30 and (df["label__status"] == "ok").all()
    assert len(chat_calls(sim)) == 30


def tricky_rows(n: int) -> tuple[str, str]:
    """The same kind of rows as CSV (an empty field, a quoted empty one, `007`, a quoted newline) and as
    JSONL (ints and floats mixed in one field, a null, a list)."""
    csv = 'review_id,text,code,stars\nr0,"fine, I guess",007,5\nr1,,012,\nr2,"",,3\nr3,"two\nlines ""q""",x1,4\n'
    csv += "".join(f"r{i},text {i},{i:03d},{i % 5}\n" for i in range(4, n))
    rows = [
        {"review_id": f"r{i}", "text": None if i == 1 else f"text {i}", "score": i / 2 if i % 3 else i, "tags": [i]}
        for i in range(n)
    ]
    return csv, "".join(json.dumps(r) + "\n" for r in rows)


@pytest.mark.parametrize("kind", ["csv-url", "jsonl"])
def test_ray_data_reads_the_input_as_the_local_reader_does(
    tmp_path: Path, sim: Any, local_ray: Any, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """The Ray run reads with ray.data (the local reader is never asked for rows), an input given as a
    `file://` URL through its fsspec file system: the final file is the local run's, row for row and type
    for type (CSV as text with input.schema applied, JSONL as polars infers it over every line)."""
    from pipeline.sources import Source

    from .conftest import run_job

    job = write_job(tmp_path, sim.url, rows=1)
    csv, jsonl = tricky_rows(40)
    src = tmp_path / ("in.csv" if kind == "csv-url" else "in.jsonl")
    src.write_text(csv if kind == "csv-url" else jsonl)
    path = src.as_uri() if kind == "csv-url" else str(src)
    schema = "\n  schema: {stars: int64}" if kind == "csv-url" else ""
    text = job.read_text().replace(f"path: {tmp_path / 'reviews.csv'}", f"path: {path}")
    job.write_text(text.replace("id: review_id", "id: review_id" + schema))
    local_summary = run_job(job)
    out = tmp_path / "out" / "labeled.parquet"
    local = pq.read_table(out)
    out.rename(tmp_path / "local.parquet")
    job.write_text(job.read_text().replace(f"dir: {tmp_path / 'cache'}", f"dir: {tmp_path / 'cache2'}"))

    def local_reader(*a: Any, **k: Any) -> Any:
        raise AssertionError("the Ray backend read the input with the local reader")

    monkeypatch.setattr(Source, "batches", local_reader)
    summary = on_ray(job, workers=2, chunk_rows=7)
    assert summary.rows_processed == 40 and summary.status_counts == local_summary.status_counts
    remote = pq.read_table(out)
    assert remote.schema.equals(local.schema, check_metadata=True)
    assert remote.equals(local)
    if kind == "csv-url":
        assert remote.column("code").to_pylist()[:4] == ["007", "012", None, "x1"]
        assert remote.column("text").to_pylist()[1:4] == [None, "", 'two\nlines "q"']
        assert remote.column("stars").to_pylist()[:4] == [5, None, 3, 4]
    else:
        assert remote.column("score").to_pylist()[:4] == [0.0, 0.5, 1.0, 3.0]
