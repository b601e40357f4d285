"""Benchmark of the transcribe step (issue 4): files/hour and audio-hours/hour at concurrency 100.

    python bench/bench_transcribe.py        # 500 files of 1-3 s of audio, 3 s of latency per audio second
    python bench/bench_transcribe.py --files 200 --latency-per-audio-s 2

Time is scaled so the run takes about a minute: short generated WAV files, and a simulated latency
proportional to the audio's length (latency_per_audio_s) far above a real server's, so every request
is long and the concurrency limit, not the request rate, is what binds (Little's law: 100 in flight at
~6 s each is ~1000 requests/min, a third of the 3000/min limit). The simulator runs in its own process
(`pipeline sim`), the client as `pipeline run` in another; the figures come from the simulator's record.

Occupancy = mean requests in flight / 100, from the simulator's own start and end times. It is given
over the backlog period (first start to last start: while files were still waiting, the only time the
limit can bind) and over the whole busy period (which adds the drain at the end, when fewer than 100
files are left). Scale-free figure: achieved audio-seconds per second / (100 / latency_per_audio_s).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import urllib.request
import wave
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import SimProcess, run_client  # noqa: E402

RATE = 8000


def make_files(folder: Path, n: int, lo_s: float, hi_s: float, seed: int = 1) -> float:
    """`n` distinct mono WAV files of lo..hi seconds; returns their total length in seconds."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    total = 0.0
    for i in range(n):
        seconds = float(rng.uniform(lo_s, hi_s))
        samples = int(seconds * RATE)
        t = np.arange(samples) / RATE
        pcm = 0.3 * np.sin(2 * np.pi * (200 + i) * t) + 0.05 * rng.standard_normal(samples)
        with wave.open(str(folder / f"rec{i:05d}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes((pcm * 32767).astype("<i2").tobytes())
        total += samples / RATE
    return total


def write_job(work: Path, url: str, conc: int) -> Path:
    job = work / "job.yaml"
    job.write_text(f"""
version: 1
name: bench-transcribe
providers:
  bench:
    base_url: {url}
    api_key_env: BENCH_KEY
    limits: {{rpm: 3000, tpm: 1000000, concurrency: {conc}}}
input: {{path: "{work / "archive"}/*.wav"}}
steps:
  - name: transcript
    kind: transcribe
    provider: bench
    model: whisper-1
    audio: "{{{{ row.path }}}}"
    response_format: verbose_json
output: {{path: {work / "out.parquet"}}}
cache: {{dir: {work / "cache"}, enabled: false}}
""")
    return job


def warm_up(sim: SimProcess, sample: Path) -> None:
    """One request before the measured run (the simulator loads its tokenizer on first use), then reset."""
    boundary = "benchwarmup"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="w.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    body += sample.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(
        sim.url + "/audio/transcriptions",
        data=body,
        method="POST",
        headers={"Authorization": "Bearer bench", "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        r.read()
    with urllib.request.urlopen(
        urllib.request.Request(sim.url.removesuffix("/v1") + "/_sim/reset", method="POST"), timeout=10
    ) as r:
        r.read()


def occupancy(recs: list[dict[str, Any]], t0: float, t1: float, conc: int) -> tuple[float, int]:
    """(mean in flight / conc over [t0, t1], peak in flight)."""
    events = sorted([(r["t_start"], 1) for r in recs] + [(r["t_end"], -1) for r in recs], key=lambda e: (e[0], e[1]))
    level = peak = 0
    area = 0.0
    last = t0
    for t, d in events:
        if t > last:
            lo, hi = max(last, t0), min(t, t1)
            if hi > lo:
                area += level * (hi - lo)
            last = t
        level += d
        peak = max(peak, level)
    return area / (conc * (t1 - t0)), peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--latency-per-audio-s", type=float, default=3.0)
    ap.add_argument("--min-s", type=float, default=1.0)
    ap.add_argument("--max-s", type=float, default=3.0)
    args = ap.parse_args()
    conc, lat = args.concurrency, args.latency_per_audio_s

    work = Path(tempfile.mkdtemp(prefix="bench-transcribe-"))
    sim = SimProcess(default_limits={"concurrency": conc}, latency_per_audio_s=lat, jitter=0.1)
    try:
        audio_total = make_files(work / "archive", args.files, args.min_s, args.max_s)
        warm_up(sim, work / "archive" / "rec00000.wav")
        wall, rss, _ = run_client(write_job(work, sim.url, conc))
        recs = [r for r in sim.records() if r["path"].endswith("/audio/transcriptions")]
    finally:
        sim.stop()
        shutil.rmtree(work, ignore_errors=True)

    ok = [r for r in recs if r["status"] == 200]
    n429 = sum(1 for r in recs if r["status"] == 429)
    first_start = min(r["t_start"] for r in recs)
    last_start = max(r["t_start"] for r in recs)
    last_end = max(r["t_end"] for r in recs)
    span = last_end - first_start
    occ_backlog, peak = occupancy(recs, first_start, last_start, conc)
    occ_busy, _ = occupancy(recs, first_start, last_end, conc)
    audio_sent = sum(r["body"]["duration_s"] for r in ok)
    latencies = [r["t_end"] - r["t_start"] for r in ok]
    ideal = conc / lat  # audio seconds per second with every slot always busy
    print(json.dumps({"files": args.files, "ok": len(ok), "429s": n429, "audio_s": round(audio_total, 1)}))
    print(
        f"transcribe: {len(ok)}/{args.files} files ok, {n429} 429s, audio {audio_total / 60:.1f} min "
        f"({args.min_s:g}-{args.max_s:g} s each), latency {lat:g} s per audio second "
        f"(mean {np.mean(latencies):.2f} s, max {max(latencies):.2f} s), concurrency {conc}"
    )
    print(f"  busy period {span:.1f} s (client wall {wall:.1f} s incl. start-up, peak RSS {rss} MB)")
    print(
        f"  throughput: {len(ok) / span * 3600:,.0f} files/hour, {audio_sent / span:,.2f} audio-hours/hour "
        f"(= {audio_sent / span / ideal:.1%} of the {ideal:.4g} audio-s/s of {conc} always-busy slots)"
    )
    print(
        f"  occupancy: {occ_backlog:.1%} while files were waiting (first to last start, "
        f"{last_start - first_start:.1f} s), {occ_busy:.1%} over the whole busy period incl. the final "
        f"drain; peak in flight {peak} (limit {conc})"
    )


if __name__ == "__main__":
    main()
