"""`pipeline estimate` against an actual run of each sample job (`run --sim`), side by side.

    python bench/bench_estimate.py                 # every job in jobs/
    python bench/bench_estimate.py jobs/label_reviews.yaml
    python bench/bench_estimate.py --bench         # benchmark-sized jobs, where a rate limit binds

Each job runs in a scratch copy of the repository's jobs/, sample_data/ and schemas/ (fresh cache), as
`pipeline run JOB --sim` in its own process; the simulator enforces the job's limits. Printed per job:
requests, prompt and completion tokens, duration (the run's own `time`, start-up excluded) and cost,
estimated and actual, with the load average beside each run. Before the run the estimate counts
completion tokens from max_tokens; a second estimate after the run uses the observed answers.

`--bench` does the same for jobs the size of the issue's side-by-side measurements, where the duration
is set by a limit rather than by start-up and latency: 2,400 chat rows at 1,200 RPM, 6,000 at 3,000 RPM
and 20,000 short documents embedded under 1M tokens/min (the simulator enforces each job's limits).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl

ROOT = Path(__file__).resolve().parents[1]


def _cli(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=3600,
        env={**os.environ, "COLUMNS": "200"},
    )


def _estimate(work: Path, job: str) -> dict[str, Any]:
    res = _cli(work, "estimate", job, "--json", "--sim")
    if res.returncode != 0:
        raise RuntimeError(f"estimate {job}: {res.stderr or res.stdout}")
    return dict(json.loads(res.stdout))


def _ratio(est: float, act: float) -> str:
    return f"{est / act:5.2f}x" if act else "  n/a"


BENCH_JOBS = {
    # name: (rows, limits, step)
    "chat_2400_at_1200rpm": (
        2400,
        "{rpm: 1200, tpm: 1000000, concurrency: 100}",
        "kind: chat\n    messages:\n      - {role: user, content: 'Sentiment of: {{ row.text }}'}\n"
        "    params: {max_tokens: 20}",
    ),
    "chat_6000_at_3000rpm": (
        6000,
        "{rpm: 3000, tpm: 1000000, concurrency: 100}",
        "kind: chat\n    messages:\n      - {role: user, content: 'Sentiment of: {{ row.text }}'}\n"
        "    params: {max_tokens: 20}",
    ),
    "embed_20000_at_1m_tpm": (
        20000,
        "{rpm: 3000, tpm: 1000000, concurrency: 100}",
        "kind: embed\n    model: text-embedding-3-small\n    input: '{{ row.text }}'",
    ),
}


def make_bench_root() -> Path:
    """A scratch root with jobs/ and sample_data/ holding the benchmark-sized jobs."""
    root = Path(tempfile.mkdtemp(prefix="bench-est-root-"))
    (root / "jobs").mkdir()
    (root / "sample_data").mkdir()
    words = "the quick brown fox jumps over a lazy dog while rain falls on quiet hills near old town".split()  # noqa: SIM905
    for name, (rows, limits, step) in BENCH_JOBS.items():
        data = root / "sample_data" / f"{name}.parquet"
        texts = [" ".join(words[(i * 7 + k) % len(words)] for k in range(8 + i % 40)) + f" #{i}" for i in range(rows)]
        pl.DataFrame({"id": [f"r{i:06d}" for i in range(rows)], "text": texts}).write_parquet(data)
        model = "" if "model:" in step else "\n    model: gpt-4o-mini"
        (root / "jobs" / f"{name}.yaml").write_text(
            f"""version: 1
name: {name.replace("_", "-")}
providers:
  apiyi:
    limits: {limits}
input: {{path: sample_data/{name}.parquet, id: id}}
steps:
  - name: s
    provider: apiyi
    {step}{model}
output: {{path: out/{name}.parquet}}
cache: {{dir: .pipeline-cache}}
"""
        )
    return root


def one(job: Path, root: Path = ROOT) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-est-"))
    try:
        for d in ("jobs", "sample_data", "schemas"):
            if (root / d).exists():
                shutil.copytree(root / d, work / d)
        rel = f"jobs/{job.name}"
        before = _estimate(work, rel)
        load = os.getloadavg()[0]
        t0 = time.monotonic()
        res = _cli(work, "run", rel, "--sim", "--fresh")
        wall = time.monotonic() - t0
        if res.returncode not in (0, 1):
            raise RuntimeError(f"run {rel} exited {res.returncode}: {res.stderr[-1500:]}")
        m = re.search(r"requests ([\d,]+) .*time ([\d.,]+)s", res.stderr)
        requests = int(m.group(1).replace(",", "")) if m else -1
        run_s = float(m.group(2).replace(",", "")) if m else wall
        out_path = re.search(r"wrote (\S+)", res.stderr)
        df = pl.read_parquet(work / out_path.group(1)) if out_path else pl.DataFrame()
        # the observed completion lengths: estimate again with the cache out of the way
        shutil.rmtree(work / ".pipeline-cache", ignore_errors=True)
        observed = _estimate(work, rel)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{job.name}: run {run_s:.1f}s (wall {wall:.1f}s with start-up), load average {load:.2f} at start")
    print(f"  {'':28} {'estimate':>12} {'after run':>12} {'actual':>12}  est/actual")
    est_p = sum(s["prompt_tokens"] for s in before["steps"])
    act_p = sum(
        int(df[f"{s['name']}__prompt_tokens"].sum() or 0)
        for s in before["steps"]
        if f"{s['name']}__prompt_tokens" in df.columns
    )
    act_c = sum(
        int(df[f"{s['name']}__completion_tokens"].sum() or 0)
        for s in before["steps"]
        if f"{s['name']}__completion_tokens" in df.columns
    )
    act_cost = sum(
        float(df[f"{s['name']}__cost"].sum() or 0) for s in before["steps"] if f"{s['name']}__cost" in df.columns
    )
    rows = [
        (
            "requests",
            sum(s["requests"] for s in before["steps"]),
            sum(s["requests"] for s in observed["steps"]),
            requests,
        ),
        ("prompt tokens", est_p, sum(s["prompt_tokens"] for s in observed["steps"]), act_p),
        (
            "completion tokens",
            sum(s["completion_tokens"] for s in before["steps"]),
            sum(s["completion_tokens"] for s in observed["steps"]),
            act_c,
        ),
        ("duration s", before["duration_s"], observed["duration_s"], run_s),
        ("cost USD", before.get("cost_usd") or 0, observed.get("cost_usd") or 0, act_cost),
    ]
    for name, e, o, a in rows:
        print(f"  {name:28} {e:12,.4g} {o:12,.4g} {a:12,.4g}  {_ratio(o, a)}")
    print(f"  binding limit: {before['binding_limit']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("jobs", nargs="*", type=Path)
    ap.add_argument("--bench", action="store_true", help="benchmark-sized jobs instead of jobs/")
    a = ap.parse_args()
    if a.bench:
        root = make_bench_root()
        try:
            for job in sorted((root / "jobs").glob("*.yaml")):
                one(job, root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        return
    for job in a.jobs or sorted((ROOT / "jobs").glob("*.yaml")):
        one(job)


if __name__ == "__main__":
    main()
