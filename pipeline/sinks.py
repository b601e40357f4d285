"""Results on disk: Parquet parts in a work folder as rows finish, then one atomic final file."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterable, Sequence
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

    def finish(self, schema: pa.Schema, fresh: bool) -> Path:
        """Write the final file in input order, atomically; then drop the work folder."""
        written = self.written(fresh)
        latest = keep_latest(written) if written is not None else None
        self.output.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.output.with_name(f".{self.output.name}.{os.getpid()}.tmp")
        names = schema.names
        pl_schema = pl.from_arrow(schema.empty_table()).schema
        if latest is not None:
            lf = latest.select(names).cast(dict(pl_schema))
        else:
            lf = pl.LazyFrame(pl.from_arrow(schema.empty_table()))
        try:
            lf.sink_parquet(
                tmp, metadata={FINGERPRINT_KEY: self.fingerprint}, sync_on_close="all"
            )
            os.replace(tmp, self.output)
        except Exception as exc:
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
        table = pa.Table.from_pylist(self._rows, schema=self.schema)
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
