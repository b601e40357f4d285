"""Input rows from CSV, JSONL or Parquet via polars, streamed in bounded batches with a row index."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import IO

import numpy as np
import polars as pl

from .errors import InputError

ROW = "__row"  # 0-based input position; the output is sorted by it
ID_CHECK_ROWS = 100_000  # ids read at a time by the input check
READ_ROWS = 100_000  # rows of a Parquet input read at a time (handed on in smaller batches)
# `input.schema` type names and the polars types they read as
DTYPES: dict[str, pl.DataType] = {
    "string": pl.String(),
    "int64": pl.Int64(),
    "int32": pl.Int32(),
    "float64": pl.Float64(),
    "float32": pl.Float32(),
    "bool": pl.Boolean(),
    "date": pl.Date(),
    "datetime": pl.Datetime("us"),
}
_TRUE = ["true", "t", "yes", "y", "1"]
_FALSE = ["false", "f", "no", "n", "0"]
FORMATS = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


@dataclass(frozen=True)
class Source:
    """A tabular input file and how its rows are keyed."""

    path: Path
    format: str
    id_column: str | None
    limit: int | None
    # `input.schema`: columns read as these types (names of DTYPES); CSV columns are text otherwise
    dtypes: tuple[tuple[str, str], ...] = field(default=(), kw_only=True)

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        format: str | None,
        id_column: str | None,
        limit: int | None,
        dtypes: Mapping[str, str] | None = None,
    ) -> Source:
        from .globsource import GlobSource, is_glob

        if is_url(str(path)):
            from .urlsource import UrlSource

            return UrlSource.open_url(str(path), format=format, id_column=id_column, limit=limit, dtypes=dtypes)
        p = Path(path)
        if p.is_dir() or (is_glob(str(path)) and not p.is_file()):
            if dtypes:
                raise InputError(
                    f"input.schema does not apply to {path}, a glob or folder of files "
                    "(its columns are path, size_bytes, modified_at); drop input.schema"
                )
            return GlobSource.open_glob(str(path), id_column=id_column, limit=limit, format=format)
        if not p.exists():
            raise InputError(f"input file not found: {p} (relative paths are read from {Path.cwd()})")
        if not p.is_file():
            raise InputError(f"input {p} is not a regular file")
        if p.stat().st_size == 0:
            raise InputError(f"input file {p} is empty (0 bytes): there are no rows to process")
        fmt = format or FORMATS.get(p.suffix.lower())
        if fmt is None:
            raise InputError(
                f"cannot tell the format of {p} from its extension {p.suffix!r}; "
                "use .csv, .jsonl or .parquet, or set input.format"
            )
        src = cls(p, fmt, id_column, limit, dtypes=tuple((dtypes or {}).items()))
        src.schema()  # fail now, naming the file, if it cannot be parsed
        return src

    @property
    def label(self) -> str:
        """The input as its messages name it (a path, or a URL)."""
        return str(self.path)

    def _data(self) -> str | Path | IO[bytes]:
        """What polars reads: the file (a URL source gives a file object of its file system)."""
        return self.path

    def typed(self, df: pl.DataFrame) -> pl.DataFrame:
        """A batch of rows read as stored (see `_raw`) with input.schema applied: what `batches` yields,
        for a reader other than polars (the Ray backend reads with ray.data)."""
        exprs = self._converted(df.schema)
        return df.with_columns(e.alias(n) for n, e in exprs.items()) if exprs else df

    def raw_schema(self) -> pl.Schema:
        """The columns as stored, before input.schema (CSV: all text; JSONL: inferred from every line)."""
        return self._raw().collect_schema()

    @property
    def base_dir(self) -> Path:
        """Where relative file paths in the rows are read from: the input file's folder."""
        return self.path.resolve().parent

    def _raw(self) -> pl.LazyFrame:
        """The rows as stored: CSV all text; JSONL with types inferred from every line; Parquet as is."""
        sep = "\t" if self.path.suffix.lower() == ".tsv" else ","
        if self.format == "csv":
            # text unless input.schema says otherwise: inference would turn `007` into 7 (SPEC.md, Job file)
            lf = pl.scan_csv(self._data(), separator=sep, infer_schema=False, raise_if_empty=False)
        elif self.format == "jsonl":
            lf = pl.scan_ndjson(self._data(), schema=self._jsonl_schema)
        else:
            lf = pl.scan_parquet(self._data())
        if self.limit is not None:
            lf = lf.head(self.limit)
        return lf

    @cached_property
    def _jsonl_schema(self) -> pl.Schema:
        # Inferred from every line, so a value that breaks the type of the first lines is found here,
        # before any request (`check`), not in the middle of a run.
        return pl.scan_ndjson(self._data(), infer_schema_length=None).collect_schema()

    def _converted(self, raw: pl.Schema) -> dict[str, pl.Expr]:
        """input.schema as expressions: a value that does not convert becomes null (`check` reports it)."""
        exprs: dict[str, pl.Expr] = {}
        for name, type_name in self.dtypes:
            if name not in raw:
                continue  # reported by `schema` with the file's columns
            want = DTYPES[type_name]
            col = pl.col(name)
            if raw.get(name) != pl.String():
                exprs[name] = col.cast(want, strict=False)
            elif type_name == "string":
                continue
            elif type_name == "bool":
                low = col.str.strip_chars().str.to_lowercase()
                exprs[name] = pl.when(low.is_in(_TRUE)).then(True).when(low.is_in(_FALSE)).then(False).otherwise(None)
            elif type_name == "date":
                exprs[name] = col.str.strip_chars().str.to_date(strict=False)
            elif type_name == "datetime":
                exprs[name] = col.str.strip_chars().str.to_datetime(time_unit="us", strict=False)
            else:
                exprs[name] = col.str.strip_chars().cast(want, strict=False)
        return exprs

    def _scan(self) -> pl.LazyFrame:
        lf = self._raw()
        if self.dtypes:
            exprs = self._converted(lf.collect_schema())
            if exprs:
                lf = lf.with_columns(e.alias(n) for n, e in exprs.items())
        return lf

    def schema(self) -> pl.Schema:
        """Column names and types (reads only what the format needs to know them)."""
        try:
            schema = self._scan().collect_schema()
        except Exception as exc:
            raise InputError(f"cannot read {self.format} input {self.label}: {_first_line(exc)}") from exc
        unknown = [n for n, _ in self.dtypes if n not in schema]
        if unknown:
            raise InputError(
                f"input.schema names column(s) {', '.join(unknown)}, which {self.label} does not "
                f"have; columns are: {', '.join(schema.names())}"
            )
        return schema

    def _where(self, index: int) -> str:
        return f"line {index + 1}" if self.format == "jsonl" else f"row {index + 1} (1-based, header excluded)"

    def check_types(self) -> None:
        """Every value converts to its column's type, in the whole file (a full scan, before any request).

        Reports the first offending row of each column: its position, the value and the expected type."""
        if not self.dtypes and self.format != "jsonl":
            return  # CSV is text and Parquet typed: nothing to convert, nothing can clash
        problems = []
        raw = self._raw()
        raw_schema = raw.collect_schema()
        exprs = self._converted(raw_schema)
        for name, type_name in self.dtypes:
            if name not in exprs:
                continue
            bad = (
                raw.with_row_index(ROW)
                .filter(pl.col(name).is_not_null() & exprs[name].is_null())
                .select(ROW, pl.col(name).cast(pl.String))
            )
            found = bad.head(1).collect()
            if found.height:
                n = bad.select(pl.len()).collect().item()
                idx, value = found.row(0)
                problems.append(
                    f"{self.label}, {self._where(idx)}: column `{name}` holds {value!r}, which is not {type_name} "
                    f"(input.schema); {n:,} value(s) like it. Fix the data or declare `{name}: string`"
                )
        if self.format == "jsonl":
            head = pl.scan_ndjson(self._data(), infer_schema_length=100).collect_schema()  # "the first lines"
            declared = dict(self.dtypes)
            for name, full in raw_schema.items():
                first = head.get(name)
                if name in declared or first is None or first == full or first == pl.Null():
                    continue
                if first.is_numeric() and full.is_numeric():
                    continue  # ints widened to floats: no value changes
                as_text = pl.scan_ndjson(self._data(), schema_overrides={name: pl.String()}, infer_schema_length=None)
                clash = (
                    as_text.with_row_index(ROW)
                    .filter(pl.col(name).is_not_null() & pl.col(name).cast(first, strict=False).is_null())
                    .select(ROW, name)
                    .head(1)
                    .collect()
                )
                where, value = (
                    (self._where(clash.row(0)[0]), clash.row(0)[1]) if clash.height else ("a later line", "?")
                )
                problems.append(
                    f"{self.label}, {where}: field `{name}` holds {value!r}, but the lines before hold {first} "
                    f"values (mixed types); declare its type in input.schema (e.g. `{name}: string`) or fix "
                    "the data"
                )
        if problems:
            raise InputError("\n".join(problems))

    @property
    def columns(self) -> list[str]:
        return list(self.schema().names())

    @staticmethod
    def _id_stats(lf: pl.LazyFrame, column: str) -> dict[str, int]:
        """Rows, null ids and distinct ids. Read in batches and counted from 64-bit hashes of the ids (8
        bytes a row): `n_unique` over the ids themselves held them all and a hash table of them (+105 MB
        for 10^6 short ids, a peak the run started from). Ids whose hashes collide are counted exactly."""
        n = nulls = 0
        hashes: list[np.ndarray] = []
        for df in lf.select(column).collect_batches(chunk_size=ID_CHECK_ROWS, maintain_order=False, lazy=True):
            col = df.get_column(column)
            n += col.len()
            nulls += col.null_count()
            hashes.append(col.hash(seed=0).to_numpy())
        h = np.concatenate(hashes) if hashes else np.zeros(0, dtype=np.uint64)
        del hashes
        h.sort()
        unique = n
        if len(h) > 1:
            same = h[1:] == h[:-1]
            if same.any():  # duplicates, or (rarely) different ids with one hash: counted exactly
                idc = pl.col(column)
                unique = int(
                    lf.select(idc).filter(idc.hash(seed=0).is_in(h[1:][same].tolist())).collect()[column].n_unique()
                )
                unique += len(np.unique(h)) - len(np.unique(h[1:][same]))
        return {"n": n, "nulls": nulls, "unique": unique}

    def check(self) -> int:
        """Validate the id column (present, no nulls, no duplicates); return the row count."""
        cols = self.columns
        if ROW in cols:
            raise InputError(f"{self.label}: column name {ROW!r} is reserved")
        lf = self._scan()
        try:
            self.check_types()
            if self.id_column is None:
                return int(lf.select(pl.len()).collect().item())
            if self.id_column not in cols:
                raise InputError(
                    f"input.id column `{self.id_column}` is not in {self.label}; columns are: {', '.join(cols)}"
                )
            idc = pl.col(self.id_column)
            stats = self._id_stats(lf, self.id_column)
            if stats["nulls"]:
                first = lf.with_row_index(ROW).filter(idc.is_null()).select(ROW).head(5).collect()[ROW].to_list()
                raise InputError(
                    f"{self.label}: id column `{self.id_column}` has {stats['nulls']} null value(s), "
                    f"first at row(s) {', '.join(str(r + 1) for r in first)} (1-based, header excluded)"
                )
            if stats["unique"] != stats["n"]:
                dups = (
                    lf.group_by(self.id_column)
                    .agg(pl.len().alias("count"))
                    .filter(pl.col("count") > 1)
                    .sort("count", descending=True)
                    .head(5)
                    .collect()
                )
                shown = ", ".join(f"{v!r} ({c} times)" for v, c in dups.iter_rows())
                raise InputError(
                    f"{self.label}: id column `{self.id_column}` has {stats['n'] - stats['unique']} "
                    f"duplicate value(s): {shown}. Ids must be unique, or drop input.id to key rows by number"
                )
            return int(stats["n"])
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"cannot read {self.format} input {self.label}: {_first_line(exc)}") from exc

    def batches(self, size: int, skip_rows: int = 0) -> Iterator[pl.DataFrame]:
        """The rows in order, `size` at a time, each with its 0-based input position in `__row`."""
        lf = self._scan().with_row_index(ROW)
        if skip_rows:
            lf = lf.slice(skip_rows)
        try:
            if self.format == "parquet":
                yield from _read_in_slices(lf, size)
                return
            for df in lf.collect_batches(chunk_size=size, maintain_order=True, lazy=True):
                if df.height:
                    yield df
        except Exception as exc:
            raise InputError(f"cannot read {self.format} input {self.label}: {_first_line(exc)}") from exc

    def fingerprint(self) -> str:
        """Changes when the file, the id column or the row limit change."""
        st = os.stat(self.path)
        h = hashlib.sha256(
            f"{self.path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{self.id_column}|{self.limit}".encode()
        )
        return h.hexdigest()[:16]


def _read_in_slices(lf: pl.LazyFrame, size: int) -> Iterator[pl.DataFrame]:
    """A Parquet input `size` rows at a time, READ_ROWS read at once. polars' `collect_batches` reads
    ahead of a slower consumer without bound (a run feeds rows only as requests leave room): a 10^6-row
    input held ~95 MB of waiting batches early in the run. A slice of a Parquet scan reads only the row
    groups it covers."""
    offset = 0
    while True:
        df = lf.slice(offset, READ_ROWS).collect()
        for lo in range(0, df.height, size):
            yield df.slice(lo, size)
        if df.height < READ_ROWS:
            return
        offset += df.height


def is_url(path: str) -> bool:
    """`s3://bucket/key`, `file:///abs/path`, ...: an fsspec URL rather than a local path."""
    scheme, sep, _ = path.partition("://")
    return bool(sep) and scheme.isidentifier() and len(scheme) > 1


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
