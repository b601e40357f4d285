"""Benchmark of the embed step (issue 3): short documents under apiyi's limits. Prints figures only.

    python bench/bench_embed.py                 # 100,000 documents (~3.4M tokens: about 3.5 minutes)
    python bench/bench_embed.py --rows 20000    # a shorter run

The simulator runs in its own process (`pipeline sim`) with apiyi's per-key limits (3000 RPM, 1M TPM,
100 concurrent) and a realistic latency (0.3 s per request + 30 us per input token, +-50% jitter); the
client runs as `pipeline run` in another. The goal: the token budget is the binding limit, used at
>= 95% of 1M tokens/min, with zero 429s. Figures come from the simulator's record of every request.
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import ROOT, SimProcess, run_client  # noqa: E402

RPM, TPM, CONCURRENCY = 3000, 1_000_000, 100
MODEL = "text-embedding-3-small"


def make_docs(path: Path, n: int) -> None:
    """`n` unique short documents: two sentences of the sample corpus each (several languages)."""
    corpus = pl.read_ndjson(ROOT / "sample_data" / "corpus.jsonl")
    sentences: list[str] = []
    for text in corpus["text"].drop_nulls():
        sentences += [s.strip() for s in re.split(r"(?<=[.!?。！？])\s*", text) if s.strip()]
    sentences = sorted(set(sentences))
    random.Random(0).shuffle(sentences)
    s = len(sentences)
    if n > s * (s - 1):
        raise SystemExit(f"at most {s * (s - 1):,} documents can be made from the corpus")
    texts = [f"{sentences[i % s]} {sentences[(i % s + 1 + i // s) % s]}" for i in range(n)]
    pl.DataFrame({"doc_id": [f"d{i:07d}" for i in range(n)], "text": texts}).write_parquet(path)


def write_job(work: Path, url: str) -> Path:
    job = work / "job.yaml"
    job.write_text(f"""
version: 1
name: bench-embed
providers:
  bench:
    base_url: {url}
    api_key_env: BENCH_KEY
    limits: {{rpm: {RPM}, tpm: {TPM}, concurrency: {CONCURRENCY}}}
    timeout_s: 120
input: {{path: {work / "docs.parquet"}, id: doc_id}}
steps:
  - name: emb
    kind: embed
    provider: bench
    model: {MODEL}
    input: "{{{{ row.text }}}}"
output: {{path: {work / "out.parquet"}}}
cache: {{dir: {work / "cache"}}}
""")
    return job


def busiest(points: list[tuple[float, int]], period: float) -> int:
    """The largest sum of amounts starting within any `period` seconds."""
    best = total = j = 0
    for t, amount in points:
        total += amount
        while points[j][0] <= t - period:
            total -= points[j][1]
            j += 1
        best = max(best, total)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--check", type=int, default=2000, help="vectors to compare with the simulator")
    a = ap.parse_args()

    sim = SimProcess(
        default_limits={"rpm": RPM, "tpm": TPM, "concurrency": CONCURRENCY},
        latency_s=0.3,
        latency_per_input_token_s=30e-6,
        jitter=0.5,
    )
    work = Path(tempfile.mkdtemp(prefix="bench-embed-"))
    try:
        make_docs(work / "docs.parquet", a.rows)
        job = write_job(work, sim.url)
        wall, rss, _ = run_client(job)
        recs = [r for r in sim.records() if r["path"].endswith("/embeddings")]
        out = pl.read_parquet(work / "out.parquet")
        docs = pl.read_parquet(work / "docs.parquet")
    finally:
        sim.stop()
    shutil.rmtree(work, ignore_errors=True)

    from pipeline.sim import sim_embedding

    ok = out.filter(pl.col("emb__status") == "ok")
    sample = random.Random(1).sample(range(out.height), min(a.check, out.height))
    mixups = sum(
        1
        for i in sample
        if out["emb"][i] is None
        or not np.array_equal(np.asarray(out["emb"][i], dtype=np.float32), sim_embedding(docs["text"][i], MODEL))
    )
    answered = [r for r in recs if r["status"] == 200]
    n429 = sum(1 for r in recs if r["status"] == 429)
    tokens = sum(r["prompt_tokens"] for r in answered)
    t0 = min(r["t_start"] for r in recs)
    t1 = max(r["t_end"] for r in recs)
    span = t1 - t0
    starts = sorted((r["t_start"], r["prompt_tokens"]) for r in answered)
    # events of requests in flight, for the peak concurrency
    level = peak = 0
    for _, d in sorted([(r["t_start"], 1) for r in recs] + [(r["t_end"], -1) for r in recs]):
        level += d
        peak = max(peak, level)
    latency = sorted(r["t_end"] - r["t_start"] for r in answered)
    per_min = tokens / span * 60
    # steady state: the minutes after the first one (the first holds the pacer's initial burst)
    steady = [(t, k) for t, k in starts if t >= t0 + 60]
    steady_rate = sum(k for _, k in steady) / (t1 - t0 - 60) * 60 if t1 - t0 > 120 else float("nan")
    print(
        f"embed benchmark: {a.rows:,} documents, {tokens:,} tokens (simulator's count), model {MODEL}, "
        f"limits {RPM} RPM / {TPM:,} TPM / {CONCURRENCY} concurrent"
    )
    print(
        f"  rows ok {ok.height:,} of {out.height:,}; vectors checked against the simulator: "
        f"{len(sample):,}, mix-ups {mixups}"
    )
    print(
        f"  requests {len(recs):,} ({len(answered):,} answered, 429s: {n429}); rows per request "
        f"{a.rows / max(1, len(answered)):,.0f}"
    )
    print(
        f"  tokens/min {per_min:,.0f} = {per_min / TPM:.1%} of {TPM:,} over the whole run "
        f"({span:.1f} s from first request to last answer); after the first minute "
        f"{steady_rate:,.0f} = {steady_rate / TPM:.1%}"
    )
    print(
        f"  busiest 60 s window: {busiest(starts, 60.0):,} tokens, "
        f"{busiest([(t, 1) for t, _ in starts], 60.0)} requests (limits {TPM:,} / {RPM}); "
        f"peak in flight {peak} (limit {CONCURRENCY})"
    )
    print(f"  latency per request: median {latency[len(latency) // 2]:.2f} s, max {latency[-1]:.2f} s")
    print(
        f"  rows/s {a.rows / span:,.0f} (requests span), {a.rows / wall:,.0f} (client wall {wall:.1f} s "
        f"incl. start-up and final file); client peak RSS {rss} MB"
    )


if __name__ == "__main__":
    main()
