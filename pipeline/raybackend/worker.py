"""A worker of the Ray backend: the local row engine on its own loop, fed chunks of rows by the driver.

The actor rebuilds the plan from the job file, makes its HTTP session, cache and gates (leased from the
global limiters) on its own event loop, and runs each chunk through the same `RowEngine` as the local
backend (built by the local `Executor`'s own methods). A row's failure is data in its record, never an
exception out of `process`: Ray would retry the call and send paid requests again. A run-level failure
(401 on every key, quota) comes back as `abort`, and the driver stops every worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeAlias

import polars as pl
import pyarrow as pa

from ..calls import RunStats
from ..engine import Record
from ..executor import Executor, RunOptions
from ..job.profiles import ResolvedProvider
from ..plan import Plan, build_plan
from ..ports import RunEngine
from ..session import LazySession
from ..sources import ROW
from ..tokens import counter, tokenizer_for
from .leasing import LeasingGates, LimiterGone, LimiterLink
from .limiter import LeaseReply, Settlement

NAMESPACE = "pipeline"
STAT_FIELDS = tuple(f.name for f in fields(RunStats) if f.name != "spend")


# what the driver hands a worker: an Arrow table of rows with their `__row` (ray.data input), or the pairs
# the local reader makes (a glob's listing)
Chunk: TypeAlias = list[tuple[int, dict[str, Any]]] | pa.Table


def as_rows(table: pa.Table) -> list[tuple[int, dict[str, Any]]]:
    """An Arrow chunk as the row engine takes it (what `Executor._feed` makes of the local reader's batch)."""
    df = pl.from_arrow(table)
    assert isinstance(df, pl.DataFrame)
    return [(row.pop(ROW), row) for row in df.iter_rows(named=True)]


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to rebuild the plan and its gates (keys travel here, not in its environment)."""

    job_path: str
    cwd: str
    worker: str
    workers: int
    api_keys: dict[str, str | None]
    key_pools: dict[str, tuple[str, ...]]
    limiters: dict[str, str]  # provider name -> limiter actor name
    sim_url: str | None = None
    prices_file: str | None = None
    lease: dict[str, float] = field(default_factory=dict)  # LeasedGate options (span_s, delay_s, flush_s)


@dataclass
class WorkerReport:
    """A chunk's records (input order not kept: the parts sort by row) and the worker's figures so far."""

    worker: str
    records: list[Record]
    stats: dict[str, int]
    metrics: dict[str, dict[str, float]]
    abort: str | None = None
    gates: dict[str, dict[str, Any]] = field(default_factory=dict)


class RayLink:
    """A limiter reached through its Ray actor handle, looked up again by name after a call failed (a
    limiter killed for good and made again by a run has a new handle; one Ray restarted keeps its own)."""

    def __init__(self, handle: Any, name: str | None = None) -> None:
        self.handle = handle
        self.name = name
        self._stale = False

    def _actor(self) -> Any:
        import ray

        if self._stale and self.name is not None:
            try:
                self.handle = ray.get_actor(self.name, namespace=NAMESPACE)
            except ValueError as exc:
                raise LimiterGone(f"limiter {self.name} not found: {exc}") from exc
            self._stale = False
        return self.handle

    async def lease(self, worker: str, tokens: list[int], span_s: float, settle: Settlement) -> LeaseReply:
        import ray

        try:
            reply: LeaseReply = await self._actor().lease.remote(worker, tokens, span_s, settle)
        except ray.exceptions.RayError as exc:
            self._stale = True
            raise LimiterGone(f"{type(exc).__name__}: {exc}") from exc
        return reply

    async def settle(self, worker: str, settle: Settlement) -> None:
        import ray

        try:
            await self._actor().settle.remote(worker, settle)
        except ray.exceptions.RayError as exc:
            self._stale = True
            raise LimiterGone(f"{type(exc).__name__}: {exc}") from exc


class _Gone:
    """A limiter that could not be found: the gate falls back at its first lease."""

    def __init__(self, why: str) -> None:
        self.why = why

    async def lease(self, worker: str, tokens: list[int], span_s: float, settle: Settlement) -> LeaseReply:
        raise LimiterGone(self.why)

    async def settle(self, worker: str, settle: Settlement) -> None:
        raise LimiterGone(self.why)


class Worker:
    """Runs chunks of rows through one RowEngine (made on the first chunk, on this actor's loop)."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self._engine: RunEngine | None = None
        self._executor: Executor | None = None
        self._gates: LeasingGates | None = None
        self._stack = contextlib.AsyncExitStack()
        self._ready: asyncio.Lock | None = None

    def _link(self, provider: ResolvedProvider, api_key: str | None, keys: Sequence[str]) -> LimiterLink:
        import ray

        name = self.spec.limiters.get(provider.name)
        if name is None:
            return _Gone(f"no limiter for provider `{provider.name}`")
        try:
            return RayLink(ray.get_actor(name, namespace=NAMESPACE), name)
        except ValueError as exc:
            return _Gone(f"limiter {name} not found: {exc}")

    def _plan(self) -> Plan:
        """The plan rebuilt from the job file, with the driver's keys."""
        spec = self.spec
        if Path(spec.cwd).is_dir():
            os.chdir(spec.cwd)  # the job's relative paths (input, cache) mean what they mean on the driver
        plan = build_plan(
            spec.job_path,
            sim_url=spec.sim_url,
            require_keys=False,
            check_ids=False,
            prices_file=Path(spec.prices_file) if spec.prices_file else None,
        )
        plan.api_keys = dict(spec.api_keys)
        plan.key_pools = dict(spec.key_pools)
        return plan

    async def _ensure(self) -> RunEngine:
        if self._ready is None:
            self._ready = asyncio.Lock()
        async with self._ready:
            if self._engine is not None:
                return self._engine
            plan = self._plan()
            self._gates = LeasingGates(
                self._link, self.spec.worker, self.spec.workers, plan.key_pools, **self.spec.lease
            )
            ex = self._executor = Executor(plan, RunOptions(), gates=self._gates)
            window = ex._window()
            session = LazySession(window + 16)
            self._stack.push_async_callback(session.close)
            self._engine = ex._engine_for(ex._clients(session), window)
            return self._engine

    async def warm(self) -> None:
        """Everything a first chunk would make (plan, session, gates with their limiters' clock offsets)
        and the tokenizers it loads (100+ MB vocabularies), before the run sends: no worker's start-up
        takes the CPU from workers already sending (a busy loop sends its grants late)."""
        await self._ensure()
        for gate in self._gates.gates.values() if self._gates is not None else []:
            await gate.warm()
        # A client's first request goes alone (a bad key costs one request, not a burst); on a worker it
        # would go a lease's delay (a second) ahead of the rest: each worker's first second all but empty.
        # A key proved by a free GET /models needs no such request (any other answer keeps it: a 401 still
        # stops the run on the first request).
        for client in getattr(self._engine, "clients", {}).values():
            with contextlib.suppress(Exception):
                await client.verify_key()
        plan = self._executor.plan if self._executor is not None else None
        for step in plan.job.spec.steps if plan is not None else []:
            model = getattr(step, "model", None)
            provider = plan.providers.get(step.provider) if plan is not None else None
            if isinstance(model, str) and provider is not None:
                counter(tokenizer_for(model, provider.tokenizer))("warm up")

    async def process(self, rows: Chunk) -> WorkerReport:
        """Every row of `rows` (an Arrow table with `__row`, or row number and row pairs) through the engine;
        the records of the rows finished (all, unless stopped)."""
        chunk = rows if isinstance(rows, list) else as_rows(rows)
        engine = await self._ensure()
        out: list[Record] = []
        done = asyncio.Event()

        def emit(record: Record) -> None:
            out.append(record)
            if len(out) >= len(chunk):
                done.set()

        await engine.feed(chunk, emit)
        while len(out) < len(chunk) and not engine.stopping and engine.abort is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    await done.wait()
        if len(out) < len(chunk):
            await engine.drain()  # stopping: the requests on the wire finish, the rest stays to do
        return self.report(out)

    def report(self, records: list[Record] | None = None) -> WorkerReport:
        """The worker's figures so far (a liveness answer when called without records)."""
        engine, ex = self._engine, self._executor
        stats = {n: int(getattr(ex.stats, n)) for n in STAT_FIELDS} if ex is not None else {}
        abort = engine.abort if engine is not None else None
        gates = {}
        for name, g in (self._gates.gates if self._gates is not None else {}).items():
            gates[name] = {
                "leases": g.leases,
                "lease_s": g.lease_s,
                "unused": g.unused,
                "late": g.late,
                "max_late_s": g.max_late_s,
                "admitted": g.admitted,
                "fallback": g.fallback_reason,
            }
        return WorkerReport(
            self.spec.worker,
            records or [],
            stats,
            {k: dict(v) for k, v in engine.metrics.items()} if engine is not None else {},
            str(abort) if abort is not None else None,
            gates,
        )

    async def ping(self) -> WorkerReport:
        return self.report()

    async def halt(self) -> None:
        """Start no new row; requests on the wire finish (their answers are paid for)."""
        if self._engine is not None:
            self._engine.halt()

    async def close(self) -> None:
        """Give back unused grants, close the session and the cache."""
        if self._engine is not None:
            self._engine.halt()
            await self._engine.drain()
        if self._gates is not None:
            await self._gates.close()
        await self._stack.aclose()
        if self._executor is not None:
            self._executor.cache.close()
