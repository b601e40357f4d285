"""Work folder and final file: input order, latest write of a row wins, slices, resume from the final file."""

from __future__ import annotations

import asyncio
import errno
import threading
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest

import pipeline.sinks as sinks
from pipeline.errors import DiskError
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


# ----- parts are written off the event loop


class _HeldWrites:
    """`pq.write_table` that waits for `release` (set from the test) and records which thread wrote."""

    def __init__(self, fail: bool = False) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.threads: list[str] = []
        self.fail = fail
        self.real = sinks.pq.write_table

    def __call__(self, table: pa.Table, where: Any, **kwargs: Any) -> None:
        self.threads.append(threading.current_thread().name)
        if threading.current_thread() is threading.main_thread():
            raise AssertionError("a part was written on the event loop's thread")
        self.started.set()
        self.release.wait()
        Path(where).write_bytes(b"PAR1 half")  # the tmp file exists while it is written
        if self.fail:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.real(table, where, **kwargs)


async def test_a_part_being_written_does_not_hold_the_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    held = _HeldWrites()
    monkeypatch.setattr(sinks.pq, "write_table", held)
    work = WorkDir(tmp_path / "out.parquet", "fp1")
    work.prepare(fresh=False)
    w = PartWriter(work, SCHEMA, flush_rows=3, flush_interval_s=60)
    w.add_many(rows([5, 1, 3], "ok", "a"))  # a full part: handed to the writer thread, add returns
    await asyncio.get_running_loop().run_in_executor(None, held.started.wait)
    ticks = 0
    for _ in range(100):  # the loop runs on while the part is being written
        await asyncio.sleep(0)
        ticks += 1
    assert ticks == 100 and held.threads and held.threads[0].startswith("pipeline-parts")
    # not in place yet: no row of it counts as done
    assert work.parts() == [] and not work.prior(6, ["s__status"], fresh=False).done.any()
    w.add_many(rows([0, 2], "ok", "a"))
    held.release.set()
    await w.aflush()
    w.shutdown()
    assert [p.name for p in work.parts()] == ["part-000001.parquet", "part-000002.parquet"]
    assert work.prior(6, ["s__status"], fresh=False).done.tolist() == [True, True, True, True, False, True]
    assert w.rows_written == 5 and not list(work.path.glob("*.tmp"))


def test_parts_are_written_in_the_order_they_were_handed_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    held = _HeldWrites()
    monkeypatch.setattr(sinks.pq, "write_table", held)
    work = WorkDir(tmp_path / "out.parquet", "fp1")
    work.prepare(fresh=False)
    w = PartWriter(work, SCHEMA, flush_rows=2, flush_interval_s=60, max_pending=10)
    w.add_many(rows([0, 1], "error", "a"))
    w.add_many(rows([1, 2], "ok", "b"))  # row 1 again: this later write wins
    w.add_many(rows([1, 3], "ok", "c"))  # and this one again
    held.release.set()
    w.close()
    assert [p.name for p in work.parts()] == [f"part-00000{i}.parquet" for i in (1, 2, 3)]
    out = pl.read_parquet(work.finish(SCHEMA.remove(0), 4, fresh=False))
    assert out["v"].to_list() == ["a0", "c1", "b2", "c3"]


async def test_a_failed_part_removes_its_tmp_and_stops_the_writer_with_a_disk_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = _HeldWrites(fail=True)
    monkeypatch.setattr(sinks.pq, "write_table", held)
    work = WorkDir(tmp_path / "out.parquet", "fp1")
    work.prepare(fresh=False)
    w = PartWriter(work, SCHEMA, flush_rows=2, flush_interval_s=60)
    w.add_many(rows([0, 1], "ok", "a"))
    held.release.set()
    with pytest.raises(DiskError, match=r"part-000001\.parquet: No space left on device"):
        await w.aflush()
    with pytest.raises(DiskError, match=r"part-000001\.parquet"):  # every later call says so too
        w.add(rows([2], "ok", "a")[0])
    w.shutdown()
    assert work.parts() == [] and not list(work.path.glob("*.tmp"))
    assert not work.prior(3, ["s__status"], fresh=False).done.any()  # the failed part's rows stay to do


def test_final_counts_are_the_final_files_rows_by_status(tmp_path: Path) -> None:
    """The summary's counts come from the final write itself: the same as counting the file again."""
    schema = pa.schema(
        [(ROW, pa.uint32()), ("id", pa.string()), ("s__status", pa.string()), ("t__status", pa.string())]
    )
    work = WorkDir(tmp_path / "out.parquet", "fp1")
    work.prepare(fresh=False)
    w = PartWriter(work, schema, flush_rows=4, flush_interval_s=60)
    statuses = ["ok", "error", "ok", "invalid", "skipped", "ok"]
    for i in range(30):
        w.add({ROW: i, "id": f"r{i}", "s__status": statuses[i % 6], "t__status": None if i % 4 else "ok"})
    w.add_many({ROW: i, "id": f"r{i}", "s__status": "ok", "t__status": "ok"} for i in (1, 7))  # redone: latest wins
    w.close()
    work.finish(schema.remove(0), 30, fresh=False, count=["s__status", "t__status"])
    again = sinks.status_counts(WorkDir(tmp_path / "out.parquet", "fp1").sources(False), ["s__status", "t__status"])
    assert work.final_counts == again
    assert again["s"] == {"ok": 17, "error": 3, "invalid": 5, "skipped": 5} and again["t"] == {"ok": 10, None: 20}
