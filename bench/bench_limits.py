"""Limits that hold on real servers (issue 8): how much of the binding limit the client holds, and at
what cost in 429s and stalls, against servers that count the way real ones do.

    python bench/bench_limits.py chat exact60      # one scenario (see SCENARIOS), default 90 s of work
    python bench/bench_limits.py embed per1s --seconds 40
    python bench/bench_limits.py all all           # every kind x scenario

Job: 3000 RPM / 1M TPM / 100 concurrent. Chat is RPM-bound (short prompts, max_tokens 5, 0.5 s
latency); embed is TPM-bound (short docs packed into requests). Scenarios (what the server does):
  exact60   enforces per 60 s exactly what the job says
  per1s     enforces the same per 1 s (3000 RPM as 50 per second, 1M TPM as 16,666 per second)
  half60    its real limits are half the job's, per 60 s     (figures after the first minute)
  half1s    its real limits are half the job's, per 1 s      (figures after the first minute)
  headers   half the job's limits per 60 s, announced in OpenAI-style x-ratelimit-* headers
Every limit 429 carries retry-after / retry-after-ms, as OpenAI's do.

The simulator runs in its own process (`pipeline sim`), the client as `pipeline run` in another; the
figures come from the simulator's record of every request. Each line ends with os.getloadavg(): the
machine may be shared, and a loaded machine delays requests between the client's clock and the
server's (which is what makes per-second limits hard).
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
from bench_core import SimProcess  # noqa: E402

RPM, TPM, CONC = 3000, 1_000_000, 100
SCENARIOS: dict[str, dict[str, Any]] = {
    "exact60": {},
    "per1s": {"limit_period_s": 1},
    "half60": {"limit_scale": 0.5},
    "half1s": {"limit_scale": 0.5, "limit_period_s": 1},
    "headers": {"limit_scale": 0.5, "rate_headers": True},
}
KINDS = ("chat", "embed")
WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "omicron",
    "pi",
    "rho",
    "sigma",
    "tau",
    "upsilon",
    "phi",
    "chi",
    "psi",
    "omega",
]


def write_inputs(work: Path, kind: str, seconds: float, scale: float) -> Path:
    """Rows for `seconds` of work at the job's binding limit (twice as long when the server allows half)."""
    path = work / "rows.parquet"
    if kind == "chat":
        n = int(RPM / 60 * seconds)
        texts = [f"Review {i}: {' '.join(WORDS[(i + k) % len(WORDS)] for k in range(6))}" for i in range(n)]
    else:
        # ~20 tokens a doc: 1M TPM is ~830 docs a second
        n = int(TPM / 60 * seconds / 20)
        texts = [" ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(12)) + f" #{i}" for i in range(n)]
    pl.DataFrame({"id": [f"r{i:07d}" for i in range(len(texts))], "text": texts}).write_parquet(path)
    return path


def write_job(work: Path, url: str, kind: str, data: Path) -> Path:
    if kind == "chat":
        step = """
  - name: s
    kind: chat
    provider: bench
    model: gpt-4o-mini
    messages:
      - {role: user, content: "{{ row.text }}"}
    params: {max_tokens: 5}"""
    else:
        step = """
  - name: s
    kind: embed
    provider: bench
    model: text-embedding-3-small
    input: "{{ row.text }}"
    batch_size: 2048"""
    job = work / "job.yaml"
    job.write_text(f"""
version: 1
name: bench-limits
providers:
  bench:
    base_url: {url}
    api_key_env: BENCH_KEY
    limits: {{rpm: {RPM}, tpm: {TPM}, concurrency: {CONC}}}
    timeout_s: 120
input: {{path: {data}, id: id}}
steps:{step}
output: {{path: {work / "out.parquet"}}}
cache: {{enabled: false, dir: {work / "cache"}}}
""")
    return job


def longest_gap(times: list[float]) -> float:
    return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)


def run(kind: str, scenario: str, seconds: float) -> None:
    opts = SCENARIOS[scenario]
    scale = opts.get("limit_scale", 1.0)
    latency = {
        "chat": {"latency_s": 0.5, "jitter": 0.3},
        "embed": {"latency_s": 0.1, "jitter": 0.3, "latency_per_input_token_s": 1e-5},
    }[kind]
    sim = SimProcess(
        default_limits={"rpm": RPM, "tpm": TPM, "concurrency": CONC}, limit_retry_after=True, **latency, **opts
    )
    work = Path(tempfile.mkdtemp(prefix=f"bench-limits-{kind}-{scenario}-"))
    try:
        job = write_job(work, sim.url, kind, write_inputs(work, kind, seconds, scale))
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "run", str(job)],
            env={**os.environ, "BENCH_KEY": "bench"},
            capture_output=True,
            text=True,
        )
        recs = [r for r in sim.records() if r["path"].endswith(("/chat/completions", "/embeddings"))]
    finally:
        sim.stop()
        shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()
    if not recs:
        print(
            f"{kind} {scenario}: no request reached the server; client exit {proc.returncode}: "
            f"{re.sub(chr(92) + 's+', ' ', proc.stderr[-1500:])}",
            flush=True,
        )
        return
    recs.sort(key=lambda r: r["t_start"])
    t0 = recs[0]["t_start"]
    ok = [r for r in recs if r["status"] == 200]
    n429 = sum(1 for r in recs if r["status"] == 429)
    first_429 = next((r["t_start"] - t0 for r in recs if r["status"] == 429), None)
    # the binding limit: requests for chat, tokens (what the server charged) for embed
    real = (RPM if kind == "chat" else TPM) * scale
    skip = 60.0 if scale < 1 else 0.0  # half-limit scenarios are judged after the first minute
    starts = [r["t_start"] - t0 for r in ok]
    end = starts[-1]
    if end - skip < 10:
        skip = 0.0  # a short run: judge all of it
    counted = [r for r, t in zip(ok, starts, strict=True) if t >= skip]
    amount = len(counted) if kind == "chat" else sum(r["prompt_tokens"] for r in counted)
    span = end - (starts[0] if skip == 0 else skip)
    # whole-run rate over [first start, last start]: the last request's own share is not counted
    per_min = (amount - (1 if kind == "chat" else counted[-1]["prompt_tokens"])) / span * 60 if span > 0 else 0
    summary = [ln for ln in proc.stderr.splitlines() if ln.startswith("limits of")]
    print(
        f"{kind:5} {scenario:8} {len(ok):6,} ok in {end:6.1f}s: {per_min:12,.0f}/min = {per_min / real:6.1%} of "
        f"the real {'RPM' if kind == 'chat' else 'TPM'} {real:,.0f}"
        f"{' (after the first minute)' if skip else ''}; 429s {n429} = {n429 / len(recs):.2%} of "
        f"{len(recs):,} requests (first at {'-' if first_429 is None else f'{first_429:.2f}s'}); "
        f"longest stall {longest_gap([r['t_start'] for r in ok]):.2f}s; exit {proc.returncode}; "
        f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        flush=True,
    )
    for line in summary:
        print(f"      client: {line}", flush=True)
    if proc.returncode not in (0, 1):
        print(re.sub(r"\s+", " ", proc.stderr[-1500:]), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=[*KINDS, "all"])
    ap.add_argument("scenario", choices=[*SCENARIOS, "all"])
    ap.add_argument(
        "--seconds",
        type=float,
        default=90.0,
        help="work for this long at the job's limits (half-limit servers take twice as long)",
    )
    a = ap.parse_args()
    for kind in KINDS if a.kind == "all" else (a.kind,):
        for scenario in SCENARIOS if a.scenario == "all" else (a.scenario,):
            run(kind, scenario, a.seconds)


if __name__ == "__main__":
    main()
