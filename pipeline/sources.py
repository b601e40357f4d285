"""Input rows from CSV, JSONL or Parquet via polars, streamed in bounded batches with a row index."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from .errors import InputError

ROW = "__row"  # 0-based input position; the output is sorted by it
FORMATS = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


@dataclass(frozen=True)
class Source:
    """A tabular input file and how its rows are keyed."""

    path: Path
    format: str
    id_column: str | None
    limit: int | None

    @classmethod
    def open(cls, path: str | Path, *, format: str | None, id_column: str | None, limit: int | None) -> Source:
        from .globsource import GlobSource, is_glob

        p = Path(path)
        if p.is_dir() or (is_glob(str(path)) and not p.is_file()):
            return GlobSource.open_glob(str(path), id_column=id_column, limit=limit, format=format)
        if not p.exists():
            raise InputError(f"input file not found: {p} (relative paths are read from {Path.cwd()})")
        fmt = format or FORMATS.get(p.suffix.lower())
        if fmt is None:
            raise InputError(
                f"cannot tell the format of {p} from its extension {p.suffix!r}; "
                "use .csv, .jsonl or .parquet, or set input.format"
            )
        src = cls(p, fmt, id_column, limit)
        src.schema()  # fail now, naming the file, if it cannot be parsed
        return src

    @property
    def base_dir(self) -> Path:
        """Where relative file paths in the rows are read from: the input file's folder."""
        return self.path.resolve().parent

    def _scan(self) -> pl.LazyFrame:
        sep = "\t" if self.path.suffix.lower() == ".tsv" else ","
        if self.format == "csv":
            lf = pl.scan_csv(self.path, separator=sep, infer_schema_length=10_000, raise_if_empty=False)
        elif self.format == "jsonl":
            lf = pl.scan_ndjson(self.path, infer_schema_length=10_000)
        else:
            lf = pl.scan_parquet(self.path)
        if self.limit is not None:
            lf = lf.head(self.limit)
        return lf

    def schema(self) -> pl.Schema:
        """Column names and types (reads only what the format needs to know them)."""
        try:
            return self._scan().collect_schema()
        except Exception as exc:
            raise InputError(f"cannot read {self.format} input {self.path}: {_first_line(exc)}") from exc

    @property
    def columns(self) -> list[str]:
        return list(self.schema().names())

    def check(self) -> int:
        """Validate the id column (present, no nulls, no duplicates); return the row count."""
        cols = self.columns
        if ROW in cols:
            raise InputError(f"{self.path}: column name {ROW!r} is reserved")
        lf = self._scan()
        try:
            if self.id_column is None:
                return int(lf.select(pl.len()).collect().item())
            if self.id_column not in cols:
                raise InputError(
                    f"input.id column `{self.id_column}` is not in {self.path}; columns are: {', '.join(cols)}"
                )
            idc = pl.col(self.id_column)
            stats = lf.select(pl.len().alias("n"), idc.null_count().alias("nulls"),
                              idc.n_unique().alias("unique")).collect().row(0, named=True)
            if stats["nulls"]:
                first = (lf.with_row_index(ROW).filter(idc.is_null()).select(ROW).head(5).collect()[ROW].to_list())
                raise InputError(
                    f"{self.path}: id column `{self.id_column}` has {stats['nulls']} null value(s), "
                    f"first at row(s) {', '.join(str(r + 1) for r in first)} (1-based, header excluded)"
                )
            if stats["unique"] != stats["n"]:
                dups = (lf.group_by(self.id_column).agg(pl.len().alias("count"))
                        .filter(pl.col("count") > 1).sort("count", descending=True).head(5).collect())
                shown = ", ".join(f"{v!r} ({c} times)" for v, c in dups.iter_rows())
                raise InputError(
                    f"{self.path}: id column `{self.id_column}` has {stats['n'] - stats['unique']} "
                    f"duplicate value(s): {shown}. Ids must be unique, or drop input.id to key rows by number"
                )
            return int(stats["n"])
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"cannot read {self.format} input {self.path}: {_first_line(exc)}") from exc

    def batches(self, size: int, skip_rows: int = 0) -> Iterator[pl.DataFrame]:
        """The rows in order, `size` at a time, each with its 0-based input position in `__row`."""
        lf = self._scan().with_row_index(ROW)
        if skip_rows:
            lf = lf.slice(skip_rows)
        try:
            for df in lf.collect_batches(chunk_size=size, maintain_order=True, lazy=True):
                if df.height:
                    yield df
        except Exception as exc:
            raise InputError(f"cannot read {self.format} input {self.path}: {_first_line(exc)}") from exc

    def fingerprint(self) -> str:
        """Changes when the file, the id column or the row limit change."""
        st = os.stat(self.path)
        h = hashlib.sha256(
            f"{self.path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{self.id_column}|{self.limit}".encode()
        )
        return h.hexdigest()[:16]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
