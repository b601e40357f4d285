"""Benchmarks of the core (issue 2). Each prints its figures; none asserts on time.

    python bench/bench_core.py rpm          # achieved req/min vs limit at RPM 3000, 100 concurrent, ~1 s latency
    python bench/bench_core.py throughput   # client req/s against a zero-latency simulator, no limits
    python bench/bench_core.py memory       # peak RSS of the client on a 200,000-row job
    python bench/bench_core.py cached       # rows/s of a re-run answered entirely from the cache
                                            # (--fresh: every row replayed; such a run opens no HTTP session)
    python bench/bench_core.py all

The simulator runs in its own process (`pipeline sim`), as a real server would; the client runs as
`pipeline run` in another, and its figures come from its own summary and from the simulator's record.
The package the client imports is byte-compiled first, as `pip install` does (where
PYTHONDONTWRITEBYTECODE=1 is set, as in this sandbox, every start would otherwise compile `pipeline`
from source: ~0.66 G instructions, a fifth of the imports); `--no-compile` skips this.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SimProcess:
    """`pipeline sim` in a subprocess, with its own core."""

    def __init__(self, **opts: Any) -> None:
        self.port = free_port()
        self.config = Path(tempfile.mkstemp(suffix=".json")[1])
        self.config.write_text(json.dumps(opts))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "sim", "--port", str(self.port), "--config", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    why = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    raise RuntimeError(f"simulator did not start: {why}") from None
                time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def records(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/_sim/records", timeout=120) as r:
            data = json.loads(r.read())
        return data["records"] if isinstance(data, dict) else data

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.config.unlink(missing_ok=True)


def make_rows(path: Path, n: int) -> None:
    texts = [
        "Great value, works as described.",
        "Broke after two days, very disappointed.",
        "It is okay for the price.",
        "这个产品很好，我很喜欢。",
        "Llegó tarde pero funciona bien.",
    ]
    pl.DataFrame(
        {"id": [f"d{i:07d}" for i in range(n)], "text": [f"{texts[i % len(texts)]} #{i}" for i in range(n)]}
    ).write_parquet(path)


def write_job(work: Path, url: str, rows: int, limits: str, *, max_tokens: int = 5, cache: bool = True) -> Path:
    data = work / "rows.parquet"
    if not data.exists():
        make_rows(data, rows)
    job = work / "job.yaml"
    job.write_text(f"""
version: 1
name: bench
providers:
  bench:
    base_url: {url}
    api_key_env: BENCH_KEY
    limits: {limits}
    timeout_s: 120
input: {{path: {data}, id: id}}
steps:
  - name: label
    kind: chat
    provider: bench
    model: gpt-4o-mini
    messages:
      - {{role: system, content: "Label the sentiment: positive, negative or neutral."}}
      - {{role: user, content: "{{{{ row.text }}}}"}}
    params: {{temperature: 0, max_tokens: {max_tokens}}}
output: {{path: {work / "out.parquet"}}}
cache: {{dir: {work / "cache"}, enabled: {str(cache).lower()}}}
""")
    return job


PEAK_ANON_MB: list[int] = []
PEAK_HWM_MB: list[int] = []  # each client's own high-water mark (VmHWM), as last sampled
CPU_S: list[float] = []  # user + system CPU of each client run (the figure a loaded machine disturbs least)


def _watch_anon(pid: int, stop: threading.Event) -> None:
    """Peak anonymous memory (heap; shared-library code pages excluded) of a child, sampled; and its
    own high-water mark of RSS (VmHWM: kept by the kernel, so only a peak in the last 50 ms is missed)."""
    peak = hwm = 0
    while not stop.is_set():
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("RssAnon:"):
                        peak = max(peak, int(line.split()[1]) // 1024)
                    elif line.startswith("VmHWM:"):
                        hwm = max(hwm, int(line.split()[1]) // 1024)
        except OSError:
            break
        stop.wait(0.05)
    PEAK_ANON_MB.append(peak)
    PEAK_HWM_MB.append(hwm)


def run_client(job: Path, *extra: str, watch: Callable[[int], None] | None = None) -> tuple[float, int, str]:
    """Run `pipeline run` in a child; (wall seconds, its own peak RSS in MB, stderr). `watch(pid)`: run in a
    thread of its own while the child runs (it returns once the child is gone)."""
    env = {**os.environ, "BENCH_KEY": "bench"}
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "run", str(job), "--quiet", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_anon, args=(proc.pid, stop), daemon=True)
    watcher.start()
    watching = threading.Thread(target=watch, args=(proc.pid,), daemon=True) if watch is not None else None
    if watching is not None:
        watching.start()
    _, status, usage = os.wait4(proc.pid, 0)
    stop.set()
    watcher.join()
    if watching is not None:
        watching.join()
    CPU_S.append(usage.ru_utime + usage.ru_stime)
    wall = time.monotonic() - t0
    err = proc.stderr.read().decode() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"pipeline run exited {proc.returncode}: {err[-2000:]}")
    # the child's own peak: its ru_maxrss starts at this process's RSS when it was forked (the rows of a
    # 200,000-row job made here read as a 531 MB "peak" of a client that never passed 220 MB)
    return wall, PEAK_HWM_MB[-1] or usage.ru_maxrss // 1024, err


def run_elapsed(log: Path) -> float:
    """The run's own time (`run.end` elapsed_s in its --log): from the start of the run to its final file,
    the process start-up (imports, reading the job) excluded."""
    ends = [e for e in map(json.loads, log.read_text().splitlines()) if e.get("event") == "run.end"]
    return float(ends[-1]["elapsed_s"])


def bench_rpm(minutes: float) -> None:
    rpm, conc = 3000, 100
    rows = int(rpm * minutes)
    sim = SimProcess(default_limits={"rpm": rpm, "tpm": 1_000_000, "concurrency": conc}, latency_s=1.0, jitter=0.3)
    work = Path(tempfile.mkdtemp(prefix="bench-rpm-"))
    try:
        job = write_job(work, sim.url, rows, f"{{rpm: {rpm}, tpm: 1000000, concurrency: {conc}}}", cache=False)
        wall, _, _ = run_client(job)
        recs = [r for r in sim.records() if r["path"].endswith("/chat/completions")]
    finally:
        sim.stop()
        shutil.rmtree(work, ignore_errors=True)
    starts = sorted(r["t_start"] for r in recs)
    n429 = sum(1 for r in recs if r["status"] == 429)
    # busiest rolling 60 s window, and the steady rate over whole minutes from the first start
    worst, j = 0, 0
    for i, t in enumerate(starts):
        while starts[j] <= t - 60:
            j += 1
        worst = max(worst, i - j + 1)
    span = starts[-1] - starts[0]
    achieved = (len(starts) - 1) / span * 60 if span > 0 else 0
    print(
        f"rpm: {len(recs)} requests in {span:.1f}s (client wall {wall:.1f}s); achieved {achieved:,.0f} req/min "
        f"= {achieved / rpm:.1%} of {rpm}; busiest 60 s window {worst} starts; 429s received: {n429}"
    )


def bench_throughput(rows: int) -> None:
    sim = SimProcess()
    work = Path(tempfile.mkdtemp(prefix="bench-tp-"))
    try:
        job = write_job(work, sim.url, rows, "{}", cache=True)
        load = os.getloadavg()[0]
        wall, rss, err = run_client(job, "--log", str(work / "run.log"))
        run_s = run_elapsed(work / "run.log")
        n = sum(1 for r in sim.records() if r["path"].endswith("/chat/completions"))
    finally:
        sim.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"throughput: {n:,} requests in {wall:.1f}s wall (process start, input, cache writes and Parquet "
        f"included) = {n / wall:,.0f} requests/s; {n / run_s:,.0f} requests/s over the run's own {run_s:.2f}s "
        f"(start-up excluded); client CPU {CPU_S[-1]:.2f}s = {CPU_S[-1] / n * 1000:.2f} s per 1,000 requests; "
        f"peak RSS {rss} MB  [load average {load:.2f}]"
    )


def bench_memory(rows: int) -> None:
    sim = SimProcess()
    work = Path(tempfile.mkdtemp(prefix="bench-mem-"))
    try:
        job = write_job(work, sim.url, rows, "{}", cache=True)
        wall, rss, _ = run_client(job)
        out = pl.read_parquet(work / "out.parquet")
        ok = int((out["label__status"] == "ok").sum())
    finally:
        sim.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"memory: {rows:,}-row job, {ok:,} rows ok, peak RSS {rss} MB (of which anonymous/heap "
        f"{PEAK_ANON_MB[-1]} MB; the rest is shared-library code), {wall:.1f}s ({rows / wall:,.0f} rows/s)"
    )


def compile_package() -> None:
    """Byte-compile the `pipeline` package the children import (from the current directory), as
    `pip install` does; print where it is."""
    code = "import compileall, pipeline, sys; d = pipeline.__path__[0]; compileall.compile_dir(d, quiet=1); print(d)"
    where = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    print(f"client package: {where} (byte-compiled)")


def bench_cached(rows: int) -> None:
    sim = SimProcess()
    work = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    try:
        job = write_job(work, sim.url, rows, "{}", cache=True)
        run_client(job)
        before = len(sim.records())
        load = os.getloadavg()[0]
        wall, rss, _ = run_client(job, "--fresh", "--log", str(work / "run.log"))
        cpu = CPU_S[-1]
        run_s = run_elapsed(work / "run.log")
        after = len(sim.records())
        t0 = time.monotonic()
        run_client(job)
        resume_wall = time.monotonic() - t0
    finally:
        sim.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"cached: re-run of {rows:,} rows from the cache (--fresh) in {wall:.2f}s = {rows / wall:,.0f} rows/s "
        f"({rows / run_s:,.0f} rows/s over the run's own {run_s:.2f}s, start-up excluded), "
        f"client CPU {cpu:.2f}s = {cpu / rows * 1e6:.0f} µs per row, {after - before} requests sent, "
        f"peak RSS {rss} MB; re-run of the finished job: {resume_wall:.2f}s  "
        f"[load average {load:.2f}]"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", choices=["rpm", "throughput", "memory", "cached", "all"])
    ap.add_argument("--minutes", type=float, default=2.0, help="rpm: length of the run")
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--no-compile", action="store_true", help="do not byte-compile the package first")
    a = ap.parse_args()
    if not a.no_compile:
        compile_package()
    if a.which in ("throughput", "all"):
        bench_throughput(a.rows or 30_000)
    if a.which in ("cached", "all"):
        bench_cached(a.rows or 100_000)
    if a.which in ("memory", "all"):
        bench_memory(a.rows or 200_000)
    if a.which in ("rpm", "all"):
        bench_rpm(a.minutes)


if __name__ == "__main__":
    main()
