"""Client CPU per 1,000 requests at a steady 50 requests/s, and start-up time, for chat and embed.

    python bench/bench_cpu.py                      # chat and embed, 60 s each
    python bench/bench_cpu.py --seconds 30 --kind chat

The simulator runs in its own process (`pipeline sim`, 50 ms latency); the client is `pipeline run JOB
--quiet` in another, limited to 3000 requests/min (50/s). Figures, with the load average beside them:
- CPU s per 1,000 requests: user + system time of the client process (os.wait4), over the requests the
  simulator answered; also without start-up (the CPU spent before the first request).
- start-up: from launching `pipeline run` to the simulator receiving the first request (both read
  CLOCK_MONOTONIC), and the CPU the client had used by then (separate runs stopped at that point; the
  median of 3). The simulator's record is emptied first: polling a long record (1,500+ entries as JSON
  every 20 ms) kept the simulator busy on a core the client needed, and start-up read 2-3x too long.
- bytecode: the package the client imports is byte-compiled first (`compileall`), as `pip install`
  does; this sandbox sets PYTHONDONTWRITEBYTECODE=1, so an editable checkout would otherwise compile
  every module of `pipeline` from source at each start (+0.1-0.25 s). `--no-compile` skips this.
- `pipeline --help`: wall time of the bare command.
- `--floor`: the same requests at the same rate from a bare aiohttp client in this process (no cache,
  gate or output), after each kind: the HTTP stack's own CPU per 1,000 requests, the floor under the
  client's figure (embed: 4 inputs of 256 dimensions per request, as the job sends). `--floor-group K`:
  the bare client sends K requests at once every K/50 s instead (the same rate, K times fewer wake-ups):
  how much of the floor is the cost of waking an idle process once per request. The floor line also gives the same
  requests sent 100 at a time as fast as the simulator answers: the CPU per request of a process that
  never idles, and the ratio of the two.
- `--paired DIR`: this checkout's client and DIR's (another checkout, e.g. main) run AT THE SAME TIME
  against one simulator, each at 50 requests/s on its own job and cache, and their CPU is compared: both
  see the same machine load, where alternating runs on a shared machine differed by +-25% run to run
  (issue 12: paired ratios of the answer log vs main stayed within 0.86-0.92). Start-up is included.
An older checkout: run this file from it with its path first, e.g.
    git worktree add /tmp/old main
    cd /tmp/old && PYTHONPATH=/tmp/old python /path/to/new/bench/bench_cpu.py
(the children run `python -m pipeline.cli` from the current directory, so they import the old code).
Only the client's CPU is counted: the simulator is its own process, and os.wait4 reports the client's.
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
import urllib.request
from pathlib import Path

from bench_core import SimProcess, compile_package, make_rows

RATE_RPM = 3000


def write_job(work: Path, url: str, kind: str, rows: int) -> Path:
    data = work / "rows.parquet"
    make_rows(data, rows)
    if kind == "chat":
        step = """
  - name: label
    kind: chat
    provider: bench
    model: gpt-4o-mini
    messages:
      - {role: system, content: "Label the sentiment: positive, negative or neutral."}
      - {role: user, content: "{{ row.text }}"}
    params: {temperature: 0, max_tokens: 5}"""
    else:
        step = """
  - name: emb
    kind: embed
    provider: bench
    model: text-embedding-3-small
    input: "{{ row.text }}"
    batch_size: 4
    params: {dimensions: 256}"""
    job = work / "job.yaml"
    job.write_text(f"""
version: 1
name: bench-cpu
providers:
  bench:
    base_url: {url}
    api_key_env: BENCH_KEY
    limits: {{rpm: {RATE_RPM}, tpm: 100000000, concurrency: 100}}
input: {{path: {data}, id: id}}
steps:{step}
output: {{path: {work / "out.parquet"}}}
cache: {{dir: {work / "cache"}}}
""")
    return job


def run_client(job: Path) -> tuple[float, float, float]:
    """(wall s, user+sys CPU s, monotonic time at launch)."""
    env = {**os.environ, "BENCH_KEY": "bench"}
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "run", str(job), "--quiet"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(proc.stderr.read().decode()[-2000:] if proc.stderr else "run failed")
    return wall, usage.ru_utime + usage.ru_stime, t0


def startup_cpu(job: Path, sim: SimProcess) -> tuple[float, float]:
    """(seconds from launch to the first request, CPU s used by then): a run stopped at its first request.
    The simulator's record is emptied first, so the polls below stay cheap."""
    env = {**os.environ, "BENCH_KEY": "bench"}
    urllib.request.urlopen(urllib.request.Request(f"{sim.url.removesuffix('/v1')}/_sim/reset", method="POST"))
    shutil.rmtree(job.parent / "cache2", ignore_errors=True)
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "run", str(job), "--quiet", "--fresh"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # (a record is kept when its request ends: the earlier runs' last requests may come in late)
    while not (recs := [r for r in sim.records() if r["t_start"] >= t0]) and proc.poll() is None:
        time.sleep(0.02)
    try:
        with open(f"/proc/{proc.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        cpu = float("nan")
    proc.kill()
    proc.wait()
    first = min(r["t_start"] for r in recs) if recs else float("nan")
    return first - t0, cpu


def bench(kind: str, seconds: float) -> None:
    per_request = 4 if kind == "embed" else 1
    rows = int(RATE_RPM / 60 * seconds) * per_request
    sim = SimProcess(default_limits={"rpm": RATE_RPM + 300, "concurrency": 200}, latency_s=0.05, jitter=0.3)
    work = Path(tempfile.mkdtemp(prefix=f"bench-cpu-{kind}-"))
    try:
        job = write_job(work, sim.url, kind, rows)
        load = os.getloadavg()[0]
        wall, cpu, _ = run_client(job)
        n = len(sim.records())
        load_end = os.getloadavg()[0]
        # a second job on an empty cache: its first request is a real one
        job2 = work / "job2.yaml"
        job2.write_text(job.read_text().replace("/cache", "/cache2").replace("out.parquet", "out2.parquet"))
        starts = sorted(startup_cpu(job2, sim) for _ in range(3))
        start_s, start_cpu = starts[1]
    finally:
        sim.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"{kind}: {n:,} requests ({rows:,} rows) in {wall:.1f}s wall = {n / wall:.1f} req/s; client CPU "
        f"{cpu:.2f}s = {cpu / n * 1000:.2f} s per 1,000 requests ({(cpu - start_cpu) / n * 1000:.2f} without "
        f"start-up); start-up to first request {start_s:.2f}s ({start_cpu:.2f} s CPU)  "
        f"[load average {load:.2f} at start, {load_end:.2f} at end]"
    )


def bench_floor(kind: str, seconds: float, group: int = 1) -> None:
    """The same requests at the same rate from a bare aiohttp client (uvloop, one session, no cache, no
    gate, no output): the CPU floor of the HTTP stack under the client, to read the figures above against.
    embed: 4 inputs per request, 256 dimensions as base64, as the embed job sends them."""
    import asyncio

    import aiohttp
    import uvloop

    sim = SimProcess(
        default_limits={"rpm": 1_000_000, "concurrency": 200}, latency_s=0.05, jitter=0.3
    )  # (and the busy run)
    n = int(RATE_RPM / 60 * seconds)

    def body(i: int) -> tuple[str, bytes]:
        if kind == "embed":
            texts = [f"Great value, works as described. #{4 * i + j}" for j in range(4)]
            obj = {
                "model": "text-embedding-3-small",
                "input": texts,
                "dimensions": 256,
                "encoding_format": "base64",
            }
            return "/embeddings", json.dumps(obj).encode()
        obj = {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": f"Great value, works as described. #{i}"}],
            "max_tokens": 5,
        }
        return "/chat/completions", json.dumps(obj).encode()

    async def main() -> float:
        headers = {"Authorization": "Bearer bench", "Content-Type": "application/json"}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=300, limit_per_host=0)) as s:

            async def one(i: int) -> None:
                path, data = body(i)
                async with s.post(f"{sim.url}{path}", data=data, headers=headers) as r:
                    await r.read()

            await one(-1)
            t0 = time.process_time()
            tasks = []
            for i in range(0, n, group):
                for j in range(i, min(n, i + group)):
                    tasks.append(asyncio.ensure_future(one(j)))
                await asyncio.sleep(60 / RATE_RPM * group)
            await asyncio.gather(*tasks)
            paced = time.process_time() - t0
            # the same requests, 100 at a time as fast as they are answered: a process that never idles
            t0 = time.process_time()
            gate = asyncio.Semaphore(100)

            async def busy(i: int) -> None:
                async with gate:
                    await one(i)

            await asyncio.gather(*(busy(n + i) for i in range(n)))
            return paced, time.process_time() - t0

    try:
        load = os.getloadavg()[0]
        cpu, busy = uvloop.run(main())
    finally:
        sim.stop()
    print(
        f"floor ({kind}): bare aiohttp client, {n:,} requests at {RATE_RPM / 60:.0f}/s"
        f"{f', {group} at a time' if group > 1 else ''}: {cpu:.2f}s CPU = "
        f"{cpu / n * 1000:.2f} s per 1,000 requests; the same requests 100 at a time, as fast as answered "
        f"(the process never idles): {busy / n * 1000:.2f} s per 1,000, so {cpu / busy:.1f}x is the cost of "
        f"waking an idle process for each one  [load average {load:.2f}]"
    )


def bench_paired(kind: str, seconds: float, other: Path) -> None:
    """This checkout's client and `other`'s at the same time, on one simulator: paired CPU figures."""
    per_request = 4 if kind == "embed" else 1
    rows = int(RATE_RPM / 60 * seconds) * per_request
    sim = SimProcess(default_limits={"rpm": 2 * RATE_RPM + 600, "concurrency": 400}, latency_s=0.05, jitter=0.3)
    checkouts = [Path.cwd(), other.resolve()]
    works = [Path(tempfile.mkdtemp(prefix=f"bench-cpu-paired-{kind}-")) for _ in checkouts]
    try:
        load = os.getloadavg()[0]
        procs = []
        for where, work in zip(checkouts, works, strict=True):
            job = write_job(work, sim.url, kind, rows)
            env = {**os.environ, "BENCH_KEY": "bench", "PYTHONPATH": str(where)}
            cmd = [sys.executable, "-m", "pipeline.cli", "run", str(job), "--quiet"]
            procs.append(subprocess.Popen(cmd, cwd=where, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        cpus = []
        for proc in procs:
            _, status, usage = os.wait4(proc.pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                raise RuntimeError(proc.stderr.read().decode()[-2000:] if proc.stderr else "run failed")
            cpus.append(usage.ru_utime + usage.ru_stime)
        n = len(sim.records()) / 2
        load_end = os.getloadavg()[0]
    finally:
        sim.stop()
        for work in works:
            shutil.rmtree(work, ignore_errors=True)
    (this, that) = cpus
    print(
        f"{kind} paired: {n:,.0f} requests each at the same time; client CPU {this:.2f}s = {this / n * 1000:.2f} s "
        f"per 1,000 requests here ({checkouts[0]}), {that:.2f}s = {that / n * 1000:.2f} s in {checkouts[1]}; "
        f"ratio here/there {this / that:.3f}  [load average {load:.2f} at start, {load_end:.2f} at end]"
    )


def bench_help() -> None:
    load = os.getloadavg()[0]
    times = []
    for _ in range(3):
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-m", "pipeline.cli", "--help"], capture_output=True, check=True)
        times.append(time.monotonic() - t0)
    print(f"pipeline --help: best of 3 {min(times):.2f}s wall  [load average {load:.2f}]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", choices=["chat", "embed", "both"], default="both")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--floor", action="store_true", help="also the CPU of a bare aiohttp client at the same rate")
    ap.add_argument(
        "--floor-group",
        type=int,
        default=1,
        metavar="K",
        help="with --floor: the bare client sends K requests at once every K/50 s (same rate, K times fewer wake-ups)",
    )
    ap.add_argument("--no-compile", action="store_true", help="do not byte-compile the client package first")
    ap.add_argument("--paired", type=Path, metavar="DIR", help="run with another checkout's client at the same time")
    a = ap.parse_args()
    if a.paired:
        if not a.no_compile:
            compile_package()
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(a.paired / "pipeline")], check=True)
        for kind in ("chat", "embed") if a.kind == "both" else (a.kind,):
            bench_paired(kind, a.seconds, a.paired)
        return
    if not a.no_compile:
        compile_package()
    bench_help()
    for kind in ("chat", "embed") if a.kind == "both" else (a.kind,):
        bench(kind, a.seconds)
        if a.floor:
            bench_floor(kind, a.seconds, a.floor_group)


if __name__ == "__main__":
    main()
