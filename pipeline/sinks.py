"""Results on disk: Parquet parts in a work folder as rows finish, then one atomic final file."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import fcntl
import gc
import json
import logging
import os
import re
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import DiskError, JobError, RunAborted
from .logs import event
from .records import StepResult
from .sources import ROW

PART = "__part"
FINGERPRINT_KEY = "pipeline.fingerprint"
JOB_KEY = "pipeline.job"  # the job name: a rerun of a changed job may replace its own earlier output
FAILED = ("error", "invalid")
FINISH_ROWS = 50_000  # input positions per slice of the final write, at most
FINISH_BYTES = 4 * 2**20  # and about this much data per slice (vectors make rows big): a row group
FINISH_RELEASE_EVERY = 4  # slices between hand-backs of freed pages to the system (see `_next_slice`)
# A slice of vectors is handed to the Parquet writer in pieces of about this much data (one row group
# all the same): the writer builds a vector column's levels (4 bytes per float) for a whole piece at once:
# a 4 MB slice in one piece held ~11 MB more while it was written, in pieces of ~0.4 MB ~5 MB.
WRITE_PIECE_BYTES = 2**19
# The kernel is asked to start writing out the final file begun during the run every this many bytes
# (without waiting for it): what is left for the fsync at the end is the last of it, not the ~30 s of
# writes the kernel has not written out yet (at 10^6 1536-d rows, hundreds of MB: seconds after the last
# row). (Waiting for it, fdatasync, held the final thread back: it lagged parts that came fast.)
EARLY_SYNC_BYTES = 64 * 2**20
PART_GROUP_BYTES = 2**20  # data per row group of a part, about (at 256 kB the final pass was 25-40% slower)
# A part is written once its rows hold this much vector data (or flush_rows): building and writing a
# part briefly holds several times this (8 MB parts made an embed run's peak RSS ~10 MB higher).
PART_VECTOR_BYTES = 4 * 2**20
DIMS_KEY = "pipeline.dims"  # in a part's footer: the vector sizes its rows hold, per vector column

log = logging.getLogger(__name__)


def is_vector(t: pa.DataType) -> bool:
    """A column of vectors: lists of floats (variable in the parts, fixed-size in the final file)."""
    return bool(
        (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t))
        and pa.types.is_floating(t.value_type)
    )


def write_options(schema: pa.Schema) -> dict[str, Any]:
    """Parquet options for `schema`: vector columns (lists of floats) skip dictionary encoding and
    statistics, which cost most of their write time (a dictionary of floats is given up on after
    trying) and buy nothing; and they are stored uncompressed: zstd saves under a tenth of the bytes
    of float vectors at half the write speed and a third of the read speed."""
    vectors = {f.name for f in schema if is_vector(f.type)}
    if not vectors:
        return {"compression": "zstd"}
    flat = [f.name for f in schema if not pa.types.is_nested(f.type)]
    return {
        "compression": {f.name: ("none" if f.name in vectors else "zstd") for f in schema},
        "use_dictionary": flat,
        "write_statistics": flat,
    }


def skip_pandas_probe() -> None:
    """Tell pyarrow, before its first conversion of Python values, that pandas is not installed.

    pyarrow looks for pandas the first time it converts anything (`pa.array`, `Table.from_pylist`,
    even from numpy; `to_numpy`) and imports it when found: ~0.25 s and ~28 MB of memory
    in a run that never hands it a pandas object. Both looks are answered with an import that fails
    once; an explicit pandas conversion (`to_pandas`, `Table.from_pandas`) looks again and imports
    pandas then. For a process that owns its imports (`pipeline run`); nothing is done when pandas
    is already imported."""
    if "pandas" in sys.modules:
        return
    hide = _NoPandas()
    sys.meta_path.insert(0, hide)
    try:
        pa.array([], type=pa.int8())  # pyarrow's look, answered once and for all
        pa.chunked_array([], pa.int8()).to_numpy()  # and its C++ conversions' own look (`to_numpy`)
    finally:
        sys.meta_path.remove(hide)


class _NoPandas:
    """An import finder that fails `import pandas` (see `skip_pandas_probe`)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas":
            raise ImportError("pandas is not looked for by pipeline run")


def hand_back_memory() -> None:
    """Hand memory freed so far back to the system: Python's cycles, Arrow's pool (this thread's pages)
    and the C heap (glibc keeps freed small blocks; `malloc_trim` returns whole free pages)."""
    gc.collect()
    pa.default_memory_pool().release_unused()
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim: Any = None


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


def accounting_columns(step: str) -> tuple[str, ...]:
    """A step's accounting column names, in `step_fields` order (status ... cost)."""
    return tuple(f.name for f in step_fields(step, []))


def flatten_result(
    step: str,
    r: StepResult,
    value_names: Sequence[str],
    out: dict[str, Any],
    columns: Sequence[str] | None = None,
    cost: float | None = None,
) -> None:
    """Write one step's result for a row into the row's column dict. `columns`: the step's
    `accounting_columns`, for a caller writing many rows to compute once; `cost`: the row's price (the
    executor knows the step's model), else null."""
    values = r.values
    for name in value_names:
        out[name] = values.get(name)
    c = accounting_columns(step) if columns is None else columns
    out[c[0]] = r.status
    out[c[1]] = r.error
    out[c[2]] = r.attempts
    out[c[3]] = r.prompt_tokens
    out[c[4]] = r.completion_tokens
    out[c[5]] = r.cached
    out[c[6]] = r.tokens_estimated
    out[c[7]] = cost


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
        self.final_counts: dict[str, dict[str, int]] = {}  # rows of the final file by status (`finish`)

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

    def has_stores(self, fresh: bool) -> bool:
        """Whether any row was written: a part, or this job's earlier final file (what `_sources` opens)."""
        return bool(self.parts()) or (not fresh and self._final_matches())

    def _sources(self, fresh: bool) -> list[_Source]:
        """Each store of results, oldest first: the final file (when it is this job's), then the parts."""
        out: list[_Source] = []
        if not fresh and self._final_matches():
            out.append(_Source(self.output, final=True))
        out += [_Source(p, final=False) for p in self.parts()]
        return out

    def vector_sizes(
        self, column: str, id_column: str, total_rows: int, fresh: bool
    ) -> list[tuple[int, int, list[Any]]]:
        """The sizes of the vectors in `column` among the latest writes of the rows: (size, rows, up to
        five ids), most rows first. Read from the parts' footers when every write agrees on one size
        (the row count is then not counted: -1); the rows are read only when they do not."""
        sources = self._sources(fresh)
        seen: set[int] = set()
        for s in sources:
            seen |= s.dims(column)
        if len(seen) <= 1:
            return [(d, -1, []) for d in seen]
        counts: dict[int, int] = {}
        ids: dict[int, list[Any]] = {}
        step = max(1, min(FINISH_ROWS, int(FINISH_BYTES / max(1.0, max(s.bytes_per_row() for s in sources)))))
        cols = [column, id_column]
        for src, off, _ in _latest_slices(sources, total_rows, step):
            for s_id, _, offsets in _by_source(src, off):
                t = sources[s_id].read_rows(offsets, cols, None)
                lengths = pc.list_value_length(t.column(column).combine_chunks()).to_numpy(zero_copy_only=False)
                valid = np.asarray(t.column(column).is_valid().to_numpy(zero_copy_only=False), dtype=bool)
                id_values = t.column(id_column)
                for d in np.unique(lengths[valid]):
                    hit = np.flatnonzero(valid & (lengths == d))
                    counts[int(d)] = counts.get(int(d), 0) + len(hit)
                    got = ids.setdefault(int(d), [])
                    if len(got) < 5:
                        got += id_values.take(pa.array(hit[: 5 - len(got)])).to_pylist()
        return sorted(((d, n, ids[d]) for d, n in counts.items()), key=lambda x: -x[1])

    def finish(
        self,
        schema: pa.Schema,
        total_rows: int,
        fresh: bool,
        count: Sequence[str] = (),
        early: EarlyFinal | None = None,
    ) -> Path:
        """Write the final file in input order, atomically; then drop the work folder. The rows of the
        final file by value of each column in `count` (status columns) are kept in `final_counts`, as
        `status_counts` gives them: counted as the slices are written, the file is not read again.

        Streamed in slices of consecutive input positions (about FINISH_BYTES of data each, one row
        group): for each slice, the latest write of each row is found from the positions of the parts
        that overlap it (parts are sorted by position: a slice is one run of offsets in each), those
        rows are read from only the row groups that hold them and put in input order. Memory holds
        one slice and the row groups it draws from, whatever the job's size: nothing grows with rows.
        With `early` (the file begun while the run went on, see `EarlyFinal`), only the slices it has
        not written are; when it cannot be used (another schema, a part it did not see), from the start.
        """
        hand_back_memory()  # what the run freed: the final write's peak starts from what is in use
        t0 = time.monotonic()
        final = early.take(schema, count) if early is not None else None
        before = final.rows if final is not None else 0
        event(log, logging.INFO, "final.writing", rows_during_run=before)
        try:
            if final is None:
                self.output.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.output.with_name(f".{self.output.name}.{os.getpid()}.tmp")
                final = _FinalFile(self, tmp, schema, self._sources(fresh), count)
            # the next slice is read and put in order in a thread while this one is written
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipeline-finish") as pool:
                slices = _ordered_slices(final.sources, total_rows, final.step, final.plain, start=final.next_lo)
                ahead = pool.submit(_next_slice, slices, True)
                while (chunk := ahead.result()) is not None:
                    release = (final.slices_written + 1) % FINISH_RELEASE_EVERY == 0
                    ahead = pool.submit(_next_slice, slices, release)
                    final.write(chunk)
                    del chunk
                    if release:  # and this thread's: RSS stays flat
                        pa.default_memory_pool().release_unused()
            final.commit(self.output)
        except Exception as exc:
            if final is not None:
                final.abandon()
            if isinstance(exc, OSError):
                raise DiskError(self.output, exc) from exc
            raise JobError(f"cannot write the output {self.output}: {exc}") from exc
        shutil.rmtree(self.path, ignore_errors=True)
        self.final_counts = {c[: -len("__status")]: n for c, n in final.tally.items()}
        event(
            log,
            logging.INFO,
            "final.written",
            rows=final.rows,
            rows_during_run=before,
            seconds=round(time.monotonic() - t0, 3),
            bytes=self.output.stat().st_size,
        )
        return self.output


class _FinalFile:
    """The final file being written (a tmp file until `commit`): its writer, the stores it draws from,
    the next input position to write, and its rows by status so far."""

    def __init__(
        self, work: WorkDir, tmp: Path, schema: pa.Schema, sources: list[_Source], count: Sequence[str]
    ) -> None:
        self.tmp = tmp
        self.schema = schema
        self.sources = sources
        self.meta = {
            **(schema.metadata or {}),
            FINGERPRINT_KEY.encode(): work.fingerprint.encode(),
            JOB_KEY.encode(): work.job_name.encode(),
        }
        self.plain = schema.remove_metadata()
        self.vectors = any(is_vector(f.type) for f in schema)
        self.step = _slice_rows(sources)
        self.next_lo = 0  # the input positions before it are written
        self.rows = self.slices_written = 0
        self.tally: dict[str, dict[Any, int]] = {c: {} for c in count}
        out_schema = schema.with_metadata(self.meta)
        self.writer: pq.ParquetWriter | None = pq.ParquetWriter(tmp, out_schema, **write_options(out_schema))

    def write(self, chunk: pa.Table) -> None:
        """One slice: one row group (of vectors: handed over in pieces of WRITE_PIECE_BYTES, no copy)."""
        assert self.writer is not None
        out = chunk.replace_schema_metadata(self.meta)
        if self.vectors and chunk.nbytes > WRITE_PIECE_BYTES:
            rows = max(1, int(WRITE_PIECE_BYTES * chunk.num_rows / chunk.nbytes))
            out = pa.Table.from_batches(out.to_batches(max_chunksize=rows), schema=out.schema)
        self.writer.write_table(out, row_group_size=max(1, chunk.num_rows))
        del out
        _tally(chunk, self.tally)
        self.rows += chunk.num_rows
        self.slices_written += 1

    def commit(self, output: Path) -> None:
        """Close the file, make it durable and put it in place of `output`."""
        assert self.writer is not None
        if not self.rows:
            self.writer.write_table(self.schema.empty_table().replace_schema_metadata(self.meta))
        for s in self.sources:
            s.close()
        pa.default_memory_pool().release_unused()  # hand freed slices back: RSS stays flat
        self.writer.close()
        self.writer = None
        with open(self.tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(self.tmp, output)

    def abandon(self) -> None:
        """Close and remove the tmp file (nothing raised)."""
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()
            self.writer = None
        for s in self.sources:
            s.close()
        with contextlib.suppress(OSError):
            self.tmp.unlink()


def _slice_rows(sources: Sequence[_Source]) -> int:
    """Input positions per slice of the final write: about FINISH_BYTES of the stores' data."""
    per_row = max((s.bytes_per_row() for s in sources), default=0.0)
    return max(1, min(FINISH_ROWS, int(FINISH_BYTES / per_row) if per_row else FINISH_ROWS))


def _tally(chunk: pa.Table, tally: dict[str, dict[Any, int]]) -> None:
    """Add the rows of `chunk` by value of each column of `tally` (a null counts under None)."""
    for name, seen in tally.items():
        for v in pc.value_counts(chunk.column(name)).to_pylist():
            seen[v["values"]] = seen.get(v["values"], 0) + v["counts"]


class _Source:
    """One store of results: a part (rows keyed by `__row`, sorted by it) or this job's earlier final
    file (row i is input position i). Opened lazily; row groups read once while slices need them."""

    def __init__(self, path: Path, final: bool) -> None:
        self.path = path
        self.final = final
        # only what the slices need is kept from the footer: a job has hundreds of parts
        meta = pq.read_metadata(path)
        self.num_rows = meta.num_rows
        groups = [meta.row_group(g) for g in range(meta.num_row_groups)]
        self.starts = np.cumsum([0] + [g.num_rows for g in groups])
        self.size = sum(g.total_byte_size for g in groups)
        span: tuple[int, int] = (0, self.num_rows - 1) if final else self._row_range(groups)
        self.first, self.last = span  # the smallest and largest input position held
        self._file: pq.ParquetFile | None = None
        self._rows: np.ndarray | None = None
        self._perm: np.ndarray | None = None  # parts of older versions were not sorted
        self._group: tuple[int, tuple[str, ...] | None, pa.Table] | None = None  # the row group read last

    @property
    def file(self) -> pq.ParquetFile:
        """The open file, while slices draw from it."""
        if self._file is None:
            self._file = pq.ParquetFile(self.path)
        return self._file

    def drop_group(self) -> None:
        """Forget the row group kept for the next slice."""
        self._group = None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file = None
        self._rows = self._perm = None
        self._group = None

    def _row_range(self, groups: list[Any]) -> tuple[int, int]:
        """The smallest and largest input position in the part, from its footer's statistics."""
        lo, hi = None, None
        for rg in groups:
            for c in range(rg.num_columns):
                col = rg.column(c)
                if col.path_in_schema == ROW:
                    st = col.statistics
                    if st is None or not st.has_min_max:
                        r = self.rows()
                        self.close()
                        return (int(r[0]), int(r[-1])) if len(r) else (0, -1)
                    lo = st.min if lo is None else min(lo, st.min)
                    hi = st.max if hi is None else max(hi, st.max)
        return (int(lo), int(hi)) if lo is not None and hi is not None else (0, -1)

    def rows(self) -> np.ndarray:
        """The input position of each stored row, in ascending order (see `offsets`)."""
        if self.final:
            return np.arange(self.num_rows, dtype=np.int64)
        if self._rows is None:
            col = self.file.read(columns=[ROW]).column(0)
            rows = np.asarray(col.to_numpy(), dtype=np.int64)
            if len(rows) > 1 and (np.diff(rows) < 0).any():
                self._perm = np.argsort(rows, kind="stable")
                rows = rows[self._perm]
            self._rows = rows
        return self._rows

    def between(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """(input positions, offsets in the store) of the stored rows with lo <= position < hi."""
        if self.final:
            a, b = max(lo, 0), min(hi, self.num_rows)
            r = np.arange(a, max(a, b), dtype=np.int64)
            return r, r
        rows = self.rows()
        a, b = np.searchsorted(rows, [lo, hi])
        offsets = np.arange(a, b, dtype=np.int64) if self._perm is None else self._perm[a:b]
        return rows[a:b], offsets

    def dims(self, column: str) -> set[int]:
        """The vector sizes of `column` in this store, from its footer (PartWriter notes them)."""
        schema = pq.read_schema(self.path)
        if column not in schema.names:
            return set()
        t = schema.field(column).type
        if pa.types.is_fixed_size_list(t):  # a final file: one size (or no vector at all: then no row has one)
            return {t.list_size}
        noted = (schema.metadata or {}).get(DIMS_KEY.encode())
        if noted is not None:
            return {int(d) for d in json.loads(noted).get(column, [])}
        col = pq.read_table(self.path, columns=[column]).column(0).combine_chunks()  # a part of an older version
        return {int(d) for d in pc.unique(pc.list_value_length(col)).drop_null().to_pylist()}

    def bytes_per_row(self) -> float:
        return self.size / self.num_rows if self.num_rows else 0.0

    def read_rows(self, offsets: np.ndarray, columns: list[str] | None, schema: pa.Schema | None) -> pa.Table:
        """The rows at `offsets` (in that order), in `schema`'s columns and types when given (columns
        the store lacks are null), reading only the row groups that hold them."""
        lo, hi = int(offsets.min()), int(offsets.max())
        first = int(np.searchsorted(self.starts, lo, side="right") - 1)
        last = int(np.searchsorted(self.starts, hi, side="right") - 1)
        key = tuple(columns) if columns is not None else None
        tables = []
        for g in range(first, last + 1):
            if self._group is not None and self._group[0] == g and self._group[1] == key:
                t = self._group[2]
            else:
                t = self.file.read_row_group(g, columns=columns, use_threads=False)
                if schema is not None:
                    t = self._conform(t, schema)
                t = t.combine_chunks()
            tables.append(t)
        self._group = (last, key, tables[-1])  # the next slice starts where this one ends
        t = tables[0] if len(tables) == 1 else pa.concat_tables(tables)  # slice and take read across chunks: no copy
        local = offsets - self.starts[first]
        start = int(local[0])
        if int(local[-1]) - start + 1 == len(local) and (np.diff(local) == 1).all():
            return t.slice(start, len(local))  # one run of rows (the usual case: parts are sorted): no copy
        return t.take(pa.array(local))

    @staticmethod
    def _conform(t: pa.Table, schema: pa.Schema) -> pa.Table:
        cols = [
            t.column(f.name).cast(f.type) if f.name in t.column_names else pa.nulls(t.num_rows, f.type) for f in schema
        ]
        return pa.Table.from_arrays(cols, schema=schema)


def _latest_slices(
    sources: list[_Source], total_rows: int, step: int, start: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Input positions `step` at a time from `start`: (store, offset in the store, position) of the
    latest write of each position that has one, in input order. A later store's write wins. Only the
    stores whose range of positions overlaps the slice are looked at; a part's positions are read when
    a slice first reaches it and dropped once slices have passed it."""
    for lo in range(start, total_rows, step):
        hi = min(total_rows, lo + step)
        src = np.full(hi - lo, -1, dtype=np.int64)
        off = np.zeros(hi - lo, dtype=np.int64)
        for i, s in enumerate(sources):
            if s.last < lo or s.first >= hi:
                if s.last < lo:
                    s.close()  # slices have passed it (a no-op unless it was open)
                continue
            rows, offsets = s.between(lo, hi)
            src[rows - lo] = i
            off[rows - lo] = offsets
        keep = np.flatnonzero(src >= 0)
        yield src[keep], off[keep], keep + lo


def _next_slice(slices: Iterator[pa.Table], release: bool) -> pa.Table | None:
    """In the final write's reading thread: the next slice (None at the end). With `release`, the pages
    freed since (the slices it read, freed by the writing thread once written) are handed back to the
    system first: the allocator (mimalloc) keeps a thread's freed pages until that thread collects
    them, and the writing thread's own collection does not reach them (the final write's peak RSS grew
    by 60-90 MB in a run). Every FINISH_RELEASE_EVERY slices: every slice would take the pages back
    from the system each time (8x the page faults, 0.3 s more system time for 20,000 rows). (The
    writing thread collects too, as often: without it a run's final write peaked ~15 MB higher.)"""
    if release:
        pa.default_memory_pool().release_unused()
    return next(slices, None)


def _ordered_slices(
    sources: list[_Source], total_rows: int, step: int, schema: pa.Schema, start: int = 0
) -> Iterator[pa.Table]:
    """The final file's rows, a slice of input positions at a time from `start`: the latest write of
    each, in order."""
    for src, off, _ in _latest_slices(sources, total_rows, step, start):
        if not len(src):
            continue
        pieces, order = [], []
        for s_id, where, offsets in _by_source(src, off):
            pieces.append(sources[s_id].read_rows(offsets, None, schema))
            order.append(where)
        chunk = pa.concat_tables(pieces)
        if len(pieces) > 1:  # the pieces, store by store, back into input order
            perm = np.empty(len(src), dtype=np.int64)
            perm[np.concatenate(order)] = np.arange(len(src))
            chunk = chunk.take(pa.array(perm))  # (one copy: take reads across the chunks)
        # not held while the slice is written: the row groups they were read from (but the last of each
        # store's, kept for the next slice) are freed now
        del pieces, order
        yield chunk
        del chunk


def _by_source(src: np.ndarray, off: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(store, where in the slice, offsets in the store) for each store a slice draws from."""
    for s_id in np.unique(src):
        where = np.flatnonzero(src == s_id)
        yield int(s_id), where, off[where]


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
        return self.decide([(int(d), int(n), list(ids)) for d, n, ids in sizes.iter_rows()])

    def widen_work(self, work: WorkDir, fresh: bool, total_rows: int, id_column: str) -> pa.Field | None:
        """`widen` from a work folder's stores, reading their footers only when every write agrees."""
        return self.decide(work.vector_sizes(self.column, id_column, total_rows, fresh))

    def decide(self, sizes: Sequence[tuple[int, int, list[Any]]]) -> pa.Field | None:
        """The final field from the sizes of the latest writes: (size, rows, some ids), most rows first."""
        if len(sizes) > 1:
            shown = "; ".join(f"{d} ({n:,} rows, e.g. {', '.join(map(str, ids))})" for d, n, ids in sizes)
            raise RunAborted(
                f"step `{self.step}`: the vectors of the finished rows differ in size: {shown}. The server "
                "changed its model between runs? The final file was not written; to embed every row "
                "again, clear the cache (`pipeline cache clear`) and run with --fresh"
            )
        dim = sizes[0][0] if sizes else self.size
        if dim is None:
            return None
        return pa.field(self.column, pa.list_(self.item, dim))


# What a kind may declare about its columns' final types (one rule today).
FinalColumn = VectorColumn


def widen_fields(rules: Iterable[FinalColumn], written: pl.LazyFrame, id_column: str) -> list[pa.Field]:
    """The final fields the rules decide from the written rows (the others keep their part types)."""
    return [f for rule in rules if (f := rule.widen(written, id_column)) is not None]


def final_fields(
    rules: Iterable[FinalColumn], work: WorkDir, fresh: bool, total_rows: int, id_column: str
) -> list[pa.Field]:
    """`widen_fields` from a work folder (what the final write uses): memory and reads do not grow with
    rows when every write agrees. No store at all (no row): the part types are kept."""
    rules = list(rules)
    if not rules or not work.has_stores(fresh):  # (no footer read for a job without such columns)
        return []
    return [f for rule in rules if (f := rule.widen_work(work, fresh, total_rows, id_column)) is not None]


class EarlyFinal:
    """The final file begun while the run goes on: once every row this run owes below an input
    position is in a part, no later write can change the rows before it, and their slices are written
    (in a thread of their own) to a tmp file in the work folder. `WorkDir.finish` then writes only the
    slices after them, instead of reading every part back after the last row.

    Crash safety is unchanged: the parts stay until the final file is in place, and the tmp file is
    removed with the work folder's other tmp files when a later run resumes. The file is not used
    (`take` gives None, the final write starts over) when its schema is not the final one (vector
    sizes decided from the first rows, not borne out by the rest), when a part held a row below what
    was written (a row written twice by the run), or when anything failed while writing it."""

    def __init__(
        self, work: WorkDir, owed: np.ndarray, fresh: bool, schema: Callable[[], pa.Schema], count: Sequence[str]
    ) -> None:
        self.work = work
        self.owed = owed.copy()  # per input position: this run still has to write it
        self.total = len(owed)
        self.schema = schema  # the final schema, as far as the rows written so far tell
        self.count = list(count)
        self.tmp = work.path / "final.tmp"
        self.sources = work._sources(fresh)  # the stores before this run's first part
        self.final: _FinalFile | None = None
        self.failed = False
        self._cursor = 0  # the first position still owed (parts' thread)
        self._synced = 0  # bytes of the tmp file given to the kernel to write out so far (final thread)
        self._pool: ThreadPoolExecutor | None = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipeline-final")

    def part_written(self, part: Path, positions: np.ndarray) -> None:
        """In the parts' thread: a part is in place. Hands the slices it completes to the final thread."""
        pool = self._pool
        if pool is None or self.failed:
            return
        try:
            self.owed[positions[positions < self.total]] = False
            rest = self.owed[self._cursor :]
            first = int(np.argmax(rest)) if len(rest) else 0
            self._cursor = self._cursor + first if len(rest) and rest[first] else self.total
            pool.submit(self._advance, part, self._cursor)
        except Exception:  # (stopped meanwhile): the final write starts over
            self.failed = True

    def _advance(self, part: Path, frontier: int) -> None:
        """In the final thread: take in the new part, write every whole slice below `frontier`."""
        if self.failed:
            return
        try:
            src = _Source(part, final=False)
            self.sources.append(src)
            if self.final is not None and src.num_rows and src.first < self.final.next_lo:
                self.failed = True  # a row already in the final file was written again
                return
            if self.final is None:
                if frontier < _slice_rows(self.sources):
                    return
                self.final = _FinalFile(self.work, self.tmp, self.schema(), self.sources, self.count)
            final = self.final
            stop = final.next_lo + (frontier - final.next_lo) // final.step * final.step
            if stop <= final.next_lo:
                return
            for chunk in _ordered_slices(self.sources, stop, final.step, final.plain, start=final.next_lo):
                final.write(chunk)
                del chunk
            final.next_lo = stop
            for s in self.sources:  # the row groups kept for the next slice: it comes with a later part
                s.drop_group()
            size = self.tmp.stat().st_size
            if size - self._synced >= EARLY_SYNC_BYTES and hasattr(os, "posix_fadvise"):
                # (Linux: writes dirty pages out, drops the clean ones; only advice: a file system that
                # refuses it costs the final file nothing)
                with open(self.tmp, "rb") as fh, contextlib.suppress(OSError):
                    os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
                self._synced = size
            pa.default_memory_pool().release_unused()  # this thread's freed pages, while the run goes on
        except Exception:
            self.failed = True
            log.debug("early final write given up", exc_info=True)

    def take(self, schema: pa.Schema, count: Sequence[str]) -> _FinalFile | None:
        """At the final write (every part in place): the file so far, when it can be carried on; else
        None, its tmp file removed."""
        self._stop()
        final, self.final = self.final, None
        if final is None:
            return None
        parts = [s.path for s in self.sources if not s.final]
        if (
            self.failed
            or not final.schema.equals(schema, check_metadata=True)
            or parts != self.work.parts()
            or list(final.tally) != list(count)
        ):
            final.abandon()
            return None
        return final

    def discard(self) -> None:
        """The run ends without a final file: stop and remove what was written (nothing raised)."""
        self._stop()
        if self.final is not None:
            self.final.abandon()
            self.final = None

    def _stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


class PartWriter:
    """Buffers finished rows and writes them as Parquet parts (atomically: tmp file, then rename).

    Parts are built and written in one worker thread, in the order they were handed over, so the
    caller's event loop never waits on Parquet encoding or the disk. A row counts as written (and a
    later run resumes past it) only once its part is renamed in place. A failed write removes its tmp
    file and raises DiskError from the next `add`, `flush` or `aflush` (and every one after); the rows
    of the failed part are not written and are redone by the next run.
    """

    def __init__(
        self,
        work: WorkDir,
        schema: pa.Schema,
        flush_rows: int,
        flush_interval_s: float,
        max_pending: int = 2,
        flush_bytes: int = PART_VECTOR_BYTES,
        on_part: Callable[[Path, np.ndarray], None] | None = None,
    ) -> None:
        self.work = work
        self.on_part = on_part  # told of each part once in place, with its rows' input positions (writer thread)
        self.schema = schema
        self.flush_rows = flush_rows
        self.flush_interval_s = flush_interval_s
        self.max_pending = max_pending  # parts queued for the thread before `add` waits for the oldest
        self.flush_bytes = flush_bytes  # or once the buffered rows hold this much vector data
        self._vectors = [f.name for f in schema if is_vector(f.type)]
        self._bytes = 0
        self._rows: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()
        existing = work.parts()
        self._next = (int(existing[-1].stem.split("-")[1]) + 1) if existing else 1
        self.rows_written = 0
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[Future[None]] = deque()
        self._error: BaseException | None = None

    def add(self, row: dict[str, Any]) -> None:
        if self._error is not None or (self._pending and self._pending[0].done()):  # (`_raise_failed`'s test)
            self._raise_failed()
        self._rows.append(row)
        for name in self._vectors:
            v = row.get(name)
            if v is not None:
                self._bytes += 4 * len(v)
        if (
            len(self._rows) >= self.flush_rows
            or self._bytes >= self.flush_bytes
            or time.monotonic() - self._last_flush >= self.flush_interval_s
        ):
            self.submit()

    def add_many(self, rows: Iterable[dict[str, Any]]) -> None:
        self._raise_failed()
        for row in rows:
            self._rows.append(row)
            for name in self._vectors:
                v = row.get(name)
                if v is not None:
                    self._bytes += 4 * len(v)
        if len(self._rows) >= self.flush_rows or self._bytes >= self.flush_bytes:
            self.submit()

    def submit(self) -> None:
        """Hand the buffered rows to the writer thread as the next part; returns at once unless more
        than `max_pending` parts are still queued (then waits for the oldest: the disk sets the pace)."""
        self._last_flush = time.monotonic()
        self._raise_failed()
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        self._bytes = 0
        final = self.work.path / f"part-{self._next:06d}.parquet"
        self._next += 1
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipeline-parts")
        self._pending.append(self._pool.submit(self._write, [rows], final))
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

    def _write(self, box: list[list[dict[str, Any]]], final: Path) -> None:
        """In the writer thread: one part, atomically. `box` holds the rows, so that they are freed as
        soon as they are in the table (the pool's work item would keep them until the part is written)."""
        tmp = final.with_suffix(".tmp")
        rows = box.pop()
        n = len(rows)
        try:
            # sorted by input position: the final write then reads each part only for the slice it covers
            rows.sort(key=itemgetter(ROW))
            table = _part_table(rows, self.schema)
            del rows
            # row groups of about PART_GROUP_BYTES: the final write reads only the rows a slice needs
            group = max(1, int(PART_GROUP_BYTES * table.num_rows / max(1, table.nbytes)))
            pq.write_table(_note_dims(table), tmp, row_group_size=group, **write_options(self.schema))
            positions = table.column(ROW).to_numpy() if self.on_part is not None else None
            del table
            os.replace(tmp, final)
            if positions is not None and self.on_part is not None:
                self.on_part(final, positions)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if isinstance(exc, OSError):
                raise DiskError(final, exc) from exc
            raise
        finally:
            pa.default_memory_pool().release_unused()  # this thread's freed pages back to the system
        self.rows_written += n


def _part_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """The rows as a table of `schema` (a row without a column holds null there), built a column at a
    time; vector columns straight from the vectors' memory (`_vector_array`)."""
    columns = []
    for f in schema:
        try:  # (every row holds the column: the common case, at a third of the cost of `get` per row)
            values = list(map(itemgetter(f.name), rows))
        except KeyError:
            values = [row.get(f.name) for row in rows]
        columns.append(_vector_array(values, f.type) if is_vector(f.type) else pa.array(values, type=f.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _vector_array(values: list[Any], t: pa.DataType) -> pa.Array:
    """A list<float> column from vectors (numpy arrays or lists of numbers; None: null), copied once
    into one buffer of the exact size: Arrow's list builder grows its buffer by doubling as it goes,
    briefly holding up to twice the data (and is slower: per value)."""
    item = np.dtype(t.value_type.to_pandas_dtype())
    vecs = [None if v is None else np.asarray(v, dtype=item).reshape(-1) for v in values]
    lengths = np.fromiter((0 if v is None else len(v) for v in vecs), dtype=np.int64, count=len(vecs))
    offsets = np.zeros(len(vecs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    buf = pa.allocate_buffer(total * item.itemsize)
    flat = np.frombuffer(buf, dtype=item) if total else np.zeros(0, dtype=item)
    for v, lo, hi in zip(vecs, offsets[:-1], offsets[1:], strict=True):
        if v is not None and hi > lo:
            flat[lo:hi] = v
    del vecs
    mask = np.fromiter((v is None for v in values), dtype=bool, count=len(values))
    large = pa.types.is_large_list(t)
    if not large and total >= 2**31:
        raise ValueError(f"a part's vectors hold {total:,} values, over a list column's limit")
    off = pa.array(offsets if large else offsets.astype(np.int32))
    data = pa.Array.from_buffers(t.value_type, total, [None, buf]) if total else pa.array(flat, type=t.value_type)
    cls = pa.LargeListArray if large else pa.ListArray
    arr = cls.from_arrays(off, data, type=t, mask=pa.array(mask) if mask.any() else None)
    if pa.types.is_fixed_size_list(t):  # (from_arrays gives a list: the part's declared type is kept)
        arr = arr.cast(t)
    return arr


def _note_dims(table: pa.Table) -> pa.Table:
    """`table` with the sizes of its vectors noted in its metadata (DIMS_KEY): the final write checks
    that every row agrees from the parts' footers, without reading their vectors."""
    dims = {
        f.name: sorted(int(d) for d in pc.unique(pc.list_value_length(table.column(f.name))).drop_null().to_pylist())
        for f in table.schema
        if is_vector(f.type)
    }
    if not dims:
        return table
    return table.replace_schema_metadata(
        {**(table.schema.metadata or {}), DIMS_KEY.encode(): json.dumps(dims).encode()}
    )
