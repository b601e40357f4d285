"""Results on disk: Parquet parts in a work folder as rows finish, then one atomic final file."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import shutil
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import DiskError, JobError, RunAborted
from .records import StepResult
from .sources import ROW

PART = "__part"
FINGERPRINT_KEY = "pipeline.fingerprint"
JOB_KEY = "pipeline.job"  # the job name: a rerun of a changed job may replace its own earlier output
FAILED = ("error", "invalid")
FINISH_ROWS = 50_000  # input positions per slice of the final write, at most
FINISH_BYTES = 16 * 2**20  # and about this much data per slice (vectors make rows big): a row group
FINISH_CACHE_BYTES = 64 * 2**20  # parts kept decoded while consecutive slices draw from them


def write_options(schema: pa.Schema) -> dict[str, Any]:
    """Parquet options for `schema`: vector columns (lists of floats) skip dictionary encoding and
    statistics, which cost most of their write time (a dictionary of floats is given up on after
    trying) and buy nothing; twice the write and read speed of vector data."""

    def vector(t: pa.DataType) -> bool:
        return bool(
            (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t))
            and pa.types.is_floating(t.value_type)
        )

    if not any(vector(f.type) for f in schema):
        return {"compression": "zstd"}
    flat = [f.name for f in schema if not pa.types.is_nested(f.type)]
    return {"compression": "zstd", "use_dictionary": flat, "write_statistics": flat}


def work_path(output: Path) -> Path:
    """`<output>.work/`: where a run keeps its parts until the final file is written."""
    return output.with_name(output.name + ".work")


def lock_path(output: Path) -> Path:
    """`<output>.lock`: held by the run writing `output` (its content is the pid)."""
    return output.with_name(output.name + ".lock")


def _written_by(path: Path) -> str | None:
    """The job name stored in a Parquet file this package wrote ("" for files of older versions), or
    None when `path` is not such a file."""
    try:
        meta = pq.ParquetFile(path).metadata.metadata or {}
    except Exception:
        return None
    if FINGERPRINT_KEY.encode() not in meta:
        return None
    return str(meta.get(JOB_KEY.encode(), b"").decode("utf-8", "replace"))


def output_problems(output: Path, inputs: Sequence[Path], job_name: str) -> list[str]:
    """Why a run may not write `output`: it is an input, a folder, under a file, or an existing file that
    is not this job's own output (SPEC.md: no file other than the job's own output is ever replaced).
    Checked before any request is sent."""
    fix = "choose another output.path, or delete it yourself if it is not needed"
    try:
        target = output.resolve()
    except OSError as exc:
        return [f"output.path {output} cannot be used: {exc}"]
    for src in inputs:
        with contextlib.suppress(OSError):
            if target == src.resolve() or (output.exists() and src.exists() and os.path.samefile(output, src)):
                return [
                    f"output.path {output} is the input file: writing it would destroy the input; "
                    "choose another output.path"
                ]
    for parent in target.parents:
        if parent.exists() and not parent.is_dir():
            return [
                f"output.path {output} is under {parent}, which is a file, not a folder; choose another output.path"
            ]
    if output.is_dir():
        return [
            f"output.path {output} is an existing folder; the output is one Parquet file: "
            f"name a file, e.g. {output / 'out.parquet'}"
        ]
    problems = []
    if output.exists():
        owner = _written_by(output)
        if owner is None:
            problems.append(f"output.path {output} exists and was not written by pipeline; it is never replaced: {fix}")
        elif owner and owner != job_name:
            problems.append(
                f"output.path {output} is the output of another job (`{owner}`), not of "
                f"`{job_name}`; it is never replaced: {fix}"
            )
    lock = lock_path(output)
    with contextlib.suppress(OSError, UnicodeDecodeError):
        # ours holds a pid, or nothing when a run died between creating and writing it
        if lock.exists() and not (lock.is_file() and re.fullmatch(r"\d*", lock.read_text().strip())):
            problems.append(
                f"{lock} exists and is not a lock file of pipeline (a run holds it while it writes "
                f"{output.name}): {fix}"
            )
    work = work_path(output)
    if work.exists() and not (work.is_dir() and (work / "state.json").is_file()):
        problems.append(f"{work} exists and is not a work folder of pipeline (the run keeps its progress there): {fix}")
    return problems


def status_counts(sources: Sequence[pl.LazyFrame], status_columns: Sequence[str]) -> dict[str, dict[str, int]]:
    """Rows by status per step over every write of the output (latest write of a row wins)."""
    if not sources:
        return {c[: -len("__status")]: {} for c in status_columns}
    if len(sources) == 1:  # the final file alone (or one part): one write per row, nothing to pick
        latest = sources[0].select(*status_columns).collect()
    else:
        lf = pl.concat([f.select(ROW, PART, *status_columns) for f in sources], how="vertical_relaxed")
        latest = lf.sort([ROW, PART]).unique(subset=[ROW], keep="last").select(*status_columns).collect()
    return {c[: -len("__status")]: dict(latest.group_by(c).len().iter_rows()) for c in status_columns}


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

    def __init__(self, output: Path, fingerprint: str, job_name: str = "") -> None:
        self.output = output
        self.path = work_path(output)
        self.fingerprint = fingerprint
        self.job_name = job_name

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold `<output>.lock` for the run: two runs of one job would write the same parts."""
        lock = lock_path(self.output)
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            fh = open(lock, "a+")  # noqa: SIM115 - held open for the whole run
        except OSError as exc:
            raise DiskError(lock, exc) from exc
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
                lock.unlink()

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
            raise DiskError(self.path, exc) from exc

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
            lf.sort([ROW, PART])
            .unique(subset=[ROW], keep="last", maintain_order=True)
            .with_columns(pl.any_horizontal([pl.col(c).is_in(FAILED) for c in status_columns]).alias("__failed"))
            .select(ROW, "__failed")
            .collect()
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

    def _sources(self, fresh: bool) -> list[_Source]:
        """Each store of results, oldest first: the final file (when it is this job's), then the parts."""
        out: list[_Source] = []
        if not fresh and self._final_matches():
            out.append(_Source(self.output, final=True))
        out += [_Source(p, final=False) for p in self.parts()]
        return out

    def finish(self, schema: pa.Schema, total_rows: int, fresh: bool) -> Path:
        """Write the final file in input order, atomically; then drop the work folder.

        Streamed: an index of every write (input position, store, offset: a few bytes per row) picks
        the latest write of each row; then slices of about FINISH_BYTES of data are gathered from the
        stores that hold them (a part is decoded once while consecutive slices need it) and written as
        row groups. Memory holds one slice and the few parts it draws from, whatever the job's size.
        """
        sources = self._sources(fresh)
        self.output.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.output.with_name(f".{self.output.name}.{os.getpid()}.tmp")
        meta = {
            **(schema.metadata or {}),
            FINGERPRINT_KEY.encode(): self.fingerprint.encode(),
            JOB_KEY.encode(): self.job_name.encode(),
        }
        out_schema = schema.with_metadata(meta)
        writer: pq.ParquetWriter | None = None
        try:
            rows, src, off = _latest_writes(sources, total_rows)
            per_row = max((s.bytes_per_row() for s in sources), default=0.0)
            step = max(1, min(FINISH_ROWS, int(FINISH_BYTES / per_row) if per_row else FINISH_ROWS))
            writer = pq.ParquetWriter(tmp, out_schema, **write_options(out_schema))
            cache = _DecodedParts(sources, schema, FINISH_CACHE_BYTES)
            if len(rows) == 0:
                writer.write_table(schema.empty_table().cast(out_schema))
            for lo in range(0, len(rows), step):
                s_ids, offsets = src[lo : lo + step], off[lo : lo + step]
                pieces, order = [], []
                for s_id in np.unique(s_ids):
                    where = np.flatnonzero(s_ids == s_id)
                    source = sources[int(s_id)]
                    if source.final:  # only the row groups this slice needs
                        pieces.append(source.take(offsets[where], schema))
                    else:
                        pieces.append(cache.get(int(s_id)).take(pa.array(offsets[where])))
                    order.append(where)
                # the pieces, store by store, back into input order (takes on single chunks: memcpy speed)
                chunk = pa.concat_tables(pieces)
                if len(pieces) > 1:
                    perm = np.empty(len(s_ids), dtype=np.int64)
                    perm[np.concatenate(order)] = np.arange(len(s_ids))
                    chunk = chunk.combine_chunks().take(pa.array(perm))
                writer.write_table(chunk.replace_schema_metadata(meta), row_group_size=len(s_ids))
                del chunk, pieces
                pa.default_memory_pool().release_unused()  # hand freed slices back: RSS stays flat
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
            if isinstance(exc, OSError):
                raise DiskError(self.output, exc) from exc
            raise JobError(f"cannot write the output {self.output}: {exc}") from exc
        shutil.rmtree(self.path, ignore_errors=True)
        return self.output


class _Source:
    """One store of results: a part (rows keyed by `__row`) or this job's earlier final file."""

    def __init__(self, path: Path, final: bool) -> None:
        self.path = path
        self.final = final
        self.meta = pq.ParquetFile(path).metadata

    def rows(self) -> np.ndarray:
        """The input position of each stored row, in storage order."""
        if self.final:
            return np.arange(self.meta.num_rows, dtype=np.int64)
        col = pq.read_table(self.path, columns=[ROW]).column(0)
        return np.asarray(col.to_numpy(), dtype=np.int64)

    def bytes_per_row(self) -> float:
        size = sum(self.meta.row_group(g).total_byte_size for g in range(self.meta.num_row_groups))
        return size / self.meta.num_rows if self.meta.num_rows else 0.0

    def read(self, schema: pa.Schema) -> pa.Table:
        """The whole store in the final file's columns and types (columns it lacks are null)."""
        return self._conform(pq.read_table(self.path, memory_map=True), schema).combine_chunks()

    def take(self, offsets: np.ndarray, schema: pa.Schema) -> pa.Table:
        """Rows at `offsets` (ascending), reading only the row groups that hold them."""
        f = pq.ParquetFile(self.path, memory_map=True)
        starts = np.cumsum([0] + [self.meta.row_group(g).num_rows for g in range(self.meta.num_row_groups)])
        first = int(np.searchsorted(starts, offsets[0], side="right") - 1)
        last = int(np.searchsorted(starts, offsets[-1], side="right") - 1)
        t = f.read_row_groups(list(range(first, last + 1)))
        return self._conform(t, schema).combine_chunks().take(pa.array(offsets - starts[first]))

    @staticmethod
    def _conform(t: pa.Table, schema: pa.Schema) -> pa.Table:
        cols = [
            t.column(f.name).cast(f.type) if f.name in t.column_names else pa.nulls(t.num_rows, f.type) for f in schema
        ]
        return pa.Table.from_arrays(cols, schema=schema.remove_metadata())


class _DecodedParts:
    """Stores decoded for the final write, the most recently used kept up to a byte budget."""

    def __init__(self, sources: list[_Source], schema: pa.Schema, budget: int) -> None:
        self.sources, self.schema, self.budget = sources, schema, budget
        self._tables: dict[int, pa.Table] = {}

    def get(self, i: int) -> pa.Table:
        t = self._tables.pop(i, None)
        if t is None:
            t = self.sources[i].read(self.schema)
        self._tables[i] = t  # most recent last
        while len(self._tables) > 1 and sum(x.nbytes for x in self._tables.values()) > self.budget:
            del self._tables[next(iter(self._tables))]
        return t


def _latest_writes(sources: list[_Source], total_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(input position, store, offset in the store) of the latest write of each row, in input order."""
    rows_l, src_l, off_l = [], [], []
    for i, s in enumerate(sources):
        r = s.rows()
        rows_l.append(r)
        src_l.append(np.full(len(r), i, dtype=np.int64))
        off_l.append(np.arange(len(r), dtype=np.int64))
    if not rows_l:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    rows, src, off = np.concatenate(rows_l), np.concatenate(src_l), np.concatenate(off_l)
    order = np.lexsort((src, rows))  # by row, then by store: a later store's write wins
    rows, src, off = rows[order], src[order], off[order]
    last = np.ones(len(rows), dtype=bool)
    last[:-1] = rows[1:] != rows[:-1]
    keep = last & (rows < total_rows)
    return rows[keep], src[keep], off[keep]


def keep_latest(written: pl.LazyFrame) -> pl.LazyFrame:
    """The latest write of each row of `WorkDir.written`, in input order. To look at a few columns,
    collect them first and pass that: polars sorts the union of the parts with every column loaded
    (vectors included), whatever is selected afterwards."""
    return written.sort([ROW, PART]).unique(subset=[ROW], keep="last", maintain_order=True)


@dataclass(frozen=True)
class VectorColumn:
    """A kind's declaration: `column` holds vectors of one size, known only once rows are written (or
    `size` when no row has one). The final file types it `fixed_size_list<item, size>`; rows whose
    vectors differ in size stop the run before the final file is written."""

    step: str
    column: str
    item: pa.DataType
    size: int | None = None  # when no finished row has a vector (e.g. the model's known size)

    def widen(self, written: pl.LazyFrame, id_column: str) -> pa.Field | None:
        """The column's final field from every write of every row (`WorkDir.written`; the latest write of
        a row counts); None when its size is unknown (the column stays a plain list). May raise RunAborted."""
        col = self.column
        # The lengths first, streamed part by part: a sort over the parts would load every vector.
        lengths = written.select(ROW, PART, pl.col(id_column), pl.col(col).list.len().alias("__dim"))
        sizes = (
            keep_latest(lengths.collect(engine="streaming").lazy())
            .filter(pl.col("__dim").is_not_null())
            .group_by("__dim")
            .agg(pl.len().alias("rows"), pl.col(id_column).head(5).alias("ids"))
            .sort("rows", descending=True)
            .collect()
        )
        if sizes.height > 1:
            shown = "; ".join(f"{d} ({n:,} rows, e.g. {', '.join(map(str, ids))})" for d, n, ids in sizes.iter_rows())
            raise RunAborted(
                f"step `{self.step}`: the vectors of the finished rows differ in size: {shown}. The server "
                "changed its model between runs? The final file was not written; to embed every row "
                "again, clear the cache (`pipeline cache clear`) and run with --fresh"
            )
        dim = int(sizes["__dim"][0]) if sizes.height else self.size
        if dim is None:
            return None
        return pa.field(col, pa.list_(self.item, dim))


# What a kind may declare about its columns' final types (one rule today).
FinalColumn = VectorColumn


def widen_fields(rules: Iterable[FinalColumn], written: pl.LazyFrame, id_column: str) -> list[pa.Field]:
    """The final fields the rules decide from the written rows (the others keep their part types)."""
    return [f for rule in rules if (f := rule.widen(written, id_column)) is not None]


class PartWriter:
    """Buffers finished rows and writes them as Parquet parts (atomically: tmp file, then rename).

    Parts are built and written in one worker thread, in the order they were handed over, so the
    caller's event loop never waits on Parquet encoding or the disk. A row counts as written (and a
    later run resumes past it) only once its part is renamed in place. A failed write removes its tmp
    file and raises DiskError from the next `add`, `flush` or `aflush` (and every one after); the rows
    of the failed part are not written and are redone by the next run.
    """

    def __init__(
        self, work: WorkDir, schema: pa.Schema, flush_rows: int, flush_interval_s: float, max_pending: int = 2
    ) -> None:
        self.work = work
        self.schema = schema
        self.flush_rows = flush_rows
        self.flush_interval_s = flush_interval_s
        self.max_pending = max_pending  # parts queued for the thread before `add` waits for the oldest
        self._rows: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()
        existing = work.parts()
        self._next = (int(existing[-1].stem.split("-")[1]) + 1) if existing else 1
        self.rows_written = 0
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[Future[None]] = deque()
        self._error: BaseException | None = None

    def add(self, row: dict[str, Any]) -> None:
        self._raise_failed()
        self._rows.append(row)
        if len(self._rows) >= self.flush_rows or time.monotonic() - self._last_flush >= self.flush_interval_s:
            self.submit()

    def add_many(self, rows: Iterable[dict[str, Any]]) -> None:
        self._raise_failed()
        self._rows.extend(rows)
        if len(self._rows) >= self.flush_rows:
            self.submit()

    def submit(self) -> None:
        """Hand the buffered rows to the writer thread as the next part; returns at once unless more
        than `max_pending` parts are still queued (then waits for the oldest: the disk sets the pace)."""
        self._last_flush = time.monotonic()
        self._raise_failed()
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        final = self.work.path / f"part-{self._next:06d}.parquet"
        self._next += 1
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipeline-parts")
        self._pending.append(self._pool.submit(self._write, rows, final))
        while len(self._pending) > self.max_pending:
            self._settle(self._pending.popleft())

    def flush(self) -> None:
        """Write every buffered row and wait until every part is in place (blocking)."""
        self.submit()
        while self._pending:
            self._settle(self._pending.popleft())
        self._raise_failed()

    async def aflush(self) -> None:
        """`flush` without blocking the event loop."""
        self.submit()
        while self._pending:
            fut = self._pending[0]
            with contextlib.suppress(BaseException):  # _settle reports it
                await asyncio.wrap_future(fut)
            self._settle(self._pending.popleft())
        self._raise_failed()

    def close(self) -> None:
        """Flush, then stop the writer thread."""
        try:
            self.flush()
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Stop the writer thread once the parts handed to it are written; rows still buffered are
        dropped (they stay to do). Errors are kept for the next `flush`, not raised."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _settle(self, fut: Future[None]) -> None:
        try:
            fut.result()
        except BaseException as exc:
            if self._error is None:
                self._error = exc

    def _raise_failed(self) -> None:
        for fut in list(self._pending):  # a failure seen as soon as its write ends, not when it is waited for
            if not fut.done():
                break
            self._pending.popleft()
            self._settle(fut)
        if self._error is not None:
            raise self._error

    def _write(self, rows: list[dict[str, Any]], final: Path) -> None:
        """In the writer thread: one part, atomically."""
        tmp = final.with_suffix(".tmp")
        try:
            # sorted by input position: the final write then reads each part only for the slice it covers
            table = pa.Table.from_pylist(rows, schema=self.schema).sort_by(ROW)
            pq.write_table(table, tmp, **write_options(self.schema))
            os.replace(tmp, final)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if isinstance(exc, OSError):
                raise DiskError(final, exc) from exc
            raise
        self.rows_written += len(rows)
