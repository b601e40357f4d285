"""Work folder and final file: input order, latest write of a row wins, slices, resume from the final file."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

import pipeline.sinks as sinks
from pipeline.sinks import PartWriter, WorkDir
from pipeline.sources import ROW

SCHEMA = pa.schema([(ROW, pa.uint32()), ("id", pa.string()), ("s__status", pa.string()), ("v", pa.string())])


def rows(ids: list[int], status: str, tag: str) -> list[dict[str, object]]:
    return [{ROW: i, "id": f"r{i}", "s__status": status, "v": f"{tag}{i}"} for i in ids]


@pytest.fixture(autouse=True)
def small_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sinks, "FINISH_ROWS", 7)


def test_final_in_input_order_latest_write_wins(tmp_path: Path) -> None:
    work = WorkDir(tmp_path / "out.parquet", "fp1")
    assert work.prepare(fresh=False) is False
    w = PartWriter(work, SCHEMA, flush_rows=5, flush_interval_s=60)
    w.add_many(rows([9, 3, 17, 0, 4, 12], "ok", "a"))
    w.add_many(rows([1, 2, 5, 6, 7, 8, 10, 11, 13, 14, 15, 16, 18, 19], "error", "a"))
    w.flush()
    w.add_many(rows([2, 13], "ok", "b"))  # redone with --retry-failed
    w.flush()
    prior = work.prior(20, ["s__status"], fresh=False)
    assert prior.done.all() and prior.failed.sum() == 12 and not prior.failed[2] and not prior.failed[13]
    out = pl.read_parquet(work.finish(SCHEMA.remove(0), 20, fresh=False))
    assert out["id"].to_list() == [f"r{i}" for i in range(20)]
    assert out.filter(pl.col("id") == "r2")["v"][0] == "b2"
    assert not work.path.exists()


def test_resume_from_final_file(tmp_path: Path) -> None:
    work = WorkDir(tmp_path / "out.parquet", "fp1")
    work.prepare(fresh=False)
    w = PartWriter(work, SCHEMA, flush_rows=100, flush_interval_s=60)
    w.add_many(rows(list(range(15)), "ok", "a"))
    w.add_many(rows([15], "error", "a"))
    w.flush()
    work.finish(SCHEMA.remove(0), 16, fresh=False)
    # the same job again: the final file counts as done; a retried row overrides it
    work2 = WorkDir(tmp_path / "out.parquet", "fp1")
    work2.prepare(fresh=False)
    prior = work2.prior(16, ["s__status"], fresh=False)
    assert prior.done.all() and prior.failed.tolist() == [False] * 15 + [True]
    w2 = PartWriter(work2, SCHEMA, flush_rows=100, flush_interval_s=60)
    w2.add_many(rows([15], "ok", "c"))
    w2.flush()
    out = pl.read_parquet(work2.finish(SCHEMA.remove(0), 16, fresh=False))
    assert out["v"].to_list() == [f"a{i}" for i in range(15)] + ["c15"]
    # a different job (fingerprint) does not take the file as its own
    other = WorkDir(tmp_path / "out.parquet", "fp2")
    other.prepare(fresh=False)
    assert other.prior(16, ["s__status"], fresh=False).done.sum() == 0


def test_fresh_discards_parts(tmp_path: Path) -> None:
    work = WorkDir(tmp_path / "out.parquet", "fp1")
    work.prepare(fresh=False)
    w = PartWriter(work, SCHEMA, flush_rows=100, flush_interval_s=60)
    w.add_many(rows([0, 1], "ok", "a"))
    w.flush()
    assert WorkDir(tmp_path / "out.parquet", "fp1").prepare(fresh=False) is True
    again = WorkDir(tmp_path / "out.parquet", "fp1")
    assert again.prepare(fresh=True) is False and again.parts() == []


def test_half_written_part_is_ignored(tmp_path: Path) -> None:
    work = WorkDir(tmp_path / "out.parquet", "fp1")
    work.prepare(fresh=False)
    (work.path / "part-000001.tmp").write_bytes(b"PAR1 truncated by kill -9")
    assert WorkDir(tmp_path / "out.parquet", "fp1").prepare(fresh=False) is True
    assert not (work.path / "part-000001.tmp").exists()
