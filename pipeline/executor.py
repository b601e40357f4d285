"""The run loop: rows in input order through every step, under a bounded window, results to the sink."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import polars as pl
import pyarrow as pa

from .budget import MARK as BUDGET_MARK
from .budget import Spend, check_budget, earlier_spend, step_charges
from .cache import NoCache, ResponseCache
from .calls import ProviderClient, RunStats, Stopped
from .endpoints import Prepared
from .errors import FatalError, RunAborted
from .gates import LocalGates
from .limits import GateStats
from .plan import DEFAULT_ID, Plan
from .ports import GateFactory
from .records import Progress, StepResult
from .sinks import PartWriter, WorkDir, flatten_result, status_counts
from .sources import ROW
from .transport import Transport, new_session

BATCH_ROWS = 2000
# Input data of the rows in flight, at most (with the window's row count): long documents would
# otherwise fill memory before the window's count does.
MAX_BYTES_IN_FLIGHT = 64 * 2**20


def _row_bytes(row: dict[str, Any]) -> int:
    """About what a row's input holds in memory: its text and bytes, 8 per other value."""
    return sum(len(v) if isinstance(v, str | bytes) else 8 for v in row.values())


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


@dataclass
class _Counters:
    done: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    unsent: int = 0  # failed for the budget: not sent
    streak_sig: str | None = None
    streak: int = 0


def _failure_signature(error: str | None) -> str:
    # identical failures differ only by request ids; compare the text before it
    text = (error or "").split("(request id", 1)[0]
    return text[:200]


def _fatal_message(plan: Plan, step: Any, exc: FatalError) -> str:
    """Why the run stops, naming the step, its provider (and URL) and, for an unknown model, the model."""
    p = plan.providers.get(step.provider)
    where = f"provider `{step.provider}`" + (f" ({p.base_urls[0]})" if p is not None else "")
    model = getattr(getattr(step, "spec", None), "model", None)
    if exc.code == "model_not_found" and model:
        return (f"model `{model}` of step `{step.name}` is not served by {where}: {exc.short()}. "
                f"`pipeline models --provider {step.provider} --job {plan.job.path}` lists the models it serves")
    return f"{where} refused step `{step.name}`: {exc.short()}"


class Executor:
    def __init__(self, plan: Plan, options: RunOptions, observer: Callable[[Progress], None] | None = None,
                 gates: GateFactory | None = None) -> None:
        self.plan = plan
        # where each provider's gate comes from (one factory per run: providers sharing a key share a gate)
        self.gates: GateFactory = gates if gates is not None else LocalGates()
        self.options = options
        self.observer = observer
        spec = plan.job.spec
        self.cache: ResponseCache | NoCache = (
            ResponseCache(spec.cache.dir, spec.cache.size_limit_gb) if spec.cache.enabled else NoCache()
        )
        self.stats = RunStats()
        self.counts: dict[str, Counter[str]] = {s.name: Counter() for s in plan.steps}
        self._c = _Counters()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False  # no new row or attempt starts (Ctrl-C or abort)
        self._interrupted = False  # Ctrl-C / SIGTERM
        self._client_list: list[ProviderClient] = []
        self._abort: BaseException | None = None
        self._started = 0.0
        self._resumed = 0
        self._processed = 0
        self._value_names = {s.name: [f.name for f in s.output_fields()] for s in plan.steps}
        self.budget = options.max_cost_usd or (spec.budget.max_cost_usd if spec.budget else None)
        check_budget(plan, self.budget)
        self._charges = step_charges(plan)
        self._kinds = {s.name: s.kind for s in spec.steps}
        self._bytes_in_flight = 0
        self._bytes_freed: asyncio.Event | None = None

    # ----------------------------------------------------------------- setup
    def _clients(self, session: Any) -> dict[str, ProviderClient]:
        """One client per provider, each with the gate the factory gives for its key and URL."""
        clients: dict[str, ProviderClient] = {}
        spec = self.plan.job.spec
        for name, p in self.plan.providers.items():
            key = self.plan.api_keys.get(name)
            clients[name] = ProviderClient(
                Transport(p, key, session), self.gates(p, key), self.cache, spec.retry, self.stats,
                rng=random.Random(), stopping=lambda: self._stopping,
            )
        return clients

    def _window(self) -> int:
        opt = self.plan.job.spec.run.max_rows_in_flight
        if opt:
            return opt
        conc = [p.limits.concurrency or 256 for p in self.plan.providers.values()]
        # steps that pack many rows into one request need enough rows waiting to fill their requests
        hints = [h for s in self.plan.steps
                 if (h := s.rows_in_flight_hint(self.plan.providers[s.provider].limits.concurrency))]
        return max(64, 4 * max(conc), *hints)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A row task, or a step's background task: a stop cancels it unless its request is on the wire,
        and the run (and the cache) stays open until it is done."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _final_schema(self, work: WorkDir, fresh: bool) -> pa.Schema:
        """The final file's schema: the parts' one, with the columns steps only know from their results."""
        schema = self.plan.final_schema
        written = work.written(fresh)
        if written is None:
            return schema
        for step in self.plan.steps:
            for f in step.final_fields(written, self.plan.id_column) or []:
                schema = schema.set(schema.get_field_index(f.name), f)
        return schema

    # ----------------------------------------------------------------- rows
    def _record(self, row_index: int, row: dict[str, Any], results: list[StepResult]) -> dict[str, Any]:
        out: dict[str, Any] = {c: row.get(c) for c in self.plan.carried_columns}
        out[ROW] = row_index
        if self.plan.id_column == DEFAULT_ID and DEFAULT_ID not in row:
            out[DEFAULT_ID] = row_index
        failed = False
        for step, r in zip(self.plan.steps, results, strict=True):
            flatten_result(step.name, r, self._value_names[step.name], out)
            out[f"{step.name}__cost"] = self._row_cost(step.name, r)
            self.counts[step.name][r.status] += 1
            failed = failed or r.status in ("error", "invalid")
        c = self._c
        c.done += 1
        if failed and any(r.error and BUDGET_MARK in r.error for r in results):
            c.unsent += 1  # not a failure of the row: a later run with more budget sends it
            c.failed += 1
        elif failed:
            c.failed += 1
            bad = next(r for r in results if r.status in ("error", "invalid"))
            sig = _failure_signature(bad.error)
            c.streak = c.streak + 1 if sig == c.streak_sig else 1
            c.streak_sig = sig
            limit = self.plan.job.spec.run.stop_after_identical_failures
            if c.streak >= limit:
                self._set_abort(RunAborted(
                    f"{c.streak} rows in a row failed with the same error, stopping instead of failing "
                    f"every row: {bad.error}"
                ))
        else:
            c.streak = 0
            c.streak_sig = None
            if any(r.status == "skipped" for r in results):
                c.skipped += 1
            else:
                c.ok += 1
        return out

    def _row_cost(self, step: str, r: StepResult) -> float | None:
        """What the row's answer cost (also when it came from the cache: it was paid once)."""
        charge = self._charges[step]
        if charge is None:
            return None
        if self._kinds[step] == "transcribe":
            seconds = r.values.get(f"{step}__duration")
            return charge.price.audio(seconds) if isinstance(seconds, int | float) else None
        if r.prompt_tokens is None and r.completion_tokens is None:
            return None if r.status == "ok" else 0.0
        return charge.price.tokens(r.prompt_tokens, r.completion_tokens)

    def _skip_reason(self, results: list[StepResult]) -> str | None:
        for step, r in zip(self.plan.steps, results, strict=False):
            if r.status != "ok":
                why = f": {r.error[:300]}" if r.error else ""
                return f"step `{step.name}` did not succeed ({r.status}{why})"
        return None

    def _advance_cached(self, ctx: dict[str, Any], results: list[StepResult]) -> Prepared | None:
        """Complete as many steps as possible without sending.

        Returns None when the row is finished, else the prepared request of the next step to send.
        """
        steps = self.plan.steps
        while len(results) < len(steps):
            reason = self._skip_reason(results)
            if reason is not None:
                results.append(StepResult.skipped(reason))
                continue
            r = steps[len(results)].try_cached(ctx)
            if isinstance(r, Prepared):
                return r
            results.append(r)
            if r.status == "ok":
                ctx.update(r.values)
        return None

    async def _row_task(self, row_index: int, ctx: dict[str, Any], results: list[StepResult],
                        prepared: Prepared, writer: PartWriter, window: asyncio.Semaphore, size: int) -> None:
        try:
            steps = self.plan.steps
            next_prep: Prepared | None = prepared
            while next_prep is not None:
                r = await steps[len(results)].run(ctx, next_prep)
                results.append(r)
                if r.status == "ok":
                    ctx.update(r.values)
                next_prep = self._advance_cached(ctx, results)
            self._processed += 1
            writer.add(self._record(row_index, ctx, results))
        except (Stopped, asyncio.CancelledError):
            pass  # not written: the row stays to do for the next run
        except FatalError as exc:
            self._set_abort(RunAborted(_fatal_message(self.plan, self.plan.steps[len(results)], exc)))
        except BaseException as exc:  # a bug or a disk error: stop the run, keep what is done
            self._set_abort(exc)
        finally:
            window.release()
            self._bytes_in_flight -= size
            if self._bytes_freed is not None:
                self._bytes_freed.set()

    # ----------------------------------------------------------------- run
    def _progress(self) -> Progress:
        el = max(1e-9, asyncio.get_running_loop().time() - self._started)
        s = self.stats
        tokens = s.prompt_tokens + s.completion_tokens
        rows_done = self._c.done + self._resumed
        audio_done = audio_left = None
        audio = [a for a in (step.audio_seconds() for step in self.plan.steps) if a is not None]
        if audio:
            audio_done = sum(a[0] for a in audio)
            measured = max(a[1] for a in audio)
            if measured:
                audio_left = audio_done / measured * max(0, self.plan.total_rows - rows_done)
        return Progress(
            total_rows=self.plan.total_rows, rows_done=rows_done, rows_ok=self._c.ok,
            rows_failed=self._c.failed, rows_skipped=self._c.skipped, rows_resumed=self._resumed,
            requests=s.requests, cache_hits=s.cache_hits, retries=s.retries, rate_limited=s.rate_limited,
            tokens=tokens, elapsed_s=el, req_per_min=s.requests / el * 60, tok_per_min=tokens / el * 60,
            audio_s_done=audio_done, audio_s_left=audio_left,
            cost_usd=s.spend.spent if all(self._charges.values()) else None, budget_usd=self.budget,
            limits="; ".join(sorted({c.gate.stats().describe() for c in self._client_list})) or None,
        )

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(self.options.progress_interval_s)
            if self.observer:
                self.observer(self._progress())

    def _halt(self) -> None:
        """Start no new row or attempt; requests already on the wire finish (their answers are paid for)."""
        self._stopping = True
        for t in list(self._tasks):
            if not any(t in c.inflight for c in self._client_list):
                t.cancel()

    def _set_abort(self, exc: BaseException) -> None:
        if self._abort is None:
            self._abort = exc
            self._halt()

    def request_stop(self) -> None:
        """Ctrl-C: the first stops gracefully, the second cancels what is still in flight."""
        if self._interrupted:
            for t in list(self._tasks):
                t.cancel()
            return
        self._interrupted = True
        self._halt()

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
        writer = PartWriter(work, plan.part_schema, plan.job.spec.run.flush_rows, plan.job.spec.run.flush_interval_s)
        window_size = self._window()
        window = asyncio.Semaphore(window_size)
        reporter = asyncio.create_task(self._report())
        limits: dict[str, GateStats] = {}
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, self.request_stop)
            loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        try:
            async with new_session(window_size + 16) as session:
                clients = self._clients(session)
                self._client_list = list(clients.values())
                for step in plan.steps:
                    step.client = clients[step.provider]
                    step.spawner = self._spawn
                    step.charge = self._charges[step.name]
                await self._feed(todo, writer, window)
                while self._tasks:
                    await asyncio.wait(set(self._tasks))
                limits = {name: c.gate.stats() for name, c in clients.items() if c.gate.stats().admitted}
            writer.flush()
        finally:
            reporter.cancel()
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGINT)
                loop.remove_signal_handler(signal.SIGTERM)
            self.cache.close()
        if self.observer:
            self.observer(self._progress())
        complete = not self._stopping and self._abort is None
        if isinstance(self._abort, BaseException) and not isinstance(self._abort, RunAborted):
            raise self._abort
        if complete:
            work.finish(self._final_schema(work, opts.fresh), plan.total_rows, opts.fresh)
        whole = status_counts(work.sources(opts.fresh and not complete), plan.status_columns)
        failed = self._c.failed + int((prior.failed & ~todo).sum())
        return RunSummary(
            output=str(plan.output), total_rows=plan.total_rows, rows_resumed=self._resumed,
            rows_processed=self._processed, status_counts=self.counts, stats=self.stats,
            elapsed_s=time.monotonic() - t0, interrupted=self._interrupted,
            aborted=str(self._abort) if self._abort is not None else None, failed_rows=failed,
            output_counts=whole,
            cost_usd=self.stats.spend.spent if all(self._charges.values()) else None,
            cost_total_usd=self.stats.spend.total if all(self._charges.values()) else None,
            budget_usd=self.budget, budget_unsent_rows=self._c.unsent,
            limits=limits,
        )

    async def _feed(self, todo: Any, writer: PartWriter, window: asyncio.Semaphore) -> None:
        """Read the input in batches; finish cached rows at once, start tasks for the rest."""
        first = self.plan.steps[0]
        for df in self.plan.source.batches(BATCH_ROWS):
            rows = df[ROW].to_numpy()
            if not todo[rows].any():
                continue
            batch = [(row.pop(ROW), row) for row in df.filter(pl.Series(todo[rows])).iter_rows(named=True)]
            first.prefetch([row for _, row in batch])  # one cache query for the batch, not one per row
            for idx, row in batch:
                if self._stopping or self._abort is not None:
                    return
                results: list[StepResult] = []
                prep = self._advance_cached(row, results)
                if prep is None:
                    self._processed += 1
                    writer.add(self._record(idx, row, results))
                    continue
                await window.acquire()
                size = _row_bytes(row)
                while self._bytes_in_flight and self._bytes_in_flight + size > MAX_BYTES_IN_FLIGHT:
                    self._bytes_freed = self._bytes_freed or asyncio.Event()
                    self._bytes_freed.clear()
                    await self._bytes_freed.wait()
                if self._stopping or self._abort is not None:
                    window.release()
                    return
                self._bytes_in_flight += size
                self._spawn(self._row_task(idx, row, results, prep, writer, window, size))
            await asyncio.sleep(0)  # let replies in between batches of cache hits


async def execute(plan: Plan, options: RunOptions | None = None,
                  observer: Callable[[Progress], None] | None = None, gates: GateFactory | None = None) -> RunSummary:
    """Run a plan to the end (or to a stop); the final file is written when every row is done."""
    return await Executor(plan, options or RunOptions(), observer, gates).run()
