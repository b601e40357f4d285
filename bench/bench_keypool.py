"""Key pools (issue 10): how much of the pool's summed limits the client holds, and what one revoked key costs.

    python bench/bench_keypool.py                 # both scenarios, ~1 minute of work each
    python bench/bench_keypool.py pool --minutes 2
    python bench/bench_keypool.py revoke --rows 3000

Four keys of 600 RPM each (the job's `limits` apply per key); the simulator enforces each key's
600 RPM over 60 s on its own, and answers with 0.5 s (+-30%) latency.
  pool    all four keys for the whole run: target >= 97% of 2,400 RPM and no 429
  revoke  the fourth key is revoked half-way (the simulator answers 401 invalid_api_key from then on):
          the other three carry on at >= 97% of 1,800 RPM and every row ends ok

The simulator runs in its own process (`pipeline sim`), the client as `pipeline run` in another; the
figures come from the simulator's record of every request. Rates are over [first start, last start] of
the requests answered 200. Each line ends with os.getloadavg(): the machine may be shared.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import SimProcess, make_rows  # noqa: E402

RPM_PER_KEY, CONC_PER_KEY = 600, 50
KEYS = [f"sk-bench-pool-key-{i}{i}{i}{i}" for i in range(1, 5)]


def write_job(work: Path, url: str, rows: int) -> Path:
    data = work / "rows.parquet"
    make_rows(data, rows)
    job = work / "job.yaml"
    job.write_text(f"""
version: 1
name: bench-keypool
providers:
  bench:
    base_url: {url}
    api_key_env: [BENCH_KEY_1, BENCH_KEY_2, BENCH_KEY_3, BENCH_KEY_4]
    limits: {{rpm: {RPM_PER_KEY}, concurrency: {CONC_PER_KEY}}}
    timeout_s: 120
input: {{path: {data}, id: id}}
steps:
  - name: label
    kind: chat
    provider: bench
    model: gpt-4o-mini
    messages:
      - {{role: user, content: "{{{{ row.text }}}}"}}
    params: {{max_tokens: 5}}
output: {{path: {work / "out.parquet"}}}
cache: {{enabled: false, dir: {work / "cache"}}}
""")
    return job


def per_min(starts: list[float]) -> float:
    """Requests per minute over [first start, last start] (the last one's own share not counted)."""
    span = starts[-1] - starts[0] if len(starts) > 1 else 0.0
    return (len(starts) - 1) / span * 60 if span > 0 else 0.0


def load() -> str:
    a, b, c = os.getloadavg()
    return f"load {a:.2f} {b:.2f} {c:.2f}"


def run(scenario: str, rows: int) -> None:
    revoke_at = None
    if scenario == "revoke":
        # half of the run's time at 2,400/min, then 1,800/min: the 4th key gets a quarter of the first half
        first_half = rows * 2400 // (2400 + 1800)
        revoke_at = first_half // 4
    sim_opts: dict[str, Any] = {"keys": {k: {"rpm": RPM_PER_KEY} for k in KEYS}, "latency_s": 0.5, "jitter": 0.3}
    if revoke_at is not None:
        sim_opts["revoke_after"] = {KEYS[3]: revoke_at}
    sim = SimProcess(**sim_opts)
    work = Path(tempfile.mkdtemp(prefix=f"bench-keypool-{scenario}-"))
    try:
        job = write_job(work, sim.url, rows)
        env = {**os.environ, **{f"BENCH_KEY_{i + 1}": k for i, k in enumerate(KEYS)}}
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "run", str(job)], env=env, capture_output=True, text=True
        )
        recs = [r for r in sim.records() if r["path"].endswith("/chat/completions")]
        statuses = (
            pl.read_parquet(work / "out.parquet")["label__status"].value_counts()
            if (work / "out.parquet").exists()
            else None
        )
    finally:
        sim.stop()
        shutil.rmtree(work, ignore_errors=True)
    if not recs:
        print(
            f"{scenario}: no request reached the server; client exit {proc.returncode}: "
            f"{re.sub(chr(92) + 's+', ' ', proc.stderr[-1500:])}",
            flush=True,
        )
        return
    recs.sort(key=lambda r: r["t_start"])
    t0 = recs[0]["t_start"]
    ok = [r for r in recs if r["status"] == 200]
    n429 = sum(1 for r in recs if r["status"] == 429)
    n401 = sum(1 for r in recs if r["status"] == 401)
    rows_ok = 0 if statuses is None else int(statuses.filter(pl.col("label__status") == "ok")["count"].sum())
    print(
        f"{scenario}: {rows:,} rows, {len(ok):,} requests ok, {n429} 429s, {n401} 401s in "
        f"{ok[-1]['t_start'] - t0:.1f}s; rows ok {rows_ok:,}/{rows:,}; client exit {proc.returncode}; {load()}",
        flush=True,
    )
    for key in KEYS:
        mine = [r["t_start"] for r in ok if r["key"] == key]
        print(
            f"  key ...{key[-4:]}: {len(mine):,} ok at {per_min(mine):,.0f}/min = {per_min(mine) / RPM_PER_KEY:.1%} "
            f"of {RPM_PER_KEY}; {load()}",
            flush=True,
        )
    if scenario == "pool":
        rate = per_min([r["t_start"] for r in ok])
        cap = RPM_PER_KEY * len(KEYS)
        print(
            f"  pool: {rate:,.0f}/min = {rate / cap:.1%} of {cap:,} RPM (target >= 97%); "
            f"429s {n429} (target 0); {load()}",
            flush=True,
        )
    else:
        cut = next((r["t_start"] for r in recs if r["status"] == 401), None)
        if cut is None:
            print("  the key was never refused: raise --rows", flush=True)
        else:
            before = [r["t_start"] for r in ok if r["t_start"] < cut]
            after = [r["t_start"] for r in ok if r["t_start"] >= cut and r["key"] != KEYS[3]]
            print(
                f"  before the revocation (at {cut - t0:.1f}s): {per_min(before):,.0f}/min = "
                f"{per_min(before) / 2400:.1%} of 2,400 RPM; {load()}",
                flush=True,
            )
            print(
                f"  after it, three keys: {per_min(after):,.0f}/min = {per_min(after) / 1800:.1%} of 1,800 RPM "
                f"(target >= 97%); every row ok: {rows_ok == rows}; {load()}",
                flush=True,
            )
    for line in proc.stderr.splitlines():
        if line.startswith(("limits of", "  key ")) or "removed from the pool" in line:
            print(f"  client: {line.strip()}", flush=True)
    if proc.returncode != 0:
        print(re.sub(r"\s+", " ", proc.stderr[-1500:]), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", nargs="?", default="all", choices=["pool", "revoke", "all"])
    ap.add_argument("--minutes", type=float, default=1.0, help="work for about this long per scenario")
    ap.add_argument("--rows", type=int, default=None, help="rows per scenario (overrides --minutes)")
    a = ap.parse_args()
    for scenario in ("pool", "revoke") if a.scenario == "all" else (a.scenario,):
        rate = 2400 if scenario == "pool" else 2100  # revoke: half the time at 2,400, half at 1,800
        run(scenario, a.rows or int(rate * a.minutes))


if __name__ == "__main__":
    main()
