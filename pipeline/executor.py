"""The local file runner: input batches into the row engine, its records into Parquet parts; resume, Ctrl-C,
budget, progress, and the final file."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl
import pyarrow as pa

from .budget import Spend, check_budget, earlier_spend, step_charges
from .cache import NoCache, ResponseCache
from .calls import ProviderClient, RunStats
from .engine import MAX_BYTES_IN_FLIGHT as _ENGINE_MAX_BYTES
from .engine import RecordShape, RowEngine
from .errors import FatalError, RunAborted
from .gates import LocalGates
from .limits import GateStats
from .logs import event
from .plan import DEFAULT_ID, Plan
from .ports import GateFactory, RunEngine
from .records import Progress
from .session import LazySession, LazyTransport
from .sinks import EarlyFinal, PartWriter, WorkDir, final_fields, is_vector, status_counts
from .sources import ROW

log = logging.getLogger(__name__)

BATCH_ROWS = 2000
MAX_BYTES_IN_FLIGHT = _ENGINE_MAX_BYTES  # input data of the rows in flight, at most (the engine's bound)
# The final file begun during the run (sinks.EarlyFinal) for jobs with vector columns too: the final
# write after the last row of a 1536-d embed run takes 0.07-0.5 s instead of 2-3.4 s at 10^5 rows, 2.9 s
# instead of 54 s at 10^6. It was off while it cost such a run 20-50 MB of peak RSS (slices read a row
# group of every part they draw on while the rows in flight are held): the slices are now handed to the
# writer in pieces, the row groups they were read from freed before they are written, and `pipeline run`
# has Arrow use jemalloc (cli.arrow_pool_from_env). Peak RSS with it: 10^5 rows 270-275 MB (260-262
# before), 10^6 rows 288 MB (272 before: the final file's footer, ~9 kB a row group, is held meanwhile).
EARLY_FINAL_VECTORS = True


@dataclass(frozen=True)
class RunOptions:
    fresh: bool = False
    retry_failed: bool = False
    progress_interval_s: float = 1.0
    max_cost_usd: float | None = None  # over the job's `budget:`


@dataclass
class RunSummary:
    """What a run did; the CLI prints it and picks the exit code from it."""

    output: str
    total_rows: int
    rows_resumed: int
    rows_processed: int
    status_counts: dict[str, Counter[str]]
    stats: RunStats
    elapsed_s: float
    interrupted: bool = False
    aborted: str | None = None
    failed_rows: int = 0
    notes: list[str] = field(default_factory=list)
    # rows by status per step in the whole output (this run's rows and earlier runs'), latest write wins
    output_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    cost_usd: float | None = None  # this run's requests (None: some model has no price)
    cost_total_usd: float | None = None  # and earlier runs' finished rows
    budget_usd: float | None = None
    budget_unsent_rows: int = 0  # rows not sent because the budget would have been crossed
    limits: dict[str, GateStats] = field(default_factory=dict)  # per provider: binding limit, learned values


def _fatal_message(plan: Plan, step: Any, exc: FatalError) -> str:
    """Why the run stops, naming the step, its provider (and URL) and, for an unknown model, the model."""
    p = plan.providers.get(step.provider)
    where = f"provider `{step.provider}`" + (f" ({p.base_urls[0]})" if p is not None else "")
    model = getattr(getattr(step, "spec", None), "model", None)
    if exc.code == "model_not_found" and model:
        return (
            f"model `{model}` of step `{step.name}` is not served by {where}: {exc.short()}. "
            f"`pipeline models --provider {step.provider} --job {plan.job.path}` lists the models it serves"
        )
    return f"{where} refused step `{step.name}`: {exc.short()}"


class Executor:
    """Runs a plan against its input and output files on this machine, through one RowEngine."""

    def __init__(
        self,
        plan: Plan,
        options: RunOptions,
        observer: Callable[[Progress], None] | None = None,
        gates: GateFactory | None = None,
    ) -> None:
        self.plan = plan
        self.options = options
        self.observer = observer
        # where each provider's gate comes from (one factory per run: providers sharing a key share a gate)
        self.gates: GateFactory = gates if gates is not None else LocalGates(plan.key_pools)
        spec = plan.job.spec
        self.cache: ResponseCache | NoCache = (
            ResponseCache(spec.cache.dir, spec.cache.size_limit_gb) if spec.cache.enabled else NoCache()
        )
        self.stats = RunStats()
        self._engine: RunEngine | None = None
        self._stop_requested = False  # a Ctrl-C before the engine exists
        self._interrupted = False  # Ctrl-C / SIGTERM
        self._started = 0.0
        self._resumed = 0
        self.budget = options.max_cost_usd or (spec.budget.max_cost_usd if spec.budget else None)
        check_budget(plan, self.budget)
        self._charges = step_charges(plan)

    # ----------------------------------------------------------------- setup
    def _stopping(self) -> bool:
        return self._stop_requested or (self._engine is not None and self._engine.stopping)

    def _clients(self, session: LazySession) -> dict[str, ProviderClient]:
        """One client per provider, each with the gate the factory gives for its key and URL; the HTTP
        session and transports are made by the first request (none for a run the cache answers)."""
        clients: dict[str, ProviderClient] = {}
        spec = self.plan.job.spec
        for name, p in self.plan.providers.items():
            key = self.plan.api_keys.get(name)
            clients[name] = ProviderClient(
                LazyTransport(p, key, session),
                self.gates(p, key),
                self.cache,
                spec.retry,
                self.stats,
                rng=random.Random(),
                stopping=self._stopping,
            )
        return clients

    def _window(self) -> int:
        opt = self.plan.job.spec.run.max_rows_in_flight
        if opt:
            return opt
        conc = [p.limits.concurrency or 256 for p in self.plan.providers.values()]
        # steps that pack many rows into one request need enough rows waiting to fill their requests
        hints = [
            h
            for s in self.plan.steps
            if (h := s.rows_in_flight_hint(self.plan.providers[s.provider].limits.concurrency))
        ]
        return max(64, 4 * max(conc), *hints)

    def _engine_for(self, clients: dict[str, ProviderClient], window: int) -> RunEngine:
        plan = self.plan
        return RowEngine(
            plan.steps,
            clients,
            self.stats,
            RecordShape(plan.carried_columns, plan.id_column, DEFAULT_ID),
            window=window,
            charges=self._charges,
            stop_after_identical_failures=plan.job.spec.run.stop_after_identical_failures,
            fatal_message=lambda step, exc: _fatal_message(plan, step, exc),
            max_bytes_in_flight=MAX_BYTES_IN_FLIGHT,
        )

    def _final_schema(self, work: WorkDir, fresh: bool) -> pa.Schema:
        """The final file's schema: the parts' one, with the columns steps only know from their results."""
        schema = self.plan.final_schema
        rules = [rule for step in self.plan.steps for rule in step.final_columns()]
        for f in final_fields(rules, work, fresh, self.plan.total_rows, self.plan.id_column):
            schema = schema.set(schema.get_field_index(f.name), f)
        return schema

    # ----------------------------------------------------------------- run
    def _progress(self) -> Progress:
        el = max(1e-9, asyncio.get_running_loop().time() - self._started)
        s = self.stats
        tokens = s.prompt_tokens + s.completion_tokens
        engine = self._engine
        rows = engine.rows if engine is not None else None
        rows_done = (rows.done if rows else 0) + self._resumed
        clients = engine.clients.values() if engine is not None else ()
        return Progress(
            total_rows=self.plan.total_rows,
            rows_done=rows_done,
            rows_ok=rows.ok if rows else 0,
            rows_failed=rows.failed if rows else 0,
            rows_skipped=rows.skipped if rows else 0,
            rows_resumed=self._resumed,
            requests=s.requests,
            cache_hits=s.cache_hits,
            retries=s.retries,
            rate_limited=s.rate_limited,
            tokens=tokens,
            elapsed_s=el,
            req_per_min=s.requests / el * 60,
            tok_per_min=tokens / el * 60,
            cost_usd=s.spend.spent if all(self._charges.values()) else None,
            budget_usd=self.budget,
            limits="; ".join(sorted({c.gate.stats().describe() for c in clients})) or None,
            metrics=(
                {k: dict(v) for k, v in engine.metrics.items()}
                if engine is not None
                else {s.name: dict.fromkeys(s.counters, 0.0) for s in self.plan.steps}
            ),
        )

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(self.options.progress_interval_s)
            if self.observer:
                self.observer(self._progress())

    def request_stop(self) -> None:
        """Ctrl-C: the first stops gracefully, the second cancels what is still in flight."""
        engine = self._engine
        if self._interrupted:
            if engine is not None:
                engine.cancel_all()
            return
        self._interrupted = True
        event(
            log,
            logging.WARNING,
            "run.interrupted",
            in_flight=sum(len(c.inflight) for c in engine.clients.values()) if engine is not None else 0,
        )
        self._stop_requested = True
        if engine is not None:
            engine.halt()

    async def run(self) -> RunSummary:
        work = WorkDir(self.plan.output, self.plan.fingerprint, self.plan.job.spec.name)
        with work.locked():
            return await self._run(work)

    async def _run(self, work: WorkDir) -> RunSummary:
        plan, opts = self.plan, self.options
        loop = asyncio.get_running_loop()
        self._started = loop.time()
        t0 = time.monotonic()
        work.prepare(opts.fresh)
        prior = work.prior(plan.total_rows, plan.status_columns, opts.fresh)
        todo = ~prior.done
        if opts.retry_failed:
            todo |= prior.failed
        spent_before, unsent = earlier_spend(work.written(opts.fresh), [s.name for s in plan.steps], plan.total_rows)
        todo |= unsent  # rows an earlier run did not send for its budget
        self.stats.spend = Spend(self.budget, spent_before)
        self._resumed = int((~todo).sum())
        event(log, logging.INFO, "run.start", job=plan.job.spec.name, rows=plan.total_rows, resumed=self._resumed)
        early = (
            EarlyFinal(work, todo, opts.fresh, lambda: self._final_schema(work, opts.fresh), plan.status_columns)
            if EARLY_FINAL_VECTORS or not any(is_vector(f.type) for f in plan.part_schema)
            else None
        )
        writer = PartWriter(
            work,
            plan.part_schema,
            plan.job.spec.run.flush_rows,
            plan.job.spec.run.flush_interval_s,
            on_part=early.part_written if early is not None else None,
        )
        window_size = self._window()
        reporter = asyncio.create_task(self._report())
        limits: dict[str, GateStats] = {}
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, self.request_stop)
            loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        try:
            session = LazySession(window_size + 16)
            try:
                clients = self._clients(session)
                engine = self._engine = self._engine_for(clients, window_size)
                if self._stop_requested:
                    engine.halt()
                await self._feed(engine, todo, writer)
                await engine.drain()
                limits = {name: c.gate.stats() for name, c in clients.items() if c.gate.stats().admitted}
            finally:
                await session.close()
            await writer.aflush()
        except BaseException:
            writer.shutdown()
            if early is not None:
                early.discard()
            raise
        finally:
            writer.shutdown()
            reporter.cancel()
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGINT)
                loop.remove_signal_handler(signal.SIGTERM)
            self.cache.close()
        if self.observer:
            self.observer(self._progress())
        abort = engine.abort
        complete = not engine.stopping and abort is None
        if isinstance(abort, BaseException) and not isinstance(abort, RunAborted):
            if early is not None:
                early.discard()
            raise abort
        try:  # the summary counts the final write's rows (reading the file maps it: +90 MB at 10^6 vectors)
            if complete:
                schema = self._final_schema(work, opts.fresh)
                work.finish(schema, plan.total_rows, opts.fresh, plan.status_columns, early=early)
                whole = work.final_counts
            else:
                whole = status_counts(work.sources(opts.fresh), plan.status_columns)
        finally:
            if early is not None:
                early.discard()
        rows = engine.rows
        failed = rows.failed + int((prior.failed & ~todo).sum())
        st = self.stats
        event(
            log,
            logging.INFO,
            "run.end",
            job=plan.job.spec.name,
            rows_processed=rows.processed,
            rows_ok=rows.ok,
            rows_failed=rows.failed,
            rows_skipped=rows.skipped,
            requests=st.requests,
            downloads=st.downloads,
            retries=st.retries,
            rate_limited=st.rate_limited,
            cache_hits=st.cache_hits,
            tokens=st.prompt_tokens + st.completion_tokens,
            elapsed_s=round(time.monotonic() - t0, 3),
            complete=complete,
            interrupted=self._interrupted,
        )
        return RunSummary(
            output=str(plan.output),
            total_rows=plan.total_rows,
            rows_resumed=self._resumed,
            rows_processed=rows.processed,
            status_counts=engine.counts,
            stats=self.stats,
            elapsed_s=time.monotonic() - t0,
            interrupted=self._interrupted,
            aborted=str(abort) if abort is not None else None,
            failed_rows=failed,
            output_counts=whole,
            cost_usd=self.stats.spend.spent if all(self._charges.values()) else None,
            cost_total_usd=self.stats.spend.total if all(self._charges.values()) else None,
            budget_usd=self.budget,
            budget_unsent_rows=rows.unsent,
            limits=limits,
        )

    async def _feed(self, engine: RunEngine, todo: Any, writer: PartWriter) -> None:
        """Read the input in batches of rows still to do and hand them to the engine."""
        for df in self.plan.source.batches(BATCH_ROWS):
            rows = df[ROW].to_numpy()
            mask = todo[rows]
            if not mask.any():
                continue
            if not mask.all():  # (a list, not the numpy array: polars would load numpy.ma, 25 ms, for it)
                df = df.filter(pl.Series(mask.tolist(), dtype=pl.Boolean))
            batch = _rows(df)
            if not await engine.feed(batch, writer.add):
                return
            await asyncio.sleep(0)  # let replies in between batches of cache hits


def _rows(df: pl.DataFrame) -> list[tuple[int, dict[str, Any]]]:
    """(input position, row) per row of a batch; the row without `__row`. Column by column: half the
    cost of `iter_rows(named=True)`, which a cached re-run pays on every row."""
    positions = df.get_column(ROW).to_list()
    names = [c for c in df.columns if c != ROW]
    if not names:
        return [(i, {}) for i in positions]
    values = zip(*(df.get_column(c).to_list() for c in names), strict=True)
    return [(i, dict(zip(names, v, strict=True))) for i, v in zip(positions, values, strict=True)]


async def execute(
    plan: Plan,
    options: RunOptions | None = None,
    observer: Callable[[Progress], None] | None = None,
    gates: GateFactory | None = None,
) -> RunSummary:
    """Run a plan to the end (or to a stop); the final file is written when every row is done."""
    return await Executor(plan, options or RunOptions(), observer, gates).run()
