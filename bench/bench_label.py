"""Benchmarks of structured labeling (issue 5). Each prints its figures; none asserts on time.

    python bench/bench_label.py overhead   # rows/s: plain text vs labels vs a schema vs a tool, no latency
    python bench/bench_label.py repairs    # a fifth of the answers invalid: re-asks, rows/s, cached re-run
    python bench/bench_label.py stream     # the same schema job streamed (SSE assembled) vs not
    python bench/bench_label.py all

As in bench_core.py, the simulator runs in its own process (`pipeline sim`) and the client as
`pipeline run` in another; figures come from the client's wall time, its peak RSS, the output file
and the simulator's record.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import ROOT, SimProcess, make_rows  # noqa: E402

SCHEMA = ROOT / "schemas" / "sentiment.schema.json"


def write_job(work: Path, url: str, rows: int, step: dict[str, Any]) -> Path:
    data = work / "rows.parquet"
    if not data.exists():
        make_rows(data, rows)
    job = {
        "version": 1,
        "name": "bench-label",
        "providers": {"bench": {"base_url": url, "api_key_env": "BENCH_KEY", "timeout_s": 120}},
        "input": {"path": str(data), "id": "id"},
        "steps": [
            {
                "name": "label",
                "kind": "chat",
                "provider": "bench",
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "system", "content": "Label the sentiment of the review."},
                    {"role": "user", "content": "{{ row.text }}"},
                ],
                **step,
            }
        ],
        "output": {"path": str(work / "out.parquet")},
        "cache": {"dir": str(work / "cache")},
    }
    path = work / "job.json"  # JSON is YAML
    path.write_text(json.dumps(job))
    return path


def run(job: Path, *extra: str) -> tuple[float, int, int]:
    """`pipeline run` in a child: (wall seconds, peak RSS in MB, exit code); exit 1 (failed rows) is fine."""
    env = {**os.environ, "BENCH_KEY": "bench"}
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "run", str(job), "--quiet", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise RuntimeError(f"pipeline run exited {code}: {err[-2000:]}")
    return wall, usage.ru_maxrss // 1024, code


KINDS: dict[str, dict[str, Any]] = {
    "text": {"params": {"max_tokens": 5}},
    "labels": {"params": {"max_tokens": 10}, "labels": ["positive", "negative", "neutral"]},
    "schema": {"params": {"max_tokens": 300}, "response_schema": str(SCHEMA)},
    "tool": {
        "params": {"max_tokens": 300},
        "tools": [{"type": "function", "function": {"name": "save_review", "parameters": str(SCHEMA)}}],
    },
}


def bench_overhead(rows: int) -> None:
    for kind, step in KINDS.items():
        sim = SimProcess()
        work = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-"))
        try:
            job = write_job(work, sim.url, rows, step)
            wall, rss, _ = run(job)
            ok = int((pl.read_parquet(work / "out.parquet")["label__status"] == "ok").sum())
            n = sum(1 for r in sim.records() if r["path"].endswith("/chat/completions"))
        finally:
            sim.stop()
            shutil.rmtree(work, ignore_errors=True)
        print(
            f"overhead[{kind:6}]: {rows:,} rows ({ok:,} ok, {n:,} requests) in {wall:.1f}s wall = "
            f"{rows / wall:,.0f} rows/s; peak RSS {rss} MB"
        )


def bench_repairs(rows: int) -> None:
    sim = SimProcess(faults=[{"kind": "schema_violation", "probability": 0.2}], seed=7)
    work = Path(tempfile.mkdtemp(prefix="bench-repairs-"))
    try:
        job = write_job(work, sim.url, rows, KINDS["schema"])
        wall, rss, _ = run(job)
        out = pl.read_parquet(work / "out.parquet")
        recs = [r for r in sim.records() if r["path"].endswith("/chat/completions")]
        before = len(sim.records())
        cached_wall, _, _ = run(job, "--fresh")
        after = len(sim.records())
    finally:
        sim.stop()
        shutil.rmtree(work, ignore_errors=True)
    counts = dict(out.group_by("label__status").len().iter_rows())
    print(
        f"repairs: {rows:,} rows, 20% of answers schema-violating: {len(recs):,} requests "
        f"({int(out['label__repairs'].sum()):,} re-asks), rows ok {counts.get('ok', 0):,}, "
        f"invalid {counts.get('invalid', 0):,}; {wall:.1f}s = {rows / wall:,.0f} rows/s, "
        f"peak RSS {rss} MB; "
        f"re-run from the cache (--fresh, re-ask dialogues replayed; invalid rows asked again): "
        f"{cached_wall:.1f}s, {after - before:,} requests"
    )


def bench_stream(rows: int) -> None:
    for stream in (False, True):
        sim = SimProcess()
        work = Path(tempfile.mkdtemp(prefix="bench-stream-"))
        try:
            step = {**KINDS["schema"], "params": {"max_tokens": 300, "stream": stream}}
            job = write_job(work, sim.url, rows, step)
            wall, rss, _ = run(job)
            ok = int((pl.read_parquet(work / "out.parquet")["label__status"] == "ok").sum())
        finally:
            sim.stop()
            shutil.rmtree(work, ignore_errors=True)
        print(
            f"stream={str(stream).lower():5}: {rows:,} schema rows ({ok:,} ok) in {wall:.1f}s = "
            f"{rows / wall:,.0f} rows/s; peak RSS {rss} MB"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", choices=["overhead", "repairs", "stream", "all"])
    ap.add_argument("--rows", type=int, default=None)
    a = ap.parse_args()
    if a.which in ("overhead", "all"):
        bench_overhead(a.rows or 20_000)
    if a.which in ("repairs", "all"):
        bench_repairs(a.rows or 10_000)
    if a.which in ("stream", "all"):
        bench_stream(a.rows or 10_000)


if __name__ == "__main__":
    main()
