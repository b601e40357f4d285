"""The row engine: rows through every step under a bounded window, each row out as one flat record.

It knows steps and provider clients only: no files, no signals, no progress printing. The local file
runner (`executor.py`) feeds it the input and writes what it emits; another backend (a Ray actor, a
test) can call `process` on a list of rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

from .budget import MARK as BUDGET_MARK
from .budget import Charge
from .calls import CallError, ProviderClient, Reply, RunStats, Stopped
from .endpoints import Prepared, StepRuntime
from .endpoints.base import Done, Exchange, Local, Lookup, Need, Outcome, ProveKey
from .errors import FatalError, RequestError, RunAborted, StreamCut
from .logs import event
from .packing import Packer, PackingKind
from .records import StepResult
from .sinks import accounting_columns, flatten_result
from .sources import ROW

log = logging.getLogger(__name__)

# Input data of the rows in flight, at most (with the window's row count): long documents would
# otherwise fill memory before the window's count does.
MAX_BYTES_IN_FLIGHT = 64 * 2**20

Record = dict[str, Any]

# Rows prepared and looked up in the cache at once (`StepRuntime.prefetch`) when a batch is fed.
PREFETCH_ROWS = 256

# How long an open pack (rows sharing one request) waits for more rows once none arrive (loop time).
PACK_LINGER_S = 0.005


def _row_bytes(row: dict[str, Any]) -> int:
    """About what a row's input holds in memory: its text and bytes, 8 per other value."""
    n = 0
    for v in row.values():  # (per row sent: a loop, not a generator; no `str | bytes` made per value)
        n += len(v) if isinstance(v, (str, bytes)) else 8  # noqa: UP038
    return n


def _retrieve(tasks: Sequence[asyncio.Task[Any]]) -> None:
    """Mark every finished task's exception as seen (asyncio logs unseen ones)."""
    for t in tasks:
        if t.done() and not t.cancelled():
            with contextlib.suppress(BaseException):
                t.exception()


def _failure_signature(error: str | None) -> str:
    # identical failures differ only by request ids; compare the text before it
    text = (error or "").split("(request id", 1)[0]
    return text[:200]


@dataclass(frozen=True, slots=True)
class _Resume(Prepared):
    """A row's exchange as far as the cache could take it, and the requests it needs next."""

    exchange: Exchange | None = None
    batch: tuple[Prepared, ...] | Need = ()  # the requests it needs next, or what else it needs
    known: tuple[Reply[Any] | None, ...] = ()  # per request of the batch: cached reply, or None


@dataclass
class RowCounters:
    """Rows finished by the engine, by outcome (read by progress snapshots and the summary)."""

    done: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    unsent: int = 0  # failed for the budget: not sent
    processed: int = 0  # rows written (finished from the cache or by requests)
    streak_sig: str | None = None
    streak: int = 0


@dataclass(frozen=True)
class RecordShape:
    """How a row becomes a record: the columns carried from the input, and the default id."""

    carried_columns: Sequence[str]
    id_column: str
    default_id: str  # the id column made from the row index when the input has none


class RowEngine:
    """Runs rows through `steps`, each bound to its provider's client; emits one record per row.

    A row's failure is data (its status columns); a FatalError of a provider stops the engine
    (`abort` says why), as do `stop_after_identical_failures` identical row failures in a row.
    """

    def __init__(
        self,
        steps: Sequence[StepRuntime],
        clients: Mapping[str, ProviderClient],
        stats: RunStats,
        shape: RecordShape,
        *,
        window: int,
        charges: Mapping[str, Charge | None],
        stop_after_identical_failures: int,
        fatal_message: Callable[[StepRuntime, FatalError], str] = lambda step, exc: str(exc),
        max_bytes_in_flight: int = MAX_BYTES_IN_FLIGHT,
    ) -> None:
        self.clients = dict(clients)
        self.stats = stats
        self.shape = shape
        self.window_size = window
        self.charges = dict(charges)
        self.stop_after = stop_after_identical_failures
        self.fatal_message = fatal_message
        self.max_bytes_in_flight = max_bytes_in_flight
        self.counts: dict[str, Counter[str]] = {s.name: Counter() for s in steps}
        self.rows = RowCounters()
        self.stopping = False  # no new row or attempt starts (a stop or an abort)
        self.abort: BaseException | None = None
        self._value_names = {s.name: [f.name for f in s.output_fields()] for s in steps}
        # per step: its value columns, then its accounting columns (see `_record`)
        self._columns = [(tuple(self._value_names[s.name]), accounting_columns(s.name)) for s in steps]
        # per step, the counters its kind declares, summed over the results of this engine's rows
        self.metrics: dict[str, dict[str, float]] = {s.name: dict.fromkeys(s.counters, 0.0) for s in steps}
        self._tasks: set[asyncio.Task[None]] = set()
        self._window: asyncio.Semaphore | None = None
        self._bytes_in_flight = 0
        self._bytes_freed: asyncio.Event | None = None
        # this engine's copies of the steps, bound to its clients (the plan's steps are left as they are)
        self.steps = [s.bind(self.clients[s.provider], self.spawn, self.charges.get(s.name)) for s in steps]
        # what `_record` needs per step, looked up once: the step, its counts, its columns, its price
        self._recording = [
            (s, self.counts[s.name], names, acc, c.price if (c := self.charges.get(s.name)) is not None else None)
            for s, (names, acc) in zip(self.steps, self._columns, strict=True)
        ]
        self._packers: dict[str, Packer[Any]] = {}  # per step that packs rows: its packer (made on first use)

    # ----------------------------------------------------------------- feeding rows
    async def process(self, rows: Iterable[tuple[int, dict[str, Any]]]) -> list[Record]:
        """Every row's record (in the order rows finish); rows not finished by a stop are left out."""
        records: list[Record] = []
        await self.feed(list(rows), records.append)
        await self.drain()
        return records

    async def feed(self, batch: list[tuple[int, dict[str, Any]]], emit: Callable[[Record], None]) -> bool:
        """Start `batch` (row index, row): rows the cache answers are emitted at once, the others run as
        tasks under the window and are emitted when done. False when the engine is stopping."""
        if self._window is None:
            self._window = asyncio.Semaphore(self.window_size)
        window = self._window
        for i, (idx, row) in enumerate(batch):
            if i % PREFETCH_ROWS == 0:
                if i:  # let the rows just started send: the first request does not wait for the whole batch
                    await asyncio.sleep(0)
                # one cache query for many rows, not one per row
                self.steps[0].prefetch([r for _, r in batch[i : i + PREFETCH_ROWS]])
            if self.stopping or self.abort is not None:
                return False
            results: list[StepResult] = []
            prep = self._advance_cached(row, results)
            if prep is None:
                self.rows.processed += 1
                emit(self._record(idx, row, results))
                continue
            await window.acquire()
            size = _row_bytes(row)
            while self._bytes_in_flight and self._bytes_in_flight + size > self.max_bytes_in_flight:
                self._bytes_freed = self._bytes_freed or asyncio.Event()
                self._bytes_freed.clear()
                await self._bytes_freed.wait()
            if self.stopping or self.abort is not None:
                window.release()
                return False
            self._bytes_in_flight += size
            self.spawn(self._row_task(idx, row, results, prep, emit, window, size))
        return True

    async def drain(self) -> None:
        """Wait until every row task (and every step's background task) is done."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A row task, or a step's background task: a stop cancels it unless its request is on the wire,
        and `drain` waits for it."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ----------------------------------------------------------------- stopping
    def halt(self) -> None:
        """Start no new row or attempt; requests already on the wire finish (their answers are paid for).

        A task is cancelled once: a later halt (the run aborting while it stops, a Ray worker's close
        after its halt, a Ctrl-C after an abort) leaves a task already cancelled alone, since it may be
        waiting for its own requests on the wire (`_send_at_once`), which a second cancel would drop.
        Only `cancel_all` (the second Ctrl-C) cancels again."""
        self.stopping = True
        for t in list(self._tasks):
            if not t.cancelling() and not any(t in c.inflight for c in self.clients.values()):
                t.cancel()

    def cancel_all(self) -> None:
        """Cancel every task, also those with a request on the wire."""
        for t in list(self._tasks):
            t.cancel()

    def set_abort(self, exc: BaseException) -> None:
        if self.abort is None:
            event(log, logging.ERROR, "run.aborted", reason=str(exc)[:1000])
            self.abort = exc
            self.halt()

    # ----------------------------------------------------------------- rows
    def _skip_reason(self, results: list[StepResult]) -> str | None:
        for step, r in zip(self.steps, results, strict=False):
            if r.status != "ok":
                why = f": {r.error[:300]}" if r.error else ""
                return f"step `{step.name}` did not succeed ({r.status}{why})"
        return None

    def _advance_cached(self, ctx: dict[str, Any], results: list[StepResult]) -> Prepared | None:
        """Complete as many steps as possible without sending.

        Returns None when the row is finished, else the prepared request of the next step to send.
        """
        steps = self.steps
        while (i := len(results)) < len(steps):
            reason = self._skip_reason(results) if i else None
            if reason is not None:
                results.append(StepResult.skipped(reason))
                continue
            step = steps[i]
            r = self._try_cached(step, ctx)
            if isinstance(r, Prepared):
                return r
            if r.metrics:
                self._count(step, r)
            results.append(r)
            if r.status == "ok":
                ctx.update(r.values)
        return None

    async def _row_task(
        self,
        row_index: int,
        ctx: dict[str, Any],
        results: list[StepResult],
        prepared: Prepared,
        emit: Callable[[Record], None],
        window: asyncio.Semaphore,
        size: int,
    ) -> None:
        try:
            steps = self.steps
            next_prep: Prepared | None = prepared
            while next_prep is not None:
                r = await self._run_step(steps[len(results)], ctx, next_prep)
                self._count(steps[len(results)], r)
                results.append(r)
                if r.status == "ok":
                    ctx.update(r.values)
                next_prep = self._advance_cached(ctx, results)
            self.rows.processed += 1
            emit(self._record(row_index, ctx, results))
        except (Stopped, asyncio.CancelledError):
            pass  # not emitted: the row stays to do
        except FatalError as exc:
            self.set_abort(RunAborted(self.fatal_message(self.steps[len(results)], exc)))
        except BaseException as exc:  # a bug or a disk error: stop the run, keep what is done
            self.set_abort(exc)
        finally:
            window.release()
            self._bytes_in_flight -= size
            if self._bytes_freed is not None:
                self._bytes_freed.set()

    # ----------------------------------------------------------------- one step of a row: the exchange
    def _cached(self, step: StepRuntime, ask: Prepared) -> Reply[Any] | None:
        if ask.cache_key is None:
            return None
        parsed = self.clients[step.provider].cached(ask.cache_key, step.parse)
        return None if parsed is None else Reply(parsed, 0, True)

    def _close(self, step: StepRuntime, done: Done) -> StepResult:
        if done.drop:
            client = self.clients[step.provider]
            for key in done.drop:
                client.cache.delete(key)
        if done.repairs:
            self.stats.repairs += done.repairs
        return done.result

    def _replay(self, step: StepRuntime, first: Prepared | None, body: bytes) -> StepResult | None:
        """`step.replay` of a cached answer, counted as a cache hit; None: the long way (a broken body
        too: `parse` raises it again there, and drops the entry)."""
        try:
            replayed = step.replay(first, body)
        except RequestError:
            return None
        if replayed is not None:
            self.stats.cache_hits += 1
        return replayed

    def _try_cached(self, step: StepRuntime, ctx: dict[str, Any]) -> StepResult | Prepared:
        """The step's result when the cache holds every answer it needs (or nothing is to be sent);
        otherwise the exchange as far as the cache took it, for `_run_step` to go on with."""
        cache = step.client.cache
        key = step.first_key(ctx)
        body = cache.get(key) if key is not None else None
        if body is not None:  # the common answer, replayed without building the request
            replayed = self._replay(step, None, body)
            if replayed is not None:
                return replayed
        prep = step.request_for(ctx)
        if isinstance(prep, StepResult):
            return prep
        hit: Reply[Any] | None = None
        if prep.cache_key != key:  # (no quick key: the request's own)
            key = prep.cache_key
            body = cache.get(key) if key is not None else None
        if body is not None:
            assert key is not None
            replayed = self._replay(step, prep, body)
            if replayed is not None:
                return replayed
            parsed = step.client.parse_cached(key, body, step.parse)
            if parsed is not None:
                hit = Reply(parsed, 0, True)
        if hit is not None:
            done = step.settle(prep, hit)
            if done is not None:
                return self._close(step, done)
        if step.packs_rows:
            return prep  # for the step's packer (`_run_step`)
        exchange = step.exchange(prep)
        batch = next(exchange)
        known = [hit]
        while True:
            if not isinstance(batch, list) or None in known:
                # local work, a key to prove, or an answer the cache lacks: the row's task goes on
                pending = batch if not isinstance(batch, list) else tuple(batch)
                return _Resume(
                    prep.request,
                    prep.tokens,
                    prep.cache_key,
                    prep.completion_charge,
                    prep.prompt_estimate,
                    exchange=exchange,
                    batch=pending,
                    known=tuple(known),
                )
            try:
                batch = exchange.send(list(zip(batch, known, strict=True)))
            except StopIteration as stop:
                done = stop.value
                if done.store:  # (answers to keep come from requests sent; written here all the same)
                    self.spawn(self._store(step, done))
                return self._close(step, done)
            known = [self._cached(step, ask) for ask in batch] if isinstance(batch, list) else []

    async def _run_step(self, step: StepRuntime, ctx: dict[str, Any], prepared: Prepared) -> StepResult:
        """The step's result, sending what the exchange still needs (from where the cache pass stopped)."""
        if step.packs_rows:
            assert prepared.cache_key is not None
            return await self._packer(step).submit(prepared.cache_key, prepared, prepared.tokens)
        assert isinstance(prepared, _Resume) and prepared.exchange is not None
        exchange, batch, known = prepared.exchange, prepared.batch, list(prepared.known)
        looked = True  # the cache pass asked the cache for this batch already
        cleanups: list[Callable[[], Awaitable[None]]] = []
        try:
            while True:
                answer: Any
                if not isinstance(batch, tuple | list):
                    answer = await self._need(step, batch, cleanups)
                elif step.sends_at_once and len(batch) > 1:
                    answer = await self._send_at_once(
                        step,
                        [(ask, hit) for ask, hit in zip(batch, known or [None] * len(batch), strict=True)],
                        not looked,
                    )
                else:
                    # one after the other: a request on the wire belongs to this row's task (graceful stop)
                    answer = []
                    for ask, hit in zip(batch, known or [None] * len(batch), strict=True):
                        answer.append((ask, hit) if hit is not None else await self._send(step, ask, not looked))
                try:
                    nxt = exchange.send(answer)
                except StopIteration as stop:
                    done: Done = stop.value
                    if done.store:
                        await self._store(step, done)
                    return self._close(step, done)
                batch = tuple(nxt) if isinstance(nxt, list) else nxt
                known, looked = [], False
        finally:
            for cleanup in cleanups:
                await cleanup()

    async def _need(self, step: StepRuntime, need: Need, cleanups: list[Callable[[], Awaitable[None]]]) -> Any:
        """What the engine found for a row's need (see endpoints.base.Need)."""
        client = self.clients[step.provider]
        if isinstance(need, Local):
            if need.cleanup is not None:
                cleanups.append(need.cleanup)
            return await need.work()
        if isinstance(need, Lookup):
            parsed = client.cached(need.key, step.parse)
            return None if parsed is None else Reply(parsed, 0, True)
        assert isinstance(need, ProveKey)
        await client.verify_key()
        return None

    async def _store(self, step: StepRuntime, done: Done) -> None:
        cache = self.clients[step.provider].cache
        for key, body in done.store:
            await cache.store(key, body)

    async def _send_at_once(
        self, step: StepRuntime, batch: list[tuple[Prepared, Reply[Any] | None]], check_cache: bool
    ) -> list[tuple[Prepared, Outcome]]:
        """Send every request of `batch` at once, each in its own task; what came of each, in order.

        When the row's task is cancelled (a stop), requests already on the wire are let finish, so
        their answers land in the cache; the others are dropped. A FatalError (then a Stopped) of any
        request is raised over the others' outcomes."""
        client = self.clients[step.provider]

        async def one(ask: Prepared, hit: Reply[Any] | None) -> tuple[Prepared, Outcome]:
            return (ask, hit) if hit is not None else await self._send(step, ask, check_cache)

        tasks = [asyncio.create_task(one(ask, hit)) for ask, hit in batch]
        try:
            await asyncio.wait(tasks)
        except asyncio.CancelledError:
            for t in tasks:
                if t not in client.inflight:
                    t.cancel()
            try:
                await asyncio.wait(tasks)
            finally:
                for t in tasks:
                    t.cancel()
                _retrieve(tasks)
            raise
        _retrieve(tasks)
        errors = [t.exception() for t in tasks if not t.cancelled() and t.exception() is not None]
        for kind in (FatalError, Stopped):
            for e in errors:
                if isinstance(e, kind):
                    raise e
        for e in errors:
            if e is not None:
                raise e
        return [t.result() for t in tasks]

    def _packer(self, step: StepRuntime) -> Packer[Any]:
        packer = self._packers.get(step.name)
        if packer is None:
            packer = Packer(
                cast(PackingKind[Any], step),
                self.clients[step.provider],
                spawn=self.spawn,
                charge=step.charge,
                linger_s=PACK_LINGER_S,
            )
            self._packers[step.name] = packer
        return packer

    async def _call(self, step: StepRuntime, ask: Prepared, check_cache: bool) -> tuple[Outcome, bool]:
        """The outcome of `ask`, and whether its failure was taken over by the kind."""
        handed = False
        cuts = 0

        def hand_back(err: RequestError) -> bool:
            nonlocal handed, cuts
            cuts += isinstance(err, StreamCut)
            handed = step.takes_over(ask, err, cuts)
            return handed

        try:
            reply = await self.clients[step.provider].call(
                ask.request,
                tokens=ask.tokens,
                cache_key=ask.cache_key,
                check_cache=check_cache,
                parse=step.parse,
                completion_charge=ask.completion_charge,
                hand_back=hand_back,
                charge=ask.priced if ask.priced is not None else step.charge,
            )
        except CallError as exc:
            return exc, handed
        return reply, False

    async def _send(self, step: StepRuntime, ask: Prepared, check_cache: bool) -> tuple[Prepared, Outcome]:
        """Send `ask`, re-sent otherwise when the kind takes a failure over (another structured-output
        form, unstreamed); the request actually answered, and its outcome. While the kind is still
        finding how to send (`serial`), requests go one at a time. A taken-over attempt does not count
        against the row."""
        carried = 0  # failed attempts before the request was re-sent otherwise (counted for the row)
        while True:
            ask = step.current(ask)
            lock = step.serial(ask)
            done: tuple[Outcome, bool] | None = None
            if lock is not None:
                async with lock:
                    if step.serial(ask) is not None:
                        ask = step.current(ask)
                        done = await self._call(step, ask, check_cache)
                        if isinstance(done[0], Reply):
                            step.answered(ask)
            if done is None:
                ask = step.current(ask)
                done = await self._call(step, ask, check_cache)
            outcome, handed = done
            if isinstance(outcome, Reply):
                step.answered(ask)
                return ask, replace(outcome, attempts=outcome.attempts + carried) if carried else outcome
            if not handed:
                return ask, CallError(outcome.error, outcome.attempts + carried)
            nxt = step.instead(ask, outcome.error)
            if isinstance(nxt, RequestError):
                return ask, CallError(nxt, outcome.attempts + carried)
            # cut streams were real failures; the refused attempt itself is not (earlier ones were)
            carried += outcome.attempts if isinstance(outcome.error, StreamCut) else outcome.attempts - 1
            ask, check_cache = nxt, True

    def _count(self, step: StepRuntime, r: StepResult) -> None:
        if r.metrics:
            counters = self.metrics[step.name]
            for name, value in r.metrics.items():
                counters[name] = counters.get(name, 0.0) + value

    def _record(self, row_index: int, row: dict[str, Any], results: list[StepResult]) -> Record:
        """The row's output record: carried columns, `__row`, and per step its `sinks.flatten_result` (with
        the column names computed once, not per row), priced."""
        shape = self.shape
        out: Record = {c: row.get(c) for c in shape.carried_columns}
        out[ROW] = row_index
        if shape.id_column == shape.default_id and shape.default_id not in row:
            out[shape.default_id] = row_index
        failed = skipped = False
        for (step, counts, names, acc, price), r in zip(self._recording, results, strict=True):
            # what the row's answer cost (also when it came from the cache: it was paid once)
            flatten_result(step.name, r, names, out, acc, None if price is None else step.row_cost(r, price))
            status = r.status
            counts[status] += 1
            if status == "error" or status == "invalid":
                failed = True
            elif status == "skipped":
                skipped = True
        c = self.rows
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
            if c.streak >= self.stop_after:
                self.set_abort(
                    RunAborted(
                        f"{c.streak} rows in a row failed with the same error, stopping instead of failing "
                        f"every row: {bad.error}"
                    )
                )
        else:
            c.streak = 0
            c.streak_sig = None
            if skipped:
                c.skipped += 1
            else:
                c.ok += 1
        return out
