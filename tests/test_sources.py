"""Inputs: formats, bounded batches with row positions, id checks."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from pipeline.errors import InputError
from pipeline.sources import ROW, Source


def make(tmp_path: Path, fmt: str, n: int = 10, dup: bool = False) -> Path:
    ids = [f"r{i}" for i in range(n)]
    if dup:
        ids[5] = ids[2]
    df = pl.DataFrame({"id": ids, "text": [f"text {i}" for i in range(n)]})
    p = tmp_path / f"in.{fmt}"
    {"csv": df.write_csv, "jsonl": df.write_ndjson, "parquet": df.write_parquet}[fmt](p)
    return p


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_batches_in_order(tmp_path: Path, fmt: str) -> None:
    src = Source.open(make(tmp_path, fmt, 25), format=None, id_column="id", limit=None)
    assert src.check() == 25
    batches = list(src.batches(10))
    assert [b.height for b in batches] == [10, 10, 5]
    rows = pl.concat(batches)
    assert rows[ROW].to_list() == list(range(25))
    assert rows["id"].to_list() == [f"r{i}" for i in range(25)]


def test_limit(tmp_path: Path) -> None:
    src = Source.open(make(tmp_path, "csv", 25), format=None, id_column=None, limit=7)
    assert src.check() == 7
    assert sum(b.height for b in src.batches(3)) == 7


def test_duplicate_ids(tmp_path: Path) -> None:
    src = Source.open(make(tmp_path, "csv", 10, dup=True), format=None, id_column="id", limit=None)
    with pytest.raises(InputError, match=r"duplicate value\(s\): 'r2' \(2 times\)"):
        src.check()


def test_null_ids(tmp_path: Path) -> None:
    p = tmp_path / "n.csv"
    p.write_text("id,text\na,x\n,y\nc,z\n")
    with pytest.raises(InputError, match="null value"):
        Source.open(p, format=None, id_column="id", limit=None).check()


def test_missing_id_column(tmp_path: Path) -> None:
    src = Source.open(make(tmp_path, "csv"), format=None, id_column="review_id", limit=None)
    with pytest.raises(InputError, match="input.id column `review_id` is not in .*columns are: id, text"):
        src.check()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="input file not found"):
        Source.open(tmp_path / "nope.csv", format=None, id_column=None, limit=None)


def test_unknown_extension(tmp_path: Path) -> None:
    p = tmp_path / "x.xlsx"
    p.write_text("x")
    with pytest.raises(InputError, match="cannot tell the format"):
        Source.open(p, format=None, id_column=None, limit=None)


def test_unparseable_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.parquet"
    p.write_text("not parquet")
    with pytest.raises(InputError, match="cannot read parquet input"):
        Source.open(p, format=None, id_column=None, limit=None)


def test_id_counts_read_in_batches_match_polars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The id check counts rows, nulls and distinct ids from hashes, a batch at a time: the same counts
    as polars over the whole column, duplicates (counted exactly) and nulls included."""
    from pipeline import sources

    monkeypatch.setattr(sources, "ID_CHECK_ROWS", 7)  # many batches
    ids = [f"r{i % 40}" for i in range(55)] + [None, None] + [str(i) for i in range(30)]
    for values in (ids, [f"u{i}" for i in range(50)], ids[:1], []):
        lf = pl.DataFrame({"id": values}, schema={"id": pl.String}).lazy()
        col = pl.Series(values, dtype=pl.String)
        want = {"n": len(values), "nulls": col.null_count(), "unique": col.n_unique()}
        assert Source._id_stats(lf, "id") == want, values[:5]


@pytest.mark.parametrize(("limit", "skip"), [(None, 0), (None, 9), (20, 4)])
def test_parquet_batches_read_a_slice_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int | None, skip: int
) -> None:
    """A Parquet input is read READ_ROWS at a time (not read ahead without bound): every row once, in
    order, with its input position, across slices and row groups; with a row limit and skipped rows."""
    from pipeline import sources

    monkeypatch.setattr(sources, "READ_ROWS", 7)
    path = tmp_path / "in.parquet"
    pl.DataFrame({"id": [f"r{i}" for i in range(25)], "text": [f"t{i}" for i in range(25)]}).write_parquet(
        path, row_group_size=4
    )
    src = Source.open(path, format=None, id_column="id", limit=limit)
    batches = list(src.batches(3, skip_rows=skip))
    assert all(0 < b.height <= 3 for b in batches)
    rows = pl.concat(batches)
    end = 25 if limit is None else limit
    assert rows[ROW].to_list() == list(range(skip, end))
    assert rows["id"].to_list() == [f"r{i}" for i in range(skip, end)]
