"""The fast paths keep behaviour: prefetched cache reads, the streamed final write of vector parts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import sinks
from pipeline.cache import ResponseCache
from pipeline.sinks import WorkDir, step_fields, write_options
from pipeline.sources import ROW


def test_prefetch_answers_like_get_once(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c")
    asyncio.run(cache.store_many([(f"k{i}", f"body {i}".encode()) for i in range(1200)]))
    cache.prefetch([f"k{i}" for i in range(0, 1200, 2)] + ["missing"])
    assert cache.get("k0") == b"body 0" and cache.get("k1198") == b"body 1198"
    assert cache.get("missing") is None
    assert cache.get("k1") == b"body 1"  # not prefetched: read as usual
    cache.prefetch([])
    assert cache.get("k2") == b"body 2"  # what the last prefetch left is dropped, the cache still answers
    cache.close()


def test_streamed_final_write_keeps_order_latest_write_and_vectors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # tiny slices and a tiny decoded-part budget: every slice draws on several parts, parts are evicted
    monkeypatch.setattr(sinks, "FINISH_BYTES", 3000)
    monkeypatch.setattr(sinks, "FINISH_CACHE_BYTES", 5000)
    dim, n = 8, 500
    schema = pa.schema(
        [
            pa.field(ROW, pa.uint32()),
            pa.field("id", pa.int64()),
            *step_fields("e", [pa.field("e", pa.list_(pa.float32()))]),
        ]
    )
    work = WorkDir(tmp_path / "out.parquet", "fp")
    work.prepare(fresh=True)
    rng = np.random.default_rng(0)
    order = np.argsort(np.arange(n) + rng.uniform(0, 120, n), kind="stable")  # rows finish about in order

    def part(i: int, rows: np.ndarray, value: float) -> None:
        rows = np.sort(rows)
        cols = {c.name: pa.nulls(len(rows), c.type) for c in schema}
        cols[ROW] = pa.array(rows.astype(np.uint32))
        cols["id"] = pa.array(rows.astype(np.int64))
        cols["e"] = pa.array([[float(r) + value] * dim for r in rows], pa.list_(pa.float32()))
        cols["e__status"] = pa.array(["ok"] * len(rows))
        pq.write_table(pa.table(cols, schema=schema), work.path / f"part-{i:06d}.parquet", **write_options(schema))

    for i, lo in enumerate(range(0, n, 40)):
        part(i + 1, order[lo : lo + 40], 0.0)
    part(99, np.array([3, 250, 499]), 0.5)  # a later run wrote these rows again: its write wins
    final = schema.remove(0).set(1, pa.field("e", pa.list_(pa.float32(), dim)))
    work.finish(final, n, fresh=False)
    t = pq.read_table(tmp_path / "out.parquet")
    assert t.schema.field("e").type == pa.list_(pa.float32(), dim)
    assert t["id"].to_pylist() == list(range(n))
    first = [v[0] for v in t["e"].to_pylist()]
    assert first == [r + (0.5 if r in (3, 250, 499) else 0.0) for r in range(n)]
    assert pq.ParquetFile(tmp_path / "out.parquet").metadata.num_row_groups > 5  # written in slices


def test_rows_in_flight_are_bounded_by_bytes(tmp_path: Path, sim_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline import executor

    from .conftest import output, reviews, run_job, write_job

    sim = sim_factory(latency_s=0.05)
    monkeypatch.setattr(executor, "MAX_BYTES_IN_FLIGHT", 10_000)
    data = reviews(40).with_columns(pl.col("text") + " " + "long text " * 200)  # ~2 kB per row
    job = write_job(tmp_path, sim.url, data=data, limits="{rpm: 100000, tpm: 100000000, concurrency: 50}")
    run_job(job)
    assert set(output(tmp_path)["label__status"]) == {"ok"}
    events = sorted([(r.t_start, 1) for r in sim.records] + [(r.t_end, -1) for r in sim.records])
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    assert 1 < peak <= 5  # 10 kB of ~2 kB rows, where the window alone would allow 50
