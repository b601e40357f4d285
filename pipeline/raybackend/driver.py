"""The Ray backend's driver: the local file runner with its rows sent to a pool of worker actors.

`RayExecutor` is the local `Executor` (resume from the parts, the lock, the parts, the final file,
Ctrl-C, progress) with one thing changed: the engine it feeds is `ClusterEngine`, which hands chunks of
rows to worker actors (`worker.Worker`) and writes what they send back. Why plain actors fed by the
driver rather than `ray.data.map_batches`: the driver then knows which rows each worker holds, so
- resume is the local one (rows already in the parts are never handed out),
- a worker that dies has its chunk handed to a fresh worker (answers it stored in the cache are not
  asked again; nothing is retried by Ray itself, which would re-send paid requests),
- the output is the local output (same reader, row numbers and part/final writer): identical files.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from ..calls import ProviderClient
from ..engine import RowCounters
from ..errors import JobError, RunAborted
from ..executor import BATCH_ROWS, Executor, RunOptions, RunSummary
from ..logs import event
from ..plan import Plan
from ..ports import RunEngine
from ..records import Progress
from ..sinks import PartWriter
from ..sources import ROW
from . import reading
from .leasing import limiter_name
from .limiter import Limiter
from .worker import NAMESPACE, STAT_FIELDS, Chunk, Worker, WorkerReport, WorkerSpec

log = logging.getLogger(__name__)

EXTRA_HINT = "pip install 'pipeline[ray]'"
PING_S = 2.0  # how often the driver asks every worker for its figures (liveness)
DEPTH = 3  # chunks handed to one worker at once (it works on the next ones while finishing one)


def import_ray() -> Any:
    """Ray, or a JobError naming the extra that installs it."""
    try:
        import ray
    except ImportError as exc:
        raise JobError(f"--backend ray needs Ray, which is not installed: {EXTRA_HINT}") from exc
    return ray


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: start a local Ray (or use the one this process started); "auto"; ray://...
    workers: int = 2
    chunk_rows: int | None = None  # rows per chunk handed to a worker (None: from the window and the input)
    lease: dict[str, float] = dataclasses.field(default_factory=dict)  # LeasedGate options (tests, benches)
    worker_cpus: float = 0.0  # CPUs a worker actor reserves (0: as many workers as asked, whatever the cores)


@dataclass
class _Handle:
    name: str  # unique: the limiters know a worker by it
    label: str  # w1, w2 ... for the progress line
    actor: Any
    alive: bool = True
    heard: float = 0.0  # loop time of its last answer


class ClusterEngine:
    """A `ports.RunEngine` whose rows run on worker actors; records come back per chunk."""

    def __init__(self, runner: RayExecutor, plan: Plan) -> None:
        self.runner = runner
        self.plan = plan
        self.stopping = False
        self.abort: BaseException | None = None
        self.rows = RowCounters()
        self.counts: dict[str, Counter[str]] = {s.name: Counter() for s in plan.steps}
        self.metrics: dict[str, dict[str, float]] = {s.name: dict.fromkeys(s.counters, 0.0) for s in plan.steps}
        self.clients: dict[str, ProviderClient] = {}
        self.workers: list[_Handle] = []
        self.redone_rows = 0
        self.notes: list[str] = []
        self._free: asyncio.Queue[_Handle] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._refs: set[Any] = set()
        self._reports: dict[str, WorkerReport] = {}
        self._pinger: asyncio.Task[None] | None = None
        self._chunk: int | None = runner.ray_options.chunk_rows
        self._fallbacks: set[str] = set()
        self._warming: list[Any] = []

    # -- workers ---------------------------------------------------------------------------
    def start(self) -> None:
        self._free = asyncio.Queue()
        for _ in range(self.runner.ray_options.workers):
            self._add_worker()
        self._warming = [h.actor.warm.remote() for h in self.workers]
        self._pinger = asyncio.ensure_future(self._ping())

    def _add_worker(self) -> _Handle:
        assert self._free is not None
        handle = self.runner.new_worker(len(self.workers))
        handle.heard = asyncio.get_running_loop().time()
        self.workers.append(handle)
        for _ in range(DEPTH):
            self._free.put_nowait(handle)
        return handle

    async def _ping(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(PING_S)
            for h in [w for w in self.workers if w.alive]:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(PING_S):
                        self._take(await h.actor.ping.remote())
                        h.heard = loop.time()

    def liveness(self) -> str:
        """Per worker: alive and when last heard (for the progress line)."""
        now = asyncio.get_running_loop().time()
        alive = [w for w in self.workers if w.alive]
        heard = ", ".join(f"{w.label} {now - w.heard:.0f}s" for w in alive)
        return f"workers {len(alive)}/{self.runner.ray_options.workers} alive (last heard: {heard})"

    # -- rows ------------------------------------------------------------------------------
    async def feed(self, batch: list[tuple[int, dict[str, Any]]], emit: Callable[[dict[str, Any]], None]) -> bool:
        return await self._hand_out(batch, len(batch), emit)

    async def feed_frame(self, df: pl.DataFrame, emit: Callable[[dict[str, Any]], None]) -> bool:
        """Rows still to do (with `__row`), handed out as Arrow tables (never Python rows on the driver)."""
        return await self._hand_out(df, df.height, emit)

    async def _hand_out(self, batch: Any, n: int, emit: Callable[[dict[str, Any]], None]) -> bool:
        assert self._free is not None
        if self._warming:
            # every worker ready (plan, session, tokenizers) before the first row: the first seconds are
            # then paced like the rest, with no worker starting up beside the ones sending. A worker
            # that failed here fails again, with its error, on its first chunk.
            warming, self._warming = self._warming, []
            await asyncio.gather(*warming, return_exceptions=True)
        if self._chunk is None:
            per_worker = max(1, self.runner._window() // DEPTH)
            self._chunk = max(1, min(per_worker, math.ceil(n / (DEPTH * self.runner.ray_options.workers))))
        for lo in range(0, n, self._chunk):
            if self.stopping:
                return False
            chunk: Chunk = batch[lo : lo + self._chunk]
            if isinstance(chunk, pl.DataFrame):
                chunk = chunk.to_arrow()
            handle = await self._free.get()
            while not handle.alive:
                handle = await self._free.get()
            if self.stopping:
                return False
            self._spawn(self._run_chunk(handle, chunk, emit))
        return True

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_chunk(self, handle: _Handle, chunk: Chunk, emit: Callable[[dict[str, Any]], None]) -> None:
        ray = import_ray()
        assert self._free is not None
        ref = handle.actor.process.remote(chunk)
        self._refs.add(ref)
        try:
            report: WorkerReport = await ref
        except ray.exceptions.RayActorError as exc:
            self._lost(handle, chunk, emit, exc)
            return
        except ray.exceptions.TaskCancelledError:
            return
        except ray.exceptions.RayTaskError as exc:
            # not a row's failure (those are records): the worker itself failed (its disk, a bug); the run
            # stops as a local one would, keeping what is written
            if self.abort is None:
                self.abort = RunAborted(f"worker {handle.label} failed: {getattr(exc, 'cause', None) or exc}")
                self.halt()
            return
        finally:
            self._refs.discard(ref)
        handle.heard = asyncio.get_running_loop().time()
        self._take(report)
        for record in report.records:
            self._count(record)
            emit(record)
        if report.abort is not None and self.abort is None:
            self.abort = RunAborted(report.abort)
            self.halt()
        self._free.put_nowait(handle)

    def _lost(self, handle: _Handle, chunk: Chunk, emit: Callable[[dict[str, Any]], None], exc: Any) -> None:
        """A worker died with `chunk`: a fresh worker takes its place and the chunk again (answers the
        dead one stored in the cache come back from it)."""
        if handle.alive:
            handle.alive = False
            self.runner.forget(handle.name)
            msg = f"worker {handle.label} died ({type(exc).__name__}); its rows go to a new worker"
            event(log, logging.WARNING, "ray.worker_lost", worker=handle.name)
            log.warning(msg)
            self.notes.append(msg)
            if not self.stopping:
                self._add_worker()
        if self.stopping:
            return
        self.redone_rows += len(chunk)
        self._spawn(self._redo(chunk, emit))

    async def _redo(self, chunk: Chunk, emit: Callable[[dict[str, Any]], None]) -> None:
        assert self._free is not None
        handle = await self._free.get()
        while not handle.alive:
            handle = await self._free.get()
        await self._run_chunk(handle, chunk, emit)

    def _count(self, record: dict[str, Any]) -> None:
        c = self.rows
        statuses = [record.get(f"{s.name}__status") for s in self.plan.steps]
        for s, st in zip(self.plan.steps, statuses, strict=True):
            self.counts[s.name][str(st)] += 1
        c.done += 1
        c.processed += 1
        if any(st in ("error", "invalid") for st in statuses):
            c.failed += 1
        elif any(st == "skipped" for st in statuses):
            c.skipped += 1
        else:
            c.ok += 1

    def _take(self, report: WorkerReport) -> None:
        """A worker's figures so far (cumulative): the run's are the sum over workers."""
        self._reports[report.worker] = report
        stats = self.runner.stats
        for name in STAT_FIELDS:
            setattr(stats, name, sum(r.stats.get(name, 0) for r in self._reports.values()))
        for step, counters in self.metrics.items():
            for k in counters:
                counters[k] = sum(r.metrics.get(step, {}).get(k, 0.0) for r in self._reports.values())
        for g in report.gates.values():
            why = g.get("fallback")
            if why and report.worker not in self._fallbacks:
                self._fallbacks.add(report.worker)
                self.notes.append(f"worker {report.worker}: limiter unreachable ({why}); used a static share")

    def gate_figures(self) -> dict[str, float]:
        """Leases, their time and grants given back, summed over workers and providers."""
        out: dict[str, float] = {}
        for r in self._reports.values():
            for g in r.gates.values():
                for k in ("leases", "lease_s", "unused", "late", "admitted"):
                    out[k] = out.get(k, 0.0) + g.get(k, 0)
                out["max_late_s"] = max(out.get("max_late_s", 0.0), g.get("max_late_s", 0.0))
        return out

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    def halt(self) -> None:
        self.stopping = True
        for h in self.workers:
            if h.alive:
                h.actor.halt.remote()

    def cancel_all(self) -> None:
        ray = import_ray()
        self.halt()
        for ref in list(self._refs):
            with contextlib.suppress(Exception):
                ray.cancel(ref)

    async def close(self) -> None:
        """Every worker gives back its unused grants and ends."""
        ray = import_ray()
        if self._pinger is not None:
            self._pinger.cancel()
        for h in self.workers:
            if h.alive:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(10):
                        await h.actor.close.remote()
                with contextlib.suppress(Exception):
                    ray.kill(h.actor)


class RayExecutor(Executor):
    """The local runner (resume, parts, final file, progress) with the rows run by Ray worker actors."""

    def __init__(
        self,
        plan: Plan,
        options: RunOptions,
        observer: Callable[[Progress], None] | None = None,
        ray_options: RayOptions | None = None,
        sim_url: str | None = None,
        prices_file: Path | None = None,
    ) -> None:
        super().__init__(plan, options, observer)
        if self.budget is not None:
            raise JobError(
                "a budget (--max-cost, budget:) is held by one process; the ray backend does not hold it yet: "
                "run without a budget or with --backend local"
            )
        self.ray_options = ray_options or RayOptions()
        if self.ray_options.workers < 1:
            raise JobError(f"--workers must be at least 1, got {self.ray_options.workers}")
        self.sim_url = sim_url
        self.prices_file = prices_file
        self.limiters: dict[str, Any] = {}  # provider name -> limiter actor
        self.limiter_names: dict[str, str] = {}
        self.cluster = ClusterEngine(self, plan)
        self.startup_s = 0.0

    def _clients(self, session: Any) -> dict[str, ProviderClient]:
        return {}  # requests go out from the workers

    def _engine_for(self, clients: dict[str, ProviderClient], window: int) -> RunEngine:
        self.cluster.start()
        return self.cluster

    def _progress(self) -> Progress:
        p = super()._progress()
        g = self.cluster.gate_figures()
        leases = f"; {g.get('leases', 0):,.0f} leases" if g else ""
        return dataclasses.replace(p, limits=self.cluster.liveness() + leases)

    def _limiters(self) -> None:
        """One named limiter per provider key (or key pool): created, or found when another job made it."""
        ray = import_ray()
        actor = ray.remote(Limiter)
        for name, p in self.plan.providers.items():
            keys = self.plan.key_pools.get(name, ())
            lname = limiter_name(p, self.plan.api_keys.get(name), keys)
            # the limiter never sees the keys: stand-ins name them (a ticket's key is an index into them)
            stand_ins = tuple(f"key-{i + 1}" for i in range(len(keys)))
            self.limiters[name] = actor.options(
                name=lname,
                namespace=NAMESPACE,
                get_if_exists=True,
                lifetime="detached",
                max_restarts=-1,
                num_cpus=0,
                max_concurrency=10_000,
            ).remote(p, "key" if self.plan.api_keys.get(name) else None, stand_ins)
            self.limiter_names[name] = lname

    def new_worker(self, index: int) -> _Handle:
        ray = import_ray()
        name = f"w{index + 1}"
        spec = WorkerSpec(
            job_path=str(Path(self.plan.job.path).resolve()),
            cwd=os.getcwd(),
            worker=f"{name}-{os.getpid()}-{time.time_ns() % 10**9}",
            workers=self.ray_options.workers,
            api_keys=dict(self.plan.api_keys),
            key_pools={k: tuple(v) for k, v in self.plan.key_pools.items()},
            limiters=dict(self.limiter_names),
            sim_url=self.sim_url,
            prices_file=str(self.prices_file) if self.prices_file else None,
            lease=dict(self.ray_options.lease),
        )
        actor = (
            ray.remote(Worker)
            .options(num_cpus=self.ray_options.worker_cpus, max_restarts=0, max_task_retries=0, max_concurrency=64)
            .remote(spec)
        )
        return _Handle(spec.worker, name, actor)

    async def _feed(self, engine: RunEngine, todo: Any, writer: PartWriter) -> None:
        """The input read by ray.data (in order, row numbers as the local reader's); the rows still to do
        go to the workers as Arrow tables. A glob or folder input is a listing: read locally."""
        if self.plan.source.format == "glob":
            await super()._feed(engine, todo, writer)
            return
        it = reading.frames(self.plan.source, BATCH_ROWS)
        while (df := await asyncio.to_thread(next, it, None)) is not None:
            rows = df[ROW].to_numpy()
            if not todo[rows].any():
                continue
            if not await self.cluster.feed_frame(df.filter(pl.Series(todo[rows])), writer.add):
                it.close()
                return
            await asyncio.sleep(0)

    def forget(self, worker: str) -> None:
        """A dead worker's grants go back to every limiter (they may have been sent: no refund)."""
        for lim in self.limiters.values():
            lim.forget.remote(worker)

    async def run(self) -> RunSummary:
        ray = import_ray()
        t0 = time.monotonic()
        if not ray.is_initialized():
            opts: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True, "namespace": NAMESPACE}
            if self.ray_options.address:
                opts["address"] = self.ray_options.address
            ray.init(**opts)  # nothing else runs yet; in the main thread Ray sets its signal handlers
        self._limiters()
        self.startup_s = time.monotonic() - t0
        try:
            summary = await super().run()
        finally:
            await self.cluster.close()
        summary.notes += self.cluster.notes
        for name, lim in self.limiters.items():  # the limits each limiter held for the whole cluster
            with contextlib.suppress(Exception):
                async with asyncio.timeout(10):
                    stats, _ = await lim.stats.remote()
                if stats.admitted:
                    summary.limits[name] = stats
        return summary


async def execute_on_ray(
    plan: Plan,
    options: RunOptions | None = None,
    observer: Callable[[Progress], None] | None = None,
    ray_options: RayOptions | None = None,
    *,
    sim_url: str | None = None,
    prices_file: Path | None = None,
) -> RunSummary:
    """Run a plan on Ray (the same output as `executor.execute`); `sim_url`: the plan was built with it."""
    return await RayExecutor(plan, options or RunOptions(), observer, ray_options, sim_url, prices_file).run()
