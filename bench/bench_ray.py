"""The Ray backend (issue 11): four worker actors under one global limiter, against the local backend.

    python bench/bench_ray.py                    # ~1 minute of work per backend
    python bench/bench_ray.py --minutes 2 --workers 4

The simulator runs in its own process (`pipeline sim`) and enforces 3,000 RPM / 1,000,000 TPM per key
over 60 s, answering in 0.2 s (+-30%). The same job (chat, ~40 tokens a request: requests/min binds)
runs twice: on Ray (a local Ray, `ray.init()` in this process, four worker actors, one limiter actor),
then with the local backend (`pipeline run`, its own process), each against a fresh simulator. Figures
come from the simulator's record of every request: the rate over [first start, last start] of the
requests answered 200, as a share of the limit; the most requests in any 60 s and any 1 s window; 429s.
For Ray also: Ray's start-up (ray.init, the actors' start until the first request), the limiter's calls
per second and what one call costs (4 callers x 500 `settle` calls on the live limiter). Each line ends
with os.getloadavg(): the machine may be shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import SimProcess, write_job  # noqa: E402

RPM, TPM, CONC = 3000, 1_000_000, 100


def load() -> str:
    a, b, c = os.getloadavg()
    return f"load {a:.2f} {b:.2f} {c:.2f}"


def most_in_window(times: list[float], window: float) -> int:
    ts = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(ts):
        while ts[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def per_min(starts: list[float]) -> float:
    span = starts[-1] - starts[0] if len(starts) > 1 else 0.0
    return (len(starts) - 1) / span * 60 if span > 0 else 0.0


def report(name: str, recs: list[dict[str, Any]], rows: int) -> None:
    recs = sorted(recs, key=lambda r: r["t_start"])
    ok = [r["t_start"] for r in recs if r["status"] == 200]
    n429 = sum(1 for r in recs if r["status"] == 429)
    rate = per_min(ok)
    mid = [t for t in ok if ok[0] + 10 <= t <= ok[-1] - 5]
    print(
        f"{name}: {len(ok):,}/{rows:,} requests ok in {ok[-1] - ok[0]:.1f}s: {rate:,.0f}/min = {rate / RPM:.1%} of "
        f"{RPM:,} RPM (target >= 97%); most in 60 s {most_in_window(ok, 60.0):,} (limit {RPM:,}), in 1 s "
        f"{most_in_window(ok, 1.0)} (share {RPM // 60}); 429s {n429}; from 10 s after the first request to 5 s "
        f"before the last: {per_min(mid) / RPM:.1%}; {load()}",
        flush=True,
    )
    first = [sum(1 for t in ok if ok[0] + i <= t < ok[0] + i + 1) for i in range(8)]
    last = [sum(1 for t in ok if ok[-1] - i - 1 < t <= ok[-1] - i) for i in reversed(range(4))]
    print(f"  requests per second: the first 8 {first}, the last 4 {last}", flush=True)


def sim() -> SimProcess:
    """A simulator asked one request before the run: it loads its tokenizer vocabulary on its first answer
    (about half a second), which would hold the run's first requests and stamp them in a lump."""
    s = SimProcess(default_limits={"rpm": RPM, "tpm": TPM}, window_s=60.0, latency_s=0.2, jitter=0.3)
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "warm up"}]}).encode()
    req = urllib.request.Request(
        f"{s.url}/chat/completions", body, {"Content-Type": "application/json", "Authorization": "Bearer warm-up"}
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        r.read()
    return s


async def limiter_cost(handle: Any, callers: int = 4, calls: int = 500) -> tuple[float, float]:
    """Calls per second the live limiter answers with `callers` callers, and the mean call time (ms)."""
    from pipeline.raybackend.limiter import Settlement

    async def one(i: int) -> float:
        t = time.perf_counter()
        for _ in range(calls):
            await handle.settle.remote(f"bench-{i}", Settlement())
        return time.perf_counter() - t

    t0 = time.perf_counter()
    spent = await asyncio.gather(*(one(i) for i in range(callers)))
    total = time.perf_counter() - t0
    return callers * calls / total, sum(spent) / (callers * calls) * 1000


def run_ray(rows: int, workers: int) -> None:
    import ray

    from pipeline.executor import RunOptions
    from pipeline.plan import build_plan
    from pipeline.raybackend import RayExecutor, RayOptions

    s = sim()
    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    try:
        job = write_job(work, s.url, rows, f"{{rpm: {RPM}, tpm: {TPM}, concurrency: {CONC}}}", cache=False)
        os.environ["BENCH_KEY"] = "sk-bench-ray-0000"
        t0 = time.monotonic()
        ray.init(include_dashboard=False, namespace="pipeline", log_to_driver=False)
        init_s = time.monotonic() - t0
        runner = RayExecutor(build_plan(job), RunOptions(), None, RayOptions(workers=workers))
        t_run = time.monotonic()
        summary = asyncio.run(runner.run())
        recs = [r for r in s.records() if r["path"].endswith("/chat/completions") and r["t_start"] >= t_run]
        first = min(r["t_start"] for r in recs)
        # the simulator stamps requests with its loop's clock: CLOCK_MONOTONIC, ours too on one machine
        report(f"ray ({workers} workers)", recs, rows)
        g = runner.cluster.gate_figures()
        name = next(iter(runner.limiters))
        stats, own = ray.get(runner.limiters[name].stats.remote())
        span = max(r["t_start"] for r in recs) - first
        print(
            f"  start-up: ray.init {init_s:.1f}s; run start to first request {first - t_run:.1f}s (limiter and "
            f"worker actors start, each rebuilds the plan); "
            f"rows ok {summary.status_counts['label'].get('ok', 0):,}; {load()}",
            flush=True,
        )
        print(
            f"  limiter: {own['calls']:,} calls = {own['calls'] / span:.1f}/s over the run ({g.get('leases', 0):,.0f} "
            f"leases, {own['granted']:,} grants, {own['refunded']:,} given back: {g.get('late', 0):,.0f} late, "
            f"{g.get('unused', 0):,.0f} unused); grants per lease {own['granted'] / max(1, g.get('leases', 1)):.1f}; "
            f"binding {stats.binding}; latest grant sent {g.get('max_late_s', 0) * 1000:.1f} ms after its time; "
            f"{load()}",
            flush=True,
        )

        async def cost() -> tuple[float, float]:
            return await limiter_cost(runner.limiters[name])

        per_s, ms = asyncio.run(cost())
        print(f"  limiter call cost: {per_s:,.0f} calls/s with 4 callers, {ms:.2f} ms each; {load()}", flush=True)
        ray.kill(runner.limiters[name])
        ray.shutdown()
    finally:
        s.stop()
        shutil.rmtree(work, ignore_errors=True)


def run_local(rows: int) -> None:
    s = sim()
    work = Path(tempfile.mkdtemp(prefix="bench-ray-local-"))
    try:
        job = write_job(work, s.url, rows, f"{{rpm: {RPM}, tpm: {TPM}, concurrency: {CONC}}}", cache=False)
        env = {**os.environ, "BENCH_KEY": "sk-bench-ray-0000"}
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(job), "-q"], env=env, text=True)
        recs = [r for r in s.records() if r["path"].endswith("/chat/completions") and r["t_start"] >= t0]
        report("local (one process)", recs, rows)
        first = min(r["t_start"] for r in recs)
        print(f"  start-up: process start to first request {first - t0:.1f}s; exit {proc.returncode}; {load()}")
    finally:
        s.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=1.0, help="work for about this long per backend")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--only", choices=["ray", "local"], default=None)
    a = ap.parse_args()
    rows = int(RPM * a.minutes)
    print(f"{rows:,} rows per backend at {RPM:,} RPM / {TPM:,} TPM; {os.cpu_count()} cores; {load()}", flush=True)
    if a.only in (None, "ray"):
        run_ray(rows, a.workers)
    if a.only in (None, "local"):
        run_local(rows)


if __name__ == "__main__":
    main()
