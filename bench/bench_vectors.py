"""Vector jobs: the final write's throughput and the client's peak memory, for 1536-d embeddings.

    python bench/bench_vectors.py write --rows 20000      # final file from parts: MB/s of vector data
    python bench/bench_vectors.py run --rows 10000 100000  # a whole embed run: peak RSS, rows/s
    python bench/bench_vectors.py run --kind chat --rows 1000000  # a chat run (short answers)

`write` builds a work folder as an embed run leaves it (Parquet parts of 2,000 rows, sorted by input
position within a part, parts out of order as answers arrive) and times `WorkDir.finish` alone, in a
child process whose peak RSS is reported. The parts are flushed to disk (`os.sync()`) before the
timing: a real run writes its parts over minutes, and the kernel has written them out long before the
final write; written just before it, the kernel is still writing hundreds of MB of them while the
final file is timed, and the figure measures that (`--no-sync`: as before, without the sync). The same
run then times the disk itself on as many bytes as the final file (a plain file written in 4 MB blocks,
then fsync, as the final write ends; and a bare pyarrow ParquetWriter of the same vectors in row groups
of the same size, then fsync): the figure to read is the ratio "ours / the disk", measured minutes apart
on the same machine, not the absolute MB/s (past a few hundred MB of dirty pages the kernel throttles a
writer to the disk's own rate). The child, like `pipeline run`, keeps pyarrow from importing
pandas (for an older version, pandas is imported before the timing: its run had imported it by then).
For a before/after figure, run this file against the older checkout with `PYTHONPATH=<old checkout>`
from inside that checkout (`run` starts `python -m pipeline.cli`, which imports from the current folder).
`write --early` times what is left of the final write after the last part when the final file is begun
as the parts come (`sinks.EarlyFinal`, as a run does; for vector jobs since `executor.EARLY_FINAL_VECTORS`
is on by default). The child uses Arrow's memory pool as `pipeline run` chooses it.
`run` runs `pipeline run` against a zero-latency simulator in its own process (no rate limits; no
cache unless `--cache`, a job's default: the answers stored as they come) and reports the client's
peak RSS (ru_maxrss, and its own high-water mark VmHWM: a child's
ru_maxrss counts its parent's peak before its exec, so the input is made in another child), its
anonymous part (sampled: without shared-library code), the peak reached by the end of each phase (run,
final write, after), the final write's seconds after the last row (its `final.written` event) and wall time.
Each figure is printed with the load average beside it. The embed job sends 512 inputs per request (the
step's default) with 100 requests at once (apiyi's concurrency): `--batch-size`, `--concurrency` (until
issue 12's last session this bench used 256 and 16, which kept fewer answers in flight than a sample job).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DIM = 1536


def make_work(out: Path, rows: int, part_rows: int = 2000, early: bool = False) -> tuple[Path, pa.Schema, Any]:
    """A work folder like an embed run's: parts of `part_rows` rows, written in a shuffled order. With
    `early`, each part is told to a `sinks.EarlyFinal` as the run's part writer does (returned third)."""
    from pipeline import sinks
    from pipeline.sinks import WorkDir, step_fields
    from pipeline.sources import ROW

    # (older versions, for a before/after run: parts as they wrote them)
    write_options = getattr(sinks, "write_options", lambda schema: {"compression": "zstd"})
    note_dims = getattr(sinks, "_note_dims", lambda table: table)  # the vector sizes in the part's footer

    work = WorkDir(out, "bench")
    work.prepare(fresh=True)
    fields = [
        pa.field(ROW, pa.uint32()),
        pa.field("doc_id", pa.string()),
        *step_fields("emb", [pa.field("emb", pa.list_(pa.float32())), pa.field("emb__truncated", pa.bool_())]),
    ]
    schema = pa.schema(fields)
    final = schema.remove(0).set(schema.get_field_index("emb") - 1, pa.field("emb", pa.list_(pa.float32(), DIM)))
    begun = sinks.EarlyFinal(work, np.ones(rows, dtype=bool), False, lambda: final, ()) if early else None
    rng = np.random.default_rng(1)
    # rows finish about in input order, give or take the rows in flight (an embed run holds ~9,000)
    order = np.argsort(np.arange(rows) + rng.uniform(0, 9000, rows), kind="stable")
    for i, lo in enumerate(range(0, rows, part_rows)):
        idx = np.sort(order[lo : lo + part_rows]).astype(np.uint32)
        n = len(idx)
        vec = pa.FixedSizeListArray.from_arrays(pa.array(rng.standard_normal(n * DIM, dtype=np.float32)), DIM)
        cols = {
            ROW: pa.array(idx),
            "doc_id": pa.array([f"d{j:08d}" for j in idx]),
            "emb": vec.cast(pa.list_(pa.float32())),
            "emb__truncated": pa.array([False] * n),
            "emb__status": pa.array(["ok"] * n),
            "emb__error": pa.nulls(n, pa.string()),
            "emb__attempts": pa.array([1] * n, pa.int32()),
            "emb__prompt_tokens": pa.array([10] * n, pa.int64()),
            "emb__completion_tokens": pa.array([0] * n, pa.int64()),
            "emb__cached": pa.array([False] * n),
            "emb__tokens_estimated": pa.array([False] * n),
            "emb__cost": pa.array([2e-7] * n),
        }
        table = pa.table({k: v for k, v in cols.items() if k in schema.names}, schema=schema)
        part = work.path / f"part-{i + 1:06d}.parquet"
        group = max(1, int(getattr(sinks, "PART_GROUP_BYTES", 2**40) * n / table.nbytes))
        pq.write_table(note_dims(table), part, row_group_size=group, **write_options(schema))  # as PartWriter
        if begun is not None:
            begun.part_written(part, idx)
    return work.path, final, begun


def child_write(out: str, rows: int, early: bool = False, sync: bool = True) -> None:
    """In a child process: finish the prepared work folder; print seconds and peak RSS. With `early`,
    the work folder is made here, its parts told to the final file begun as they come (as in a run),
    and the final write is timed from the last part (with `sync`, once the parts and the final file so
    far are flushed: see the module's docstring)."""
    import pickle

    from pipeline import sinks
    from pipeline.sinks import VectorColumn, WorkDir

    begun = None
    t_parts = 0.0
    if early:
        t0 = time.perf_counter()
        _, schema, begun = make_work(Path(out), rows, early=True)
        t_parts = time.perf_counter() - t0
        if sync:  # (the final thread goes on meanwhile: what it has not caught up on is still timed)
            os.sync()
    else:
        schema = pickle.loads(Path(out + ".schema").read_bytes())
    # as in `pipeline run`: pyarrow does not import pandas (older versions: it did, at the run's first part)
    skip = getattr(sinks, "skip_pandas_probe", None)
    if skip is not None:
        skip()
    else:
        pa.array([0])
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    work = WorkDir(Path(out), "bench")
    # the vector-size check the run does before the final file (older versions: a polars pass)
    t0 = time.perf_counter()
    rule = VectorColumn("emb", "emb", pa.float32())
    if hasattr(sinks, "final_fields"):
        sinks.final_fields([rule], work, False, rows, "doc_id")
    else:
        sinks.widen_fields([rule], work.written(False), "doc_id")  # type: ignore[arg-type]
    check = time.perf_counter() - t0
    t0 = time.perf_counter()
    if begun is not None:
        work.finish(schema, rows, fresh=False, early=begun)
    else:
        work.finish(schema, rows, fresh=False)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{dt} {peak // 1024} {base // 1024} {check} {t_parts}")


def disk_rate(folder: Path, nbytes: int, row_bytes: int) -> tuple[float, float]:
    """Seconds the disk takes for `nbytes` in `folder`: (a plain file written in 4 MB blocks then
    fsync, a bare pyarrow ParquetWriter of 1536-d float32 vectors in row groups of `row_bytes`, the
    final file's options, then fsync). Each file is removed after."""
    from pipeline import sinks

    block = np.random.default_rng(2).integers(0, 255, 4 * 2**20, dtype=np.uint8).tobytes()
    plain = folder / "disk-plain.bin"
    t0 = time.perf_counter()
    with open(plain, "wb") as fh:
        left = nbytes
        while left > 0:
            left -= fh.write(block[: min(left, len(block))])
        fh.flush()
        os.fsync(fh.fileno())
    t_plain = time.perf_counter() - t0
    plain.unlink()
    n = max(1, row_bytes // (DIM * 4))
    vec = pa.FixedSizeListArray.from_arrays(
        pa.array(np.random.default_rng(3).standard_normal(n * DIM, dtype=np.float32)), DIM
    )
    table = pa.table({"emb": vec})
    options = getattr(sinks, "write_options", lambda schema: {"compression": "none"})(table.schema)
    bare = folder / "disk-bare.parquet"
    t0 = time.perf_counter()
    with pq.ParquetWriter(bare, table.schema, **options) as w:
        for _ in range(max(1, nbytes // (n * DIM * 4))):
            w.write_table(table, row_group_size=n)
    with open(bare, "rb") as fh:
        os.fsync(fh.fileno())
    t_bare = time.perf_counter() - t0
    bare.unlink()
    return t_plain, t_bare


def bench_write(rows: int, early: bool = False, sync: bool = True) -> None:
    import pickle

    from pipeline import sinks

    if early and not hasattr(sinks, "EarlyFinal"):
        print("final write begun during the run: not in this version")
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench-vec-"))
    try:
        out = tmp / "out.parquet"
        if not early:
            _, schema, _ = make_work(out, rows)
            Path(str(out) + ".schema").write_bytes(pickle.dumps(schema))
            if sync:  # the parts on disk, as in a run (see the module's docstring)
                os.sync()
        load = os.getloadavg()[0]
        res = subprocess.run(
            [
                sys.executable,
                __file__,
                "_child",
                str(out),
                str(rows),
                "early" if early else "-",
                "sync" if sync else "-",
            ],
            env=_run_env(),
            capture_output=True,
            text=True,
            check=True,
        )
        dt, peak, base, check, t_parts = res.stdout.split()
        mb = rows * DIM * 4 / 1e6
        t = pq.read_table(out, columns=["doc_id"])
        assert t.num_rows == rows and t["doc_id"][0].as_py() == "d00000000", "order lost"
        t = pq.read_table(out, columns=["doc_id"])
        assert t["doc_id"].to_pylist() == [f"d{j:08d}" for j in range(rows)], "order lost"
        size = out.stat().st_size
        meta = pq.read_metadata(out)
        group = meta.row_group(0).total_byte_size if meta.num_row_groups else size
        del t, meta
        os.sync()
        t_plain, t_bare = disk_rate(tmp, size, group)
        how = (
            f"begun while the parts came ({float(t_parts):.2f}s to write the parts and begin it), then "
            if early
            else "from the parts, "
        )
        print(
            f"final write {how}{rows:,} rows x {DIM}-d = {mb:,.0f} MB of vectors in {float(dt):.2f}s = "
            f"{mb / float(dt):,.0f} MB/s (with the vector-size check before it, {float(check):.2f}s: "
            f"{mb / (float(dt) + float(check)):,.0f} MB/s); child peak RSS {peak} MB (after imports {base} MB)"
            f"{'' if sync else ' (parts not synced before the timing)'}\n"
            f"  the disk on the same {size / 1e6:,.0f} MB: plain write + fsync {t_plain:.2f}s "
            f"({mb / t_plain:,.0f} MB/s of vectors: ours is {t_plain / float(dt):.2f}x it), bare pyarrow "
            f"ParquetWriter + fsync {t_bare:.2f}s ({mb / t_bare:,.0f} MB/s: ours is {t_bare / float(dt):.2f}x it)  "
            f"[load average {load:.2f} at start, {os.getloadavg()[0]:.2f} at end]"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run_env() -> dict[str, str]:
    """The environment of a child that does what `pipeline run` does: Arrow's memory pool as
    `cli.arrow_pool_from_env` chooses it (older versions without it: their default)."""
    from pipeline import cli

    env = dict(os.environ)
    if hasattr(cli, "arrow_pool_from_env") and sys.platform.startswith("linux"):
        env.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")
    return env


def bench_run(
    rows: int, kind: str = "embed", cache: bool = False, concurrency: int = 100, batch_size: int = 512
) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_core import PEAK_ANON_MB, SimProcess, run_client, write_job

    sim = SimProcess(latency_s=0.0)
    work = Path(tempfile.mkdtemp(prefix="bench-vrun-"))
    try:
        # the input is made in a child: a child's ru_maxrss counts its parent's peak RSS before its exec
        # (a 10^6-row input made here showed as ~364 MB in the client's figure, whatever it held itself)
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from pathlib import Path; from bench_core import make_rows; "
                "make_rows(Path(sys.argv[1]), int(sys.argv[2]))",
                str(work / "rows.parquet"),
                str(rows),
            ],
            cwd=Path(__file__).parent,
            check=True,
        )
        if kind == "chat":  # the sentiment-label job of bench_core, without its cache
            job = write_job(work, sim.url, rows, "{concurrency: 64}", cache=cache)
        else:
            job = work / "job.yaml"
            job.write_text(f"""
version: 1
name: bench-vectors
providers:
  bench: {{base_url: {sim.url}, api_key_env: BENCH_KEY, limits: {{concurrency: {concurrency}}}}}
input: {{path: {work / "rows.parquet"}, id: id}}
steps:
  - {{name: emb, kind: embed, provider: bench, model: text-embedding-3-small, input: "{{{{ row.text }}}}",
     batch_size: {batch_size}}}
output: {{path: {work / "out.parquet"}}}
cache: {{{"dir: " + str(work / "cache") if cache else "enabled: false"}}}
""")
        load = os.getloadavg()[0]
        phases: dict[str, tuple[int, int]] = {}
        log = work / "run.log"
        wall, peak, _ = run_client(
            job, "--log", str(log), watch=lambda pid: _watch_phases(pid, work / "out.parquet", log, phases)
        )
        n = pq.ParquetFile(work / "out.parquet").metadata.num_rows
        what = f"{DIM}-d" if kind == "embed" else "chat"
        by_phase = ", ".join(f"{k} {hwm} MB (anonymous {anon} MB)" for k, (hwm, anon) in phases.items())
        written = [e for e in map(json.loads, log.read_text().splitlines()) if e.get("event") == "final.written"]
        final = (
            f"\n  final write after the run: {written[-1]['seconds']:.2f}s for {written[-1]['rows']:,} rows "
            f"({written[-1]['rows_during_run']:,} of them written during the run)"
            if written
            else ""
        )
        hwm = max((h for h, _ in phases.values()), default=0)
        print(
            f"{kind} run{' with the cache on' if cache else ''}: {n:,} rows ({what}), "
            f"client peak RSS {peak} MB (its own high-water mark {hwm} MB; "
            f"anonymous {PEAK_ANON_MB[-1]} MB, sampled), bench process {_self_peak()} MB, "
            f"{wall:.1f}s wall ({n / wall:,.0f} rows/s)  [load average {load:.2f} at start, "
            f"{os.getloadavg()[0]:.2f} at end]\n  peak RSS reached by the end of each phase: {by_phase}{final}"
        )
    finally:
        sim.stop()
        shutil.rmtree(work, ignore_errors=True)


def _self_peak() -> int:
    """This process's peak RSS in MB (a client's ru_maxrss is at least this when it was started at it)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def _watch_phases(pid: int, out: Path, log: Path, phases: dict[str, tuple[int, int]]) -> None:
    """Sample a running client: its peak RSS so far (VmHWM, exact) and its largest anonymous memory
    seen (sampled), by the end of each phase of the run: "run", "final write" (from its `final.writing`
    event; older versions: once their temporary final file exists), "after" (the final file is in place:
    the summary). A peak that grows in a phase was reached in it."""
    tmp = f".{out.name}."
    phase, hwm, anon = "run", 0, 0
    while True:
        if out.exists():
            phase = "after"
        elif phase == "run" and (
            any(p.name.startswith(tmp) for p in out.parent.iterdir())
            or (log.exists() and "final.writing" in log.read_text())
        ):
            phase = "final write"
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        hwm = max(hwm, int(line.split()[1]) // 1024)
                    elif line.startswith("RssAnon:"):
                        anon = max(anon, int(line.split()[1]) // 1024)
        except OSError:
            break
        phases[phase] = (hwm, anon)
        time.sleep(0.02 if phase == "run" else 0.002)  # the end closely: a short peak there is missed at 20 ms


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child_write(sys.argv[2], int(sys.argv[3]), early=sys.argv[4] == "early", sync=sys.argv[5] == "sync")
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", choices=["write", "run"])
    ap.add_argument("--rows", type=int, nargs="+", default=[20_000])
    ap.add_argument("--kind", choices=["embed", "chat"], default="embed", help="run: the job's kind")
    ap.add_argument(
        "--concurrency", type=int, default=100, help="run, embed: the provider's concurrency (apiyi's: 100)"
    )
    ap.add_argument("--batch-size", type=int, default=512, help="run, embed: inputs per request (the default)")
    ap.add_argument("--repeat", type=int, default=1, help="write: runs per size (each printed)")
    ap.add_argument(
        "--early",
        action="store_true",
        help="write: the final file begun as the parts come, as a run does (timed: what is left after the last part)",
    )
    ap.add_argument(
        "--no-sync",
        action="store_true",
        help="write: time the final write while the kernel may still be writing out the parts just made",
    )
    ap.add_argument(
        "--cache",
        action="store_true",
        help="run: with the response cache on (a job's default; the cache folder takes ~8 kB per 1536-d row)",
    )
    a = ap.parse_args()
    for rows in a.rows:
        if a.which == "write":
            for _ in range(a.repeat):
                bench_write(rows, a.early, sync=not a.no_sync)
        else:
            bench_run(rows, a.kind, a.cache, a.concurrency, a.batch_size)


if __name__ == "__main__":
    main()
