"""Results on disk: Parquet parts in a work folder as rows finish, then one atomic final file."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import JobError
from .records import StepResult
from .sources import ROW

PART = "__part"
FINGERPRINT_KEY = "pipeline.fingerprint"
FAILED = ("error", "invalid")
FINISH_ROWS = 50_000  # input positions per slice of the final write, at most
FINISH_BYTES = 8 * 2**20  # and about this much data per slice (vectors make rows big)


def step_fields(step: str, values: Sequence[pa.Field]) -> list[pa.Field]:
    """A step's output columns followed by its accounting columns (SPEC.md, Output)."""
    return [
        *values,
        pa.field(f"{step}__status", pa.string()),
        pa.field(f"{step}__error", pa.string()),
        pa.field(f"{step}__attempts", pa.int32()),
        pa.field(f"{step}__prompt_tokens", pa.int64()),
        pa.field(f"{step}__completion_tokens", pa.int64()),
        pa.field(f"{step}__cached", pa.bool_()),
        pa.field(f"{step}__tokens_estimated", pa.bool_()),
        pa.field(f"{step}__cost", pa.float64()),  # USD; null when the model's price is unknown
    ]


def flatten_result(step: str, r: StepResult, value_names: Sequence[str], out: dict[str, Any]) -> None:
    """Write one step's result for a row into the row's column dict."""
    for name in value_names:
        out[name] = r.values.get(name)
    out[f"{step}__status"] = r.status
    out[f"{step}__error"] = r.error
    out[f"{step}__attempts"] = r.attempts
    out[f"{step}__prompt_tokens"] = r.prompt_tokens
    out[f"{step}__completion_tokens"] = r.completion_tokens
    out[f"{step}__cached"] = r.cached
    out[f"{step}__tokens_estimated"] = r.tokens_estimated
    out[f"{step}__cost"] = None  # priced by the executor, which knows the step's model


@dataclass
class Prior:
    """What earlier runs of the same job already finished, by input position."""

    done: np.ndarray  # bool per row: has a final result
    failed: np.ndarray  # bool per row: that result failed (redone with --retry-failed)

    @property
    def n_done(self) -> int:
        return int(self.done.sum())


class WorkDir:
    """`<output>.work/`: the fingerprint of the job and the Parquet parts written so far."""

    def __init__(self, output: Path, fingerprint: str) -> None:
        self.output = output
        self.path = output.with_name(output.name + ".work")
        self.fingerprint = fingerprint

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold `<output>.lock` for the run: two runs of one job would write the same parts."""
        lock_path = self.output.with_name(self.output.name + ".lock")
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(lock_path, "a+")  # noqa: SIM115 - held open for the whole run
        except OSError as exc:
            raise JobError(f"cannot create {lock_path}: {exc}") from exc
        try:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.seek(0)
                other = fh.read().strip() or "?"
                raise JobError(
                    f"another run of this job is writing {self.output} (pid {other}); wait for it to finish "
                    f"or stop it (its finished rows are kept)"
                ) from None
            fh.seek(0)
            fh.truncate()
            fh.write(str(os.getpid()))
            fh.flush()
            yield
        finally:
            fh.close()  # closing releases the lock, also when the process dies
            with contextlib.suppress(OSError):
                lock_path.unlink()

    @property
    def state_file(self) -> Path:
        return self.path / "state.json"

    def parts(self) -> list[Path]:
        return sorted(self.path.glob("part-*.parquet")) if self.path.is_dir() else []

    def prepare(self, fresh: bool) -> bool:
        """Make the folder ready; True when its parts belong to this job and can be resumed."""
        try:
            if self.path.exists():
                state = {}
                with contextlib.suppress(OSError, ValueError):
                    state = json.loads(self.state_file.read_text())
                if fresh or state.get("fingerprint") != self.fingerprint:
                    shutil.rmtree(self.path)
                else:
                    for tmp in self.path.glob("*.tmp"):
                        tmp.unlink()  # a part being written when the process died
                    return True
            self.path.mkdir(parents=True, exist_ok=True)
            self.state_file.write_text(json.dumps({"fingerprint": self.fingerprint, "created": time.time()}))
            return False
        except OSError as exc:
            raise JobError(f"cannot prepare the work folder {self.path}: {exc}") from exc

    def _final_matches(self) -> bool:
        if not self.output.exists():
            return False
        try:
            meta = pq.ParquetFile(self.output).metadata.metadata or {}
        except Exception:
            return False
        return meta.get(FINGERPRINT_KEY.encode()) == self.fingerprint.encode()

    def sources(self, fresh: bool) -> list[pl.LazyFrame]:
        """Earlier results of this job: the final file (when it is this job's) and the parts."""
        frames: list[pl.LazyFrame] = []
        if not fresh and self._final_matches():
            final = pl.scan_parquet(self.output)
            # fixed-size vectors in the final file are plain lists in the parts: read them back as such
            arrays = [n for n, t in final.collect_schema().items() if isinstance(t, pl.Array)]
            final = final.with_columns(pl.col(n).arr.to_list() for n in arrays)
            frames.append(final.with_row_index(ROW).with_columns(pl.lit(-1).alias(PART)))
        for i, part in enumerate(self.parts()):
            frames.append(pl.scan_parquet(part).with_columns(pl.lit(i).alias(PART)))
        return frames

    def prior(self, total_rows: int, status_columns: Sequence[str], fresh: bool) -> Prior:
        """Which rows earlier runs finished (latest write of a row wins)."""
        done = np.zeros(total_rows, dtype=bool)
        failed = np.zeros(total_rows, dtype=bool)
        frames = self.sources(fresh)
        if not frames:
            return Prior(done, failed)
        cols = [ROW, PART, *status_columns]
        lf = pl.concat([f.select(cols) for f in frames], how="vertical_relaxed")
        latest = (
            lf.sort([ROW, PART]).unique(subset=[ROW], keep="last", maintain_order=True)
            .with_columns(pl.any_horizontal([pl.col(c).is_in(FAILED) for c in status_columns]).alias("__failed"))
            .select(ROW, "__failed").collect()
        )
        rows = latest[ROW].to_numpy()
        keep = rows < total_rows
        done[rows[keep]] = True
        failed[rows[keep]] = latest["__failed"].to_numpy()[keep]
        return Prior(done, failed)

    def written(self, fresh: bool) -> pl.LazyFrame | None:
        """Every write of every finished row (final file and parts), with `__row` and `__part`: a row
        written again by a later run appears again with a higher `__part` (`keep_latest` picks it)."""
        frames = self.sources(fresh)
        return pl.concat(frames, how="vertical_relaxed") if frames else None

    def _slices(self, fresh: bool) -> Iterator[tuple[int, int, Callable[[int, int], pl.DataFrame]]]:
        """Each source of results as (first row, last row + 1, reader of its rows in [lo, hi))."""
        if not fresh and self._final_matches():
            n = pq.ParquetFile(self.output).metadata.num_rows

            def read_final(lo: int, hi: int) -> pl.DataFrame:
                final = pl.scan_parquet(self.output)
                # fixed-size vectors in the final file are plain lists in the parts: read them back as such
                arrays = [n for n, t in final.collect_schema().items() if isinstance(t, pl.Array)]
                return (final.with_columns(pl.col(n).arr.to_list() for n in arrays)
                        .with_row_index(ROW).slice(lo, hi - lo)
                        .with_columns(pl.lit(-1, pl.Int64).alias(PART)).collect())

            yield 0, n, read_final
        for i, part in enumerate(self.parts()):
            meta = pq.ParquetFile(part).metadata
            col = meta.schema.to_arrow_schema().get_field_index(ROW)
            lows, highs = [], []
            for g in range(meta.num_row_groups):
                st = meta.row_group(g).column(col).statistics
                lows.append(st.min if st is not None and st.has_min_max else 0)
                highs.append(st.max if st is not None and st.has_min_max else 2**32)

            def read_part(lo: int, hi: int, path: Path = part, i: int = i) -> pl.DataFrame:
                return (pl.scan_parquet(path).filter(pl.col(ROW).is_between(lo, hi, closed="left"))
                        .with_columns(pl.lit(i, pl.Int64).alias(PART)).collect())

            yield min(lows, default=0), max(highs, default=-1) + 1, read_part

    def _slice_rows(self) -> int:
        """Input positions per slice of the final write: FINISH_ROWS, fewer when rows are big."""
        size = rows = 0
        for part in self.parts()[:20]:
            meta = pq.ParquetFile(part).metadata
            for g in range(meta.num_row_groups):
                size += meta.row_group(g).total_byte_size
                rows += meta.row_group(g).num_rows
        per_row = size / rows if rows else 0
        return max(1, min(FINISH_ROWS, int(FINISH_BYTES / per_row) if per_row else FINISH_ROWS))

    def finish(self, schema: pa.Schema, total_rows: int, fresh: bool) -> Path:
        """Write the final file in input order, atomically; then drop the work folder.

        Written in slices of `FINISH_ROWS` input positions, so memory does not grow with the job: parts
        are sorted by `__row` when written, and each slice reads only the parts whose range overlaps it.
        """
        sources = list(self._slices(fresh))
        self.output.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.output.with_name(f".{self.output.name}.{os.getpid()}.tmp")
        empty = pl.from_arrow(schema.empty_table())
        assert isinstance(empty, pl.DataFrame)
        pl_schema = empty.schema
        writer: pq.ParquetWriter | None = None
        try:
            step = self._slice_rows()
            for lo in range(0, max(total_rows, 1), step):
                hi = lo + step
                frames = [read(lo, hi) for first, last, read in sources if first < hi and last > lo]
                if frames:
                    chunk = (
                        pl.concat(frames, how="diagonal_relaxed")
                        .sort([ROW, PART])
                        .unique(subset=[ROW], keep="last", maintain_order=True)
                        .select(schema.names)
                        .cast(pl_schema)
                    )
                else:
                    chunk = empty
                table = chunk.to_arrow()
                if writer is None:
                    meta = {**(table.schema.metadata or {}), FINGERPRINT_KEY.encode(): self.fingerprint.encode()}
                    writer = pq.ParquetWriter(tmp, table.schema.with_metadata(meta), compression="zstd")
                writer.write_table(table.cast(writer.schema))
            assert writer is not None
            writer.close()
            writer = None
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, self.output)
        except Exception as exc:
            if writer is not None:
                with contextlib.suppress(Exception):
                    writer.close()
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise JobError(f"cannot write the output {self.output}: {exc}") from exc
        shutil.rmtree(self.path, ignore_errors=True)
        return self.output


def keep_latest(written: pl.LazyFrame) -> pl.LazyFrame:
    """The latest write of each row of `WorkDir.written`, in input order. To look at a few columns,
    collect them first and pass that: polars sorts the union of the parts with every column loaded
    (vectors included), whatever is selected afterwards."""
    return written.sort([ROW, PART]).unique(subset=[ROW], keep="last", maintain_order=True)


class PartWriter:
    """Buffers finished rows and writes them as Parquet parts (atomically: tmp file, then rename)."""

    def __init__(self, work: WorkDir, schema: pa.Schema, flush_rows: int, flush_interval_s: float) -> None:
        self.work = work
        self.schema = schema
        self.flush_rows = flush_rows
        self.flush_interval_s = flush_interval_s
        self._rows: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()
        existing = work.parts()
        self._next = (int(existing[-1].stem.split("-")[1]) + 1) if existing else 1
        self.rows_written = 0

    def add(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        if len(self._rows) >= self.flush_rows or time.monotonic() - self._last_flush >= self.flush_interval_s:
            self.flush()

    def add_many(self, rows: Iterable[dict[str, Any]]) -> None:
        self._rows.extend(rows)
        if len(self._rows) >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._rows:
            return
        # sorted by input position: the final write then reads each part only for the slice it covers
        table = pa.Table.from_pylist(self._rows, schema=self.schema).sort_by(ROW)
        final = self.work.path / f"part-{self._next:06d}.parquet"
        tmp = final.with_suffix(".tmp")
        try:
            pq.write_table(table, tmp, compression="zstd")
            os.replace(tmp, final)
        except OSError as exc:
            raise JobError(f"cannot write results to {final}: {exc}") from exc
        self._next += 1
        self.rows_written += len(self._rows)
        self._rows = []
