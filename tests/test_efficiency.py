"""The fast paths keep behaviour: prefetched cache reads, the streamed final write of vector parts."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import sinks
from pipeline.cache import ResponseCache
from pipeline.sinks import PartWriter, WorkDir, step_fields, write_options
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
    # tiny slices: every slice draws on several parts
    monkeypatch.setattr(sinks, "FINISH_BYTES", 3000)
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

    from .conftest import output, peak_in_flight, reviews, run_job, write_job

    sim = sim_factory(latency_s=0.05)
    monkeypatch.setattr(executor, "MAX_BYTES_IN_FLIGHT", 10_000)
    data = reviews(40).with_columns(pl.col("text") + " " + "long text " * 200)  # ~2 kB per row
    job = write_job(tmp_path, sim.url, data=data, limits="{rpm: 100000, tpm: 100000000, concurrency: 50}")
    run_job(job)
    assert set(output(tmp_path)["label__status"]) == {"ok"}
    peak = peak_in_flight(sim.records)
    assert 1 < peak <= 5  # 10 kB of ~2 kB rows, where the window alone would allow 50


# ----- the final write streams parts: same file as the latest write of each row, in input order

VSCHEMA = pa.schema(
    [
        pa.field(ROW, pa.uint32()),
        pa.field("id", pa.string()),
        *step_fields("e", [pa.field("e", pa.list_(pa.float32()))]),
    ]
)


def _row(i: int, status: str, dim: int, tag: float) -> dict[str, object]:
    ok = status == "ok"
    return {
        ROW: i,
        "id": f"r{i}",
        "e": np.full(dim, i + tag, dtype=np.float32) if ok else None,
        "e__status": status,
        "e__error": None if ok else f"failed {tag}",
        "e__attempts": 1,
    }


def _reference(work: WorkDir, final: pa.Schema, fresh: bool = False) -> pa.Table:
    """The final file as the whole-table path makes it: every write, the latest of each row, in order."""
    written = work.written(fresh)
    assert written is not None
    df = sinks.keep_latest(written).collect()
    return df.drop(ROW, sinks.PART).to_arrow().cast(final.remove_metadata())


def _old_part(work: WorkDir, number: int, rows: list[dict[str, object]]) -> None:
    """A part as an older version wrote it: rows in finishing order, one row group, no sizes noted."""
    t = pa.Table.from_pylist(rows, schema=VSCHEMA)
    pq.write_table(t, work.path / f"part-{number:06d}.parquet", compression="zstd")


def test_final_file_is_the_latest_write_of_each_row_after_failures_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sinks, "FINISH_BYTES", 2000)  # slices of a few rows
    monkeypatch.setattr(sinks, "PART_GROUP_BYTES", 300)  # parts of many small row groups
    dim, n = 6, 300
    final = _fixed(dim)
    rng = np.random.default_rng(7)
    out = tmp_path / "out.parquet"
    work = _prepared(out)
    order = np.argsort(np.arange(n) + rng.uniform(0, 60, n), kind="stable")  # rows finish about in order
    statuses = rng.choice(["ok", "ok", "ok", "error", "invalid", "skipped"], n)
    w = PartWriter(work, VSCHEMA, flush_rows=23, flush_interval_s=60)
    for i in order[: n - 40]:
        w.add(_row(int(i), str(statuses[i]), dim, 0.0))
    w.close()
    _old_part(work, 90, [_row(int(i), "ok", dim, 0.25) for i in order[n - 40 :]])  # unsorted, as written once
    expected = _reference(work, final)
    got = pq.read_table(work.finish(final, n, fresh=False))
    assert got.cast(final.remove_metadata()).equals(expected)
    # a second run of the same job redoes the failed rows: final file + new parts, the latest write wins
    work2 = _prepared(out)
    failed = np.flatnonzero(work2.prior(n, ["e__status"], fresh=False).failed)
    assert len(failed) > 20
    w2 = PartWriter(work2, VSCHEMA, flush_rows=7, flush_interval_s=60)
    for k, i in enumerate(rng.permutation(failed)):
        w2.add(_row(int(i), "ok" if k % 3 else "error", dim, 0.5))
    w2.close()
    expected2 = _reference(work2, final)
    got2 = pq.read_table(work2.finish(final, n, fresh=False))
    assert got2.cast(final.remove_metadata()).equals(expected2)
    assert got2["id"].to_pylist() == [f"r{i}" for i in range(n)]
    assert pq.ParquetFile(out).metadata.num_row_groups > 10  # written in slices


def test_vector_sizes_come_from_the_footers_when_every_write_agrees(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = _prepared(tmp_path / "out.parquet")
    w = PartWriter(work, VSCHEMA, flush_rows=5, flush_interval_s=60)
    for i in range(12):
        w.add(_row(i, "ok" if i % 4 else "error", 3, 0.0))
    w.close()

    def no_reads(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("rows were read to find the vector sizes")

    with monkeypatch.context() as m:
        m.setattr(sinks._Source, "read_rows", no_reads)
        m.setattr(sinks.pq, "read_table", no_reads)
        assert work.vector_sizes("e", "id", 12, fresh=False) == [(3, -1, [])]
    # a later run wrote row 5 again with another size: every write no longer agrees, rows are read
    w = PartWriter(work, VSCHEMA, flush_rows=5, flush_interval_s=60)
    w.add(_row(5, "ok", 2, 0.5))
    w.close()
    assert work.vector_sizes("e", "id", 12, fresh=False) == [(3, 8, ["r1", "r2", "r3", "r6", "r7"]), (2, 1, ["r5"])]
    # ... and once that row's latest write has no vector, the sizes agree again
    w = PartWriter(work, VSCHEMA, flush_rows=5, flush_interval_s=60)
    w.add(_row(5, "error", 0, 0.0))
    w.close()
    assert work.vector_sizes("e", "id", 12, fresh=False) == [(3, 8, ["r1", "r2", "r3", "r6", "r7"])]


def test_a_part_is_written_once_its_vectors_reach_flush_bytes(tmp_path: Path) -> None:
    work = _prepared(tmp_path / "out.parquet")
    w = PartWriter(work, VSCHEMA, flush_rows=1000, flush_interval_s=60, flush_bytes=100)
    for i in range(10):  # 8 floats = 32 bytes a row: a part every 4 rows; failed rows hold no vector
        w.add(_row(i, "ok" if i != 2 else "error", 8, 0.0))
    w.close()
    sizes = [pq.ParquetFile(p).metadata.num_rows for p in work.parts()]
    assert sizes == [5, 4, 1]


def test_part_table_is_what_from_pylist_builds(tmp_path: Path) -> None:
    """A part built a column at a time (vectors copied straight into one buffer) holds what
    `Table.from_pylist` builds from the same rows: numpy vectors and lists of numbers, float64 cast to
    float32, nulls, empty vectors, rows without a column; and it round-trips through a part file."""
    schema = pa.schema(
        [
            pa.field(ROW, pa.uint32()),
            pa.field("id", pa.string()),
            pa.field("e", pa.list_(pa.float32())),
            pa.field("w", pa.large_list(pa.float64())),
            pa.field("n", pa.int64()),
        ]
    )
    rng = np.random.default_rng(3)
    rows: list[dict[str, Any]] = []
    for i in range(40):
        k = i % 5
        e: Any = rng.standard_normal(4).astype(np.float32)
        if k == 1:
            e = None
        elif k == 2:
            e = [float(x) for x in rng.standard_normal(3)]
        elif k == 3:
            e = rng.standard_normal(4)  # float64: cast to the column's float32
        elif i == 4:
            e = np.zeros(0, dtype=np.float32)
        row = {ROW: i, "id": f"r{i}", "e": e, "w": None if k == 2 else [float(i)] * (i % 3), "n": i}
        if i % 7 == 0:
            del row["n"]  # a row without a column: null there
        rows.append(row)
    expected = pa.Table.from_pylist(rows, schema=schema)
    got = sinks._part_table(rows, schema)
    assert got.schema == schema and got.equals(expected)
    assert sinks._part_table([{ROW: 0, "e": None}], schema).equals(
        pa.Table.from_pylist([{ROW: 0, "e": None}], schema=schema)
    )
    assert sinks._part_table([], schema).num_rows == 0
    work = _prepared(tmp_path / "out.parquet")
    w = PartWriter(work, schema, flush_rows=16, flush_interval_s=60)
    for row in rows:
        w.add(row)
    w.close()
    back = pa.concat_tables(pq.read_table(p).replace_schema_metadata(None) for p in work.parts())
    assert back.sort_by(ROW).equals(expected)


# ----- the final file begun while the run goes on (EarlyFinal): the same file as the final pass makes


def _fixed(dim: int) -> pa.Schema:
    """The final schema of VSCHEMA's rows: `e` as vectors of `dim`, no `__row`."""
    return VSCHEMA.remove(0).set(1, pa.field("e", pa.list_(pa.float32(), dim)))


def _prepared(output: Path) -> WorkDir:
    work = WorkDir(output, "fp")
    work.prepare(fresh=False)
    return work


def _early_run(
    work: WorkDir, final: pa.Schema, rows: list[dict[str, object]], owed: np.ndarray, schema: pa.Schema | None = None
) -> sinks.EarlyFinal:
    """Rows written as a run writes them, with the final file begun as parts arrive."""
    early = sinks.EarlyFinal(work, owed, False, lambda: schema or final, ["e__status"])
    w = PartWriter(work, VSCHEMA, flush_rows=23, flush_interval_s=60, on_part=early.part_written)
    for row in rows:
        w.add(row)
    w.close()
    return early


def _finished(caplog: pytest.LogCaptureFixture) -> dict[str, Any]:
    events = [r for r in caplog.records if getattr(r, "event", None) == "final.written"]
    return {"rows": events[-1].rows, "rows_during_run": events[-1].rows_during_run}


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sinks, "FINISH_BYTES", 2000)  # slices of a few rows
    monkeypatch.setattr(sinks, "PART_GROUP_BYTES", 300)  # parts of many small row groups


def test_final_file_begun_during_the_run_is_the_final_pass_file(
    tmp_path: Path, small: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="pipeline")
    dim, n = 6, 300
    final = _fixed(dim)
    rng = np.random.default_rng(11)
    order = np.argsort(np.arange(n) + rng.uniform(0, 60, n), kind="stable")  # rows finish about in order
    statuses = rng.choice(["ok", "ok", "ok", "error", "skipped"], n)
    rows = [_row(int(i), str(statuses[i]), dim, 0.0) for i in order]
    work = _prepared(tmp_path / "a" / "out.parquet")
    early = _early_run(work, final, rows, np.ones(n, dtype=bool))
    # the same parts, finished by the final pass alone
    plain = _prepared(tmp_path / "b" / "out.parquet")
    for p in work.parts():
        (plain.path / p.name).write_bytes(p.read_bytes())
    expected = pq.read_table(plain.finish(final, n, fresh=False, count=["e__status"]))
    assert _finished(caplog) == {"rows": n, "rows_during_run": 0}
    got = pq.read_table(work.finish(final, n, fresh=False, count=["e__status"], early=early))
    done = _finished(caplog)
    assert done["rows"] == n and 100 < done["rows_during_run"] < n  # most slices written during the run
    assert got.equals(expected) and got.schema.metadata == expected.schema.metadata
    assert work.final_counts == plain.final_counts
    assert got["id"].to_pylist() == [f"r{i}" for i in range(n)]
    assert not work.path.exists()


def test_a_row_written_again_after_its_slice_was_written_starts_the_final_file_over(
    tmp_path: Path, small: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="pipeline")
    dim, n = 6, 300
    final = _fixed(dim)
    work = _prepared(tmp_path / "out.parquet")
    rows = [_row(i, "ok", dim, 0.0) for i in range(n)] + [_row(3, "ok", dim, 0.5)]  # row 3 again, last
    early = _early_run(work, final, rows, np.ones(n, dtype=bool))
    early._stop()
    assert early.final is not None and early.final.next_lo > 3  # its slice was written before the new write came
    expected = _reference(work, final)
    got = pq.read_table(work.finish(final, n, fresh=False, count=["e__status"], early=early))
    assert _finished(caplog) == {"rows": n, "rows_during_run": 0}
    assert got.cast(final.remove_metadata()).equals(expected)
    assert got["e"][3].as_py() == [3.5] * dim


def test_a_final_file_begun_with_another_schema_is_not_used(
    tmp_path: Path, small: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="pipeline")
    dim, n = 6, 300
    final = _fixed(dim)
    work = _prepared(tmp_path / "out.parquet")
    # the final type decided from the first rows is not the one the final pass decides from every row
    guess = VSCHEMA.remove(0).set(1, pa.field("e", pa.list_(pa.float32())))
    early = _early_run(work, final, [_row(i, "ok", dim, 0.0) for i in range(n)], np.ones(n, dtype=bool), guess)
    early._stop()
    assert early.final is not None and early.final.next_lo > 100 and not early.failed
    got = pq.read_table(work.finish(final, n, fresh=False, count=["e__status"], early=early))
    assert _finished(caplog) == {"rows": n, "rows_during_run": 0}
    assert got.schema.field("e").type == pa.list_(pa.float32(), dim)
    assert got["e"][7].as_py() == [7.0] * dim


def test_a_killed_run_leaves_its_begun_final_file_to_be_removed_and_resumes_from_its_parts(
    tmp_path: Path, small: None
) -> None:
    dim, n = 6, 300
    final = _fixed(dim)
    work = _prepared(tmp_path / "out.parquet")
    early = _early_run(work, final, [_row(i, "ok", dim, 0.0) for i in range(n - 10)], np.ones(n, dtype=bool))
    early._stop()  # its slices are written; the run dies here (kill -9: no discard, no final write)
    assert early.final is not None and early.final.next_lo > 0 and (work.path / "final.tmp").stat().st_size > 0
    again = WorkDir(tmp_path / "out.parquet", "fp")
    assert again.prepare(fresh=False) is True
    assert not (work.path / "final.tmp").exists() and len(again.parts()) > 3
    prior = again.prior(n, ["e__status"], fresh=False)
    assert prior.done.sum() == n - 10
    early2 = _early_run(again, final, [_row(i, "ok", dim, 0.0) for i in range(n - 10, n)], ~prior.done)
    got = pq.read_table(again.finish(final, n, fresh=False, count=["e__status"], early=early2))
    assert got["id"].to_pylist() == [f"r{i}" for i in range(n)]
    assert [v[0] for v in got["e"].to_pylist()] == [float(i) for i in range(n)]
    # a run that ends without its final file removes what it began
    work3 = _prepared(tmp_path / "c" / "out.parquet")
    early3 = _early_run(work3, final, [_row(i, "ok", dim, 0.0) for i in range(n - 10)], np.ones(n, dtype=bool))
    early3._stop()
    assert early3.final is not None and (work3.path / "final.tmp").exists()
    early3.discard()
    assert not (work3.path / "final.tmp").exists() and len(work3.parts()) > 3


def test_a_rerun_begins_its_final_file_from_the_earlier_one_and_its_new_parts(
    tmp_path: Path, small: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="pipeline")
    dim, n = 4, 200
    final = _fixed(dim)
    out = tmp_path / "out.parquet"
    work = _prepared(out)
    first = [_row(i, "error" if i % 9 == 0 else "ok", dim, 0.0) for i in range(n)]
    work.finish(
        final, n, fresh=False, count=["e__status"], early=_early_run(work, final, first, np.ones(n, dtype=bool))
    )
    # --retry-failed: the failed rows again, the rest comes from the earlier final file
    work2 = _prepared(out)
    failed = work2.prior(n, ["e__status"], fresh=False).failed
    redo = [_row(int(i), "ok", dim, 0.5) for i in np.flatnonzero(failed)]
    early = _early_run(work2, final, redo, failed)
    expected = _reference(work2, final)
    got = pq.read_table(work2.finish(final, n, fresh=False, count=["e__status"], early=early))
    assert _finished(caplog)["rows_during_run"] > 100
    assert got.cast(final.remove_metadata()).equals(expected)
    assert work2.final_counts == {"e": {"ok": n}}


def test_a_part_the_begun_final_file_was_not_told_of_starts_it_over(
    tmp_path: Path, small: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="pipeline")
    dim, n = 6, 300
    final = _fixed(dim)
    work = _prepared(tmp_path / "out.parquet")
    early = _early_run(work, final, [_row(i, "ok", dim, 0.0) for i in range(n)], np.ones(n, dtype=bool))
    other = PartWriter(work, VSCHEMA, flush_rows=23, flush_interval_s=60)  # a writer that does not tell it
    other.add(_row(5, "ok", dim, 0.5))
    other.close()
    got = pq.read_table(work.finish(final, n, fresh=False, count=["e__status"], early=early))
    assert _finished(caplog) == {"rows": n, "rows_during_run": 0}
    assert got["e"][5].as_py() == [5.5] * dim and got["e"][6].as_py() == [6.0] * dim


@pytest.fixture
def run_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run's final file in slices of at most 20 rows: begun during a run of a few hundred."""
    monkeypatch.setattr(sinks, "FINISH_ROWS", 20)
    monkeypatch.setattr(sinks, "FINISH_BYTES", 4000)


def test_a_chat_run_begins_its_final_file_and_a_vector_run_by_choice(
    tmp_path: Path, sim: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, run_slices: None
) -> None:
    from pipeline import executor

    from .conftest import output, run_job, write_job
    from .test_embed import write_embed_job

    caplog.set_level("INFO", logger="pipeline")
    (tmp_path / "chat").mkdir()
    run_job(write_job(tmp_path / "chat", sim.url, rows=200, extra="run: {flush_rows: 10}"))
    assert _finished(caplog)["rows_during_run"] > 0  # no vectors: begun during the run
    assert output(tmp_path / "chat")["review_id"].to_list() == [f"r{i:05d}" for i in range(200)]
    vectors = {}
    for begin in (False, True):
        monkeypatch.setattr(executor, "EARLY_FINAL_VECTORS", begin)
        where = tmp_path / f"embed-{begin}"
        where.mkdir()
        run_job(write_embed_job(where, sim.url, rows=200, extra="run: {flush_rows: 10}"))
        assert (_finished(caplog)["rows_during_run"] > 0) is begin
        vectors[begin] = pq.read_table(where / "out" / "emb.parquet").replace_schema_metadata(None)
    assert vectors[True].equals(vectors[False])


def test_a_vector_run_begins_its_final_file_by_default_and_a_change_of_vector_size_stops_it_alike(
    tmp_path: Path, sim: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, run_slices: None
) -> None:
    from pipeline import executor
    from pipeline.errors import RunAborted
    from pipeline.sim import embeddings

    from .conftest import run_job
    from .test_embed import write_embed_job

    caplog.set_level("INFO", logger="pipeline")
    # the server changes its model mid-run: answers whose first row is 190 or later hold 8-float vectors
    native = embeddings.embeddings_response

    def changed(model: str, inputs: list[str], dims: int | None, fmt: str, total: int) -> dict[str, Any]:
        late = int(inputs[0].split(":")[0].split()[1]) >= 190
        return native(model, inputs, 8 if late else dims, fmt, total)

    monkeypatch.setattr(embeddings, "embeddings_response", changed)
    begun: list[str] = []
    opened = sinks._FinalFile.__init__

    def spy(self: Any, work: WorkDir, tmp: Path, *args: Any) -> None:
        begun.append(tmp.name)
        opened(self, work, tmp, *args)

    monkeypatch.setattr(sinks._FinalFile, "__init__", spy)
    errors = {}
    for begin in (None, False, True):  # None: the switch as it is by default
        if begin is not None:
            monkeypatch.setattr(executor, "EARLY_FINAL_VECTORS", begin)
        begun.clear()
        where = tmp_path / f"run-{begin}"
        where.mkdir()
        job = write_embed_job(where, sim.url, rows=200, step="batch_size: 10", extra="run: {flush_rows: 10}")
        out = where / "out" / "emb.parquet"
        run_job(job)  # the rows answered with the other size fail; the others are 1536-float vectors
        assert (_finished(caplog)["rows_during_run"] > 0) is (begin is not False)
        assert begun[0] == ("final.tmp" if begin is not False else f".{out.name}.{os.getpid()}.tmp")
        first = pq.read_table(out)
        assert first["doc_id"].to_pylist() == [f"d{i:05d}" for i in range(200)]
        assert first.schema.field("emb").type == pa.list_(pa.float32(), 1536)
        statuses = first["emb__status"].to_pylist()
        assert statuses[:100] == ["ok"] * 100 and statuses[-1] == "error"
        # a rerun of the failed rows gets the other size: stopped before the final file, as without it
        with pytest.raises(RunAborted) as exc:
            run_job(job, retry_failed=True)
        errors[begin] = str(exc.value)
        assert pq.read_table(out).equals(first)  # the earlier final file stays as it was
        work = WorkDir(out, "")
        assert [p.name for p in work.path.iterdir() if not p.name.startswith("part-")] == ["state.json"]
        assert work.prior(200, ["emb__status"], fresh=False).failed.sum() == 0  # the rows kept in their parts
    for e in errors.values():
        assert re.search(r"differ in size: 1536 \(1\d\d rows, .*; 8 \(\d+ rows", e), e


def test_a_slice_of_vectors_written_in_pieces_is_one_row_group_of_the_same_rows(
    tmp_path: Path, small: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    dim, n = 6, 300
    final = _fixed(dim)
    rng = np.random.default_rng(5)
    order = np.argsort(np.arange(n) + rng.uniform(0, 60, n), kind="stable")
    rows = [_row(int(i), "ok" if i % 7 else "error", dim, 0.0) for i in order]
    files = {}
    for piece in (2**40, 150):  # one piece a slice; pieces of a few rows
        monkeypatch.setattr(sinks, "WRITE_PIECE_BYTES", piece)
        work = _prepared(tmp_path / str(piece) / "out.parquet")
        w = PartWriter(work, VSCHEMA, flush_rows=23, flush_interval_s=60)
        for row in rows:
            w.add(row)
        w.close()
        files[piece] = work.finish(final, n, fresh=False, count=["e__status"])
    whole, pieces = (pq.ParquetFile(files[k]) for k in (2**40, 150))
    assert pieces.metadata.num_row_groups == whole.metadata.num_row_groups > 5
    assert [pieces.metadata.row_group(g).num_rows for g in range(pieces.metadata.num_row_groups)] == [
        whole.metadata.row_group(g).num_rows for g in range(whole.metadata.num_row_groups)
    ]
    assert pieces.read().equals(whole.read())
    assert pieces.read()["e"][8].as_py() == [8.0] * dim and pieces.read()["e"][7].as_py() is None


def test_pipeline_chooses_jemalloc_for_arrow_before_pyarrow_loads_unless_told_otherwise() -> None:
    import os
    import platform
    import subprocess
    import sys

    if not sys.platform.startswith("linux") or platform.machine() != "x86_64":
        pytest.skip("the pool is chosen on Linux x86-64 only")
    try:
        pa.jemalloc_memory_pool()
    except NotImplementedError:
        pytest.skip("this pyarrow has no jemalloc")
    code = (
        "from pipeline.cli import arrow_pool_from_env; arrow_pool_from_env(); "
        "import pyarrow.parquet, pyarrow as pa; print(pa.default_memory_pool().backend_name)"
    )
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    chosen = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    told = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "ARROW_DEFAULT_MEMORY_POOL": "system"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert (chosen.stdout.strip(), told.stdout.strip()) == ("jemalloc", "system")


def test_the_final_file_begun_during_the_run_is_written_out_as_it_grows(
    tmp_path: Path, small: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not hasattr(os, "posix_fadvise"):
        pytest.skip("no posix_fadvise here")
    dim, n = 6, 300
    final = _fixed(dim)
    asked: list[tuple[int, int]] = []
    real = os.posix_fadvise

    def spy(fd: int, offset: int, length: int, advice: int) -> None:
        asked.append((os.fstat(fd).st_size, advice))
        real(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", spy)
    monkeypatch.setattr(sinks, "EARLY_SYNC_BYTES", 4000)
    work = _prepared(tmp_path / "out.parquet")
    early = _early_run(work, final, [_row(i, "ok", dim, 0.0) for i in range(n)], np.ones(n, dtype=bool))
    early._stop()
    sizes = [size for size, _ in asked]
    assert len(asked) > 3 and {a for _, a in asked} == {os.POSIX_FADV_DONTNEED}  # while the run went on
    assert all(b - a >= 4000 for a, b in zip(sizes, sizes[1:], strict=False))  # every ~4000 bytes
    expected = _reference(work, final)
    got = pq.read_table(work.finish(final, n, fresh=False, count=["e__status"], early=early))
    assert got.cast(final.remove_metadata()).equals(expected)


def test_an_embed_rows_cache_entry_is_the_one_input_answer_and_holds_only_its_own_bytes() -> None:
    # A packed answer is cut into one cache entry per row (the answer a one-input request would have
    # got). orjson's output buffer for an 8 kB answer was ~130 kB, shrunk in place: a pack's entries,
    # kept until stored, pinned ~120 kB of heap each (an embed run with the cache on peaked ~120 MB
    # higher than with it off). The entry is the same bytes, allocated at its own size.
    import base64
    import tracemalloc

    import orjson

    from pipeline.endpoints.embed import _row_entry

    vec = np.linspace(-1, 1, 1536, dtype=np.float32)
    b64 = base64.b64encode(vec.astype("<f4").tobytes()).decode()
    for b in (None, b64):
        for tokens in (None, 0, 17):
            for model in ("text-embedding-3-small", 'odd "model" é'):
                answer: dict[str, Any] = {
                    "object": "list",
                    "data": [{"object": "embedding", "index": 0, "embedding": b64}],
                    "model": model,
                }
                if tokens is not None:
                    answer["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
                assert _row_entry(model, vec, b, tokens) == orjson.dumps(answer)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        kept = [_row_entry("text-embedding-3-small", vec, b64, 9) for _ in range(200)]
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert held < 200 * 2 * len(kept[0]), f"{held / 200:.0f} bytes held per {len(kept[0])}-byte entry"


def test_pipeline_run_keeps_mallocs_mmap_threshold_unless_the_environment_tunes_malloc() -> None:
    import platform
    import subprocess
    import sys

    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    code = "from pipeline.cli import freeze_malloc_thresholds as f; print(f())"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
    out = subprocess.run(
        [sys.executable, "-c", code], env={**env, "MALLOC_ARENA_MAX": "2"}, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"  # the user's malloc settings are left alone
