"""Images under an images-per-minute limit (issue 13): how close to the limit the client holds, and at
what cost in 429s, against a simulator (in its own process) that enforces the same ipm per 60 s.

    python bench/bench_images.py                    # 200 images under 60 images/minute (~2.5 min)
    python bench/bench_images.py --images 80 --n 2  # fewer images, 2 per request

The job: one `kind: image` step (dall-e-2, 256x256, b64_json) with `limits: {ipm: LIMIT}`; the figures
come from the simulator's record of every generation request. Printed: images answered, the held rate
over the run and the most images in any 60 s window (what the server checks) against the limit, the
429 count, and os.getloadavg() (the machine may be shared).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import SimProcess  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=200, help="images to generate in all")
    ap.add_argument("--ipm", type=int, default=60, help="images per minute, enforced by the server and the job")
    ap.add_argument("--n", type=int, default=1, help="images per request")
    a = ap.parse_args()
    rows = -(-a.images // a.n)
    sim = SimProcess(default_limits={"ipm": a.ipm, "rpm": 100000}, latency_s=0.2, jitter=0.3, limit_retry_after=True)
    work = Path(tempfile.mkdtemp(prefix="bench-images-"))
    try:
        pl.DataFrame(
            {"id": [f"i{i:05d}" for i in range(rows)], "subject": [f"a lamp, variant {i}" for i in range(rows)]}
        ).write_csv(work / "rows.csv")
        job = work / "job.yaml"
        job.write_text(f"""
version: 1
name: bench-images
providers:
  bench:
    base_url: {sim.url}
    api_key_env: BENCH_KEY
    limits: {{ipm: {a.ipm}, rpm: 100000, concurrency: 8}}
input: {{path: {work / "rows.csv"}, id: id}}
steps:
  - name: pic
    kind: image
    provider: bench
    model: dall-e-2
    prompt: "A product photo of {{{{ row.subject }}}}"
    params: {{size: 256x256, n: {a.n}, response_format: b64_json}}
output: {{path: {work / "out.parquet"}}}
cache: {{enabled: false, dir: {work / "cache"}}}
""")
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "run", str(job), "--quiet"],
            env={**os.environ, "BENCH_KEY": "bench"},
            capture_output=True,
            text=True,
        )
        recs = [r for r in sim.records() if r["path"].endswith("/images/generations")]
    finally:
        sim.stop()
        shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()
    ok = sorted((r for r in recs if r["status"] == 200), key=lambda r: r["t_start"])
    n429 = sum(1 for r in recs if r["status"] == 429)
    if not ok:
        print(f"no image answered; client exit {proc.returncode}: {proc.stderr[-1500:]}")
        return
    starts = [r["t_start"] - ok[0]["t_start"] for r in ok]
    images = len(ok) * a.n
    span = starts[-1]
    # whole-run rate over [first start, last start]: the last request's own images are not counted
    per_min = (images - a.n) / span * 60 if span > 0 else float("nan")
    most = max(sum(a.n for t in starts if s <= t < s + 60) for s in starts)
    print(
        f"{images} images ({len(ok)} requests of {a.n}) in {span:.1f}s: held {per_min:.1f}/min = "
        f"{per_min / a.ipm:.1%} of the {a.ipm}/min limit (the first window's burst included); most in any "
        f"60 s window {most} = {most / a.ipm:.1%} of the limit; 429s {n429} of {len(recs)} requests; "
        f"client exit {proc.returncode}; load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
