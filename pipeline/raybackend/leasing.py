"""The worker side of the global limiter: a Gate that sends requests on grants leased from a limiter.

`LeasedGate` implements `ports.Gate`. Requests wait in it (highest priority first, then in arrival
order); it asks its limiter for a lease covering what waits (at most a quarter second of this worker's
share per call, two calls at most in flight) and hands each grant to the head waiter a fixed delay
(`delay_s`) after the limiter admitted it. The limiter's admissions are paced and held to every window;
a constant shift keeps every window's count, so the server sees what the limiter admitted. A grant
nobody waits for any more goes back as a refund. Releases, token corrections, rate headers and 429s go
back in batches (every `flush_s`, or with the next lease; a 429 at once, and it holds this worker's
grants not yet used for the pause as well).

When the limiter cannot be reached, the gate falls back to a local gate under a static share of the
limits (limit / workers) for the rest of the run, and says so (event `gate.limiter_unreachable`).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import hashlib
import itertools
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..errors import RequestError
from ..gates import LocalGates, local_gate
from ..job.profiles import ResolvedProvider
from ..keypool import is_key_refusal
from ..limits import GateStats, Ticket
from ..logs import event
from ..ports import Gate
from ..retry import RateHeaders
from .limiter import Grant, LeaseReply, Limiter, Settlement

log = logging.getLogger(__name__)

SPAN_S = 0.25  # a lease covers about this much of the worker's share (scaled with the limits' period)
DELAY_S = 1.0  # a grant is used this long after the limiter admitted it (above a lease's longest span)
FLUSH_S = 0.1  # releases and corrections go back at least this often
MAX_LEASES = 2  # lease calls of one gate in flight at once (the next is asked while one is used)
MAX_GRANTS = 256  # requests per lease, at most
# A grant goes out when due. One whose time passed more than LATE_S ago (the loop woke late: a busy
# loop, a descheduled process) is given back instead: sent now, it would land in a later second than
# the limiter counted it in and crowd that second. Within LATE_S, the margins cover it (the local gate's
# 1% and the limiter's 0.5%: a second's share holds at the server while no request is later than about
# 15 ms of a second).
LATE_S = 0.015
RECONNECT_S = 5.0  # a worker on its static share asks the limiter again this often (scaled like the rest)
CLOCK_SAMPLES = 32  # the clock offset is the one of the call with the shortest round trip of these


class LimiterGone(Exception):
    """The limiter cannot be reached (its actor died, or its node)."""


class LimiterLink(Protocol):
    """How a worker calls its limiter: a Ray actor handle (`RayLink`) or the object itself (`LocalLink`)."""

    def lease(self, worker: str, tokens: list[int], span_s: float, settle: Settlement) -> Awaitable[LeaseReply]: ...

    def settle(self, worker: str, settle: Settlement) -> Awaitable[None]: ...


class LocalLink:
    """A limiter in this process (tests on the fake clock; one process holding every worker)."""

    def __init__(self, limiter: Limiter) -> None:
        self.limiter = limiter

    async def lease(self, worker: str, tokens: list[int], span_s: float, settle: Settlement) -> LeaseReply:
        return await self.limiter.lease(worker, tokens, span_s, settle)

    async def settle(self, worker: str, settle: Settlement) -> None:
        await self.limiter.settle(worker, settle)


def limiter_name(provider: ResolvedProvider, api_key: str | None, keys: Sequence[str] = ()) -> str:
    """The limiter's name for a provider's URL, key(s) and limits: jobs that share them share it."""
    who = list(keys) if len(keys) > 1 else api_key
    ident = f"{provider.base_urls[0]}|{who}|{provider.limits.model_dump_json()}"
    return "pipeline-limiter-" + hashlib.sha256(ident.encode()).hexdigest()[:24]


def static_share(provider: ResolvedProvider, workers: int) -> ResolvedProvider:
    """The provider with its limits divided among `workers` (the fallback without a limiter)."""
    lim = provider.limits
    update: dict[str, int] = {}
    for name in ("rpm", "tpm", "ipm"):
        value = getattr(lim, name)
        if isinstance(value, int):
            update[name] = max(1, value // workers)
    if lim.concurrency is not None:
        update["concurrency"] = max(1, math.ceil(lim.concurrency / workers))
    return dataclasses.replace(provider, limits=lim.model_copy(update=update))


@dataclass(eq=False)
class _Waiter:
    tokens: int
    priority: float
    seq: int
    fut: asyncio.Future[Ticket]


class _UseFallback(Exception):
    """The limiter went away while this request waited: admit it on the fallback gate."""


class LeasedGate:
    """A `ports.Gate` whose admissions are leased from a (global) `Limiter`."""

    def __init__(
        self,
        provider: ResolvedProvider,
        link: LimiterLink,
        worker: str,
        workers: int,
        *,
        keys: Sequence[str] = (),
        api_key: str | None = None,
        span_s: float | None = None,
        delay_s: float | None = None,
        flush_s: float | None = None,
    ) -> None:
        self.provider = provider
        self.link = link
        self.worker = worker
        self.workers = max(1, workers)
        self.keys = tuple(keys)
        self.api_key = api_key
        scale = provider.limits.period_s / 60.0
        self.span_s = span_s if span_s is not None else SPAN_S * scale
        self.delay_s = delay_s if delay_s is not None else max(DELAY_S * scale, 4 * self.span_s)
        self.flush_s = flush_s if flush_s is not None else FLUSH_S * scale
        self.late_s = LATE_S * scale
        self._shape = local_gate(provider)  # the full limits: check_fits, token_share, what they are
        self.rpm, self.tpm, self.concurrency = self._shape.rpm, self._shape.tpm, self._shape.concurrency
        self.period_s = self._shape.period_s
        self.burst_s = self._shape.burst_s
        self._waiters: list[_Waiter] = []
        self._seq = itertools.count()
        self._slots: list[tuple[float, int, Grant]] = []  # (due, order, grant), by due time
        self._order = itertools.count()
        self._asked = 0  # requests asked for by the lease calls in flight
        self._leases = 0
        self._held: dict[Ticket, Grant] = {}
        self._settle = Settlement()
        self._flush: asyncio.TimerHandle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._hold_until = float("-inf")
        self._clock: deque[tuple[float, float]] = deque(maxlen=CLOCK_SAMPLES)  # (round trip, offset)
        self._tasks: set[asyncio.Task[None]] = set()
        self._removed: set[str] = set()
        conc = provider.limits.concurrency
        self._conc_cap = max(1, conc // self.workers) if conc is not None else None
        self._conc_used = 0  # requests of this worker in flight (handed a grant, not yet released)
        # how long a request holds its slot (moving average of the last ~10); until answers say, a guess of
        # a quarter second (too long a guess starves the first second: fewer grants pending than it needs)
        self._busy_s = self.span_s
        self._fallback: Gate | None = None
        self._fallback_tickets: dict[Ticket, Gate] = {}  # admitted on a static share: released there
        self.reconnect_s = RECONNECT_S * scale
        self.reconnects = 0  # times the limiter was reached again after a fall back
        self.rate_factor = 1.0
        self._active = 1  # workers at work, as the limiter last said (one until it says)
        self.admitted = 0
        self.leases = 0
        self.lease_s = 0.0  # time spent in lease calls (the limiter's pacing included)
        self.unused = 0  # grants given back
        self.late = 0  # grants given back for being more than late_s past their time (the loop woke late)
        self.max_late_s = 0.0
        self.fallback_reason: str | None = None

    # -- what callers read -------------------------------------------------------------------
    def check_fits(self, tokens: int) -> None:
        self._shape.check_fits(tokens)

    def token_share(self, seconds: float = 1.0) -> int | None:
        return self._shape.token_share(seconds)

    def waiting(self) -> int:
        return self._fallback.waiting() if self._fallback is not None else len(self._waiters)

    def stats(self) -> GateStats:
        if self._fallback is not None:
            return self._fallback.stats()
        return dataclasses.replace(
            self._shape.stats(),
            in_flight=len(self._held),
            admitted=self.admitted,
            waiting=len(self._waiters),
            rate_factor=self.rate_factor,
            paused_until=self._hold_until if self._hold_until > asyncio.get_running_loop().time() else None,
        )

    # -- admission ---------------------------------------------------------------------------
    async def admit(self, tokens: int | Callable[[], int], priority: float = 0.0) -> Ticket:
        amount = tokens if isinstance(tokens, int) else tokens()
        self.check_fits(amount)
        if self._fallback is not None:
            fallback = self._fallback
            ticket = await fallback.admit(amount, priority)
            self._fallback_tickets[ticket] = fallback
            return ticket
        fut: asyncio.Future[Ticket] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(amount, priority, next(self._seq), fut)
        self._waiters.append(waiter)
        self._pump()
        try:
            return await fut
        except _UseFallback:
            return await self.admit(amount, priority)
        except asyncio.CancelledError:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            elif fut.done() and not fut.cancelled() and fut.exception() is None:
                self.release(fut.result(), rejected=True)  # handed a grant just as it was cancelled
            raise

    def _queue(self) -> list[_Waiter]:
        return sorted(self._waiters, key=lambda w: (-w.priority, w.seq))

    def _per_lease(self, queue: list[_Waiter]) -> list[int]:
        """Token estimates of the waiters a new lease should cover: about span_s of this worker's share."""
        covered = len(self._slots) + self._asked
        todo = queue[covered:]
        if self._conc_cap is not None:
            # This worker's share of the concurrency limit is held here, not at the limiter (a grant is
            # leased a second ahead: a slot held from grant to answer would cut the throughput). Grants
            # pending are bounded by what the free slots can take when they fall due: cap x delay / the
            # time a request holds its slot.
            pending = int(self._conc_cap * self.delay_s / max(self._busy_s, 1e-3))
            todo = todo[: max(0, pending - covered)]
        if not todo:
            return []
        # this worker's share: the limits over the workers the limiter heard from lately (while the
        # others start, or after they finish, the ones at work take the whole pace)
        share_s = self.span_s / self.period_s / max(1, min(self.workers, self._active))
        cap = MAX_GRANTS
        if self.rpm:
            cap = min(cap, max(1, math.ceil(self.rpm * share_s)))
        elif self.concurrency:
            cap = min(cap, max(1, math.ceil(self.concurrency / self.workers)))
        out: list[int] = []
        budget = self.tpm * share_s if self.tpm else None
        for w in todo[:cap]:
            if out and budget is not None and sum(out) + w.tokens > budget:
                break
            out.append(w.tokens)
        return out

    def _pump(self) -> None:
        """Ask for a lease when waiters are not covered by grants or leases in flight."""
        if self._fallback is not None or self._leases >= MAX_LEASES:
            return
        tokens = self._per_lease(self._queue())
        if tokens:
            self._leases += 1  # counted from here: a second pump before the task runs sees it
            self._asked += len(tokens)
            self._spawn(self._lease(tokens))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _lease(self, tokens: list[int]) -> None:
        loop = asyncio.get_running_loop()
        settle, self._settle = self._settle, Settlement()
        t0 = loop.time()
        try:
            reply = await self.link.lease(self.worker, tokens, self.span_s, settle)
        except LimiterGone as exc:
            self._fall_back(str(exc))
            return
        finally:
            self._leases -= 1
            self._asked -= len(tokens)
        recv = loop.time()
        self.leases += 1
        self.lease_s += recv - t0
        offset = self._heard(reply, t0, recv)
        for g in reply.grants:
            due = max(g.at - offset + self.delay_s, self._hold_until)
            bisect.insort(self._slots, (due, next(self._order), g))
        self._arm()
        self._pump()

    def _heard(self, reply: LeaseReply, t0: float, recv: float) -> float:
        """A lease's reply: the pace, the workers at work, and the offset of the limiter's clock to ours
        (NTP's estimate, from the call with the shortest round trip)."""
        self.rate_factor = reply.rate_factor
        self._active = reply.workers
        rtt = max(0.0, (recv - t0) - (reply.answered - reply.started))
        self._clock.append((rtt, ((reply.started - t0) + (reply.answered - recv)) / 2))
        return min(self._clock)[1]

    async def warm(self, calls: int = 3) -> None:
        """Before the run: a few empty leases, so the first grants are timed on a measured clock offset
        (a first call to an actor pays for its connection, which skews the one estimate it gives) and the
        limiter counts this worker among those at work from the start."""
        loop = asyncio.get_running_loop()
        for _ in range(calls):
            if self._fallback is not None:
                return
            t0 = loop.time()
            try:
                reply = await self.link.lease(self.worker, [], self.span_s, Settlement())
            except LimiterGone as exc:
                self._fall_back(str(exc))
                return
            self._heard(reply, t0, loop.time())

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._slots:
            self._timer = asyncio.get_running_loop().call_at(self._slots[0][0], self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = asyncio.get_running_loop().time()
        while self._slots and self._slots[0][0] <= now:
            due, _, grant = self._slots.pop(0)
            queue = self._queue()
            if now - due > self.late_s:
                self.late += 1
                self._settle.releases.append((grant.gid, None, True))
                self._flush_soon()
                continue
            self.max_late_s = max(self.max_late_s, now - due)
            if not queue:
                self.unused += 1
                self._settle.releases.append((grant.gid, None, True))
                self._flush_soon()
                continue
            if self._conc_cap is not None and self._conc_used >= self._conc_cap:
                self.unused += 1  # every slot of this worker's concurrency share is busy
                self._settle.releases.append((grant.gid, None, True))
                self._flush_soon()
                continue
            waiter = queue[0]
            self._waiters.remove(waiter)
            self._conc_used += 1
            ticket = Ticket(self._shape, waiter.tokens, now, (None, None, None, None))
            if grant.key_index is not None:
                ticket.key = self.keys[grant.key_index]
            self._held[ticket] = grant
            self.admitted += 1
            waiter.fut.set_result(ticket)
        self._arm()
        self._pump()

    # -- what comes back ---------------------------------------------------------------------
    def release(self, ticket: Ticket, actual_tokens: int | None = None, *, rejected: bool = False) -> None:
        fallback = self._fallback_tickets.pop(ticket, None)
        if fallback is not None:
            fallback.release(ticket, actual_tokens, rejected=rejected)
            return
        grant = self._held.pop(ticket, None)
        if grant is None:
            return
        self._conc_used -= 1
        held = asyncio.get_running_loop().time() - ticket.started_at
        self._busy_s += 0.1 * (held - self._busy_s)
        if actual_tokens is None and ticket.reserved != grant.tokens:
            actual_tokens = ticket.reserved  # the request that took the grant estimated otherwise
        self._settle.releases.append((grant.gid, actual_tokens, rejected))
        self._flush_soon()

    def observe(self, headers: RateHeaders, ticket: Ticket | None = None) -> None:
        if self._fallback is not None:
            self._fallback.observe(headers, ticket if ticket in self._fallback_tickets else None)
            return
        grant = self._held.get(ticket) if ticket is not None else None
        self._settle.headers = (headers, grant.gid if grant else None)

    def slow_down(
        self, retry_after: float | None = None, *, ticket: Ticket | None = None, concurrency: bool = False
    ) -> None:
        if self._fallback is not None:
            t = ticket if ticket in self._fallback_tickets else None
            self._fallback.slow_down(retry_after, ticket=t, concurrency=concurrency)
            return
        if concurrency:
            # the server names the parallel requests: this worker's share comes down by one
            if self._conc_cap is not None:
                self._conc_cap = max(1, self._conc_cap - 1)
            self._send_settlement()
            return
        grant = self._held.get(ticket) if ticket is not None else None
        self._settle.slowdowns.append((retry_after, grant.gid if grant else None, concurrency))
        # grants not yet used wait for the pause too (the limiter pauses the grants to come)
        now = asyncio.get_running_loop().time()
        pause = retry_after if retry_after and retry_after > 0 else self.period_s / 60.0
        self._hold_until = max(self._hold_until, now + pause)
        self._slots = sorted((max(d, self._hold_until), o, g) for d, o, g in self._slots)
        self._arm()
        self._send_settlement()

    def refused(self, ticket: Ticket, error: RequestError) -> bool:
        """A key pool's key refused for good: the limiter takes it out; True while other keys are left."""
        if self._fallback is not None:
            return self._fallback.refused(ticket, error)
        if len(self.keys) < 2 or ticket.key is None or not is_key_refusal(error):
            return False
        grant = self._held.get(ticket)
        if grant is not None:
            self._settle.refusals.append((grant.gid, error))
            self._send_settlement()
        self._removed.add(ticket.key)
        return any(k not in self._removed for k in self.keys)

    def _flush_soon(self) -> None:
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(self.flush_s, self._send_settlement)

    def _send_settlement(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if not self._settle or self._fallback is not None:
            return
        settle, self._settle = self._settle, Settlement()
        self._spawn(self._settle_call(settle))

    async def _settle_call(self, settle: Settlement) -> None:
        try:
            await self.link.settle(self.worker, settle)
        except LimiterGone as exc:
            self._fall_back(str(exc))

    def _fall_back(self, why: str) -> None:
        if self._fallback is not None:
            return
        share = static_share(self.provider, self.workers)
        pools: Mapping[str, Sequence[str]] = {share.name: self.keys} if len(self.keys) > 1 else {}
        self._fallback = LocalGates(pools)(share, self.api_key)
        self.fallback_reason = why
        lim = share.limits
        event(
            log,
            logging.WARNING,
            "gate.limiter_unreachable",
            provider=self.provider.name,
            worker=self.worker,
            share=f"rpm={lim.rpm} tpm={lim.tpm} concurrency={lim.concurrency} (limits / {self.workers})",
            why=why[:200],
        )
        log.warning(
            "provider `%s`: the global limiter cannot be reached (%s); worker %s falls back to a static "
            "share of the limits (1/%d: rpm=%s tpm=%s)",
            self.provider.name,
            why[:200],
            self.worker,
            self.workers,
            lim.rpm,
            lim.tpm,
        )
        for w in self._waiters:
            if not w.fut.done():
                w.fut.set_exception(_UseFallback())
        self._waiters.clear()
        self._spawn(self._reconnect())

    async def _reconnect(self) -> None:
        """On a static share, ask the limiter every reconnect_s (an empty settlement); once it answers (Ray
        restarted it, or a run made it again under its name) admissions are leased again. Requests admitted
        on the static share are released there."""
        while self._fallback is not None:
            await asyncio.sleep(self.reconnect_s)
            try:
                await self.link.settle(self.worker, Settlement())
            except LimiterGone:
                continue
            self._fallback = None
            self.reconnects += 1
            event(log, logging.WARNING, "gate.limiter_back", provider=self.provider.name, worker=self.worker)
            log.warning(
                "provider `%s`: the global limiter answers again; worker %s leases from it again",
                self.provider.name,
                self.worker,
            )
            self._pump()

    async def close(self) -> None:
        """Give back every grant not used and send what is left to settle."""
        for _, _, grant in self._slots:
            self._settle.releases.append((grant.gid, None, True))
        self._slots.clear()
        if self._timer is not None:
            self._timer.cancel()
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if self._settle and self._fallback is None:
            with contextlib.suppress(LimiterGone):
                await self.link.settle(self.worker, self._settle)
        self._settle = Settlement()
        for t in list(self._tasks):
            t.cancel()


class LeasingGates:
    """A `ports.GateFactory`: one LeasedGate per provider URL and key(s), each with its limiter's link."""

    def __init__(
        self,
        links: Callable[[ResolvedProvider, str | None, Sequence[str]], LimiterLink],
        worker: str,
        workers: int,
        key_pools: Mapping[str, Sequence[str]] | None = None,
        **options: float,
    ) -> None:
        self.links = links
        self.worker = worker
        self.workers = workers
        self.pools = dict(key_pools or {})
        self.options = options
        self.gates: dict[str, LeasedGate] = {}

    def __call__(self, provider: ResolvedProvider, api_key: str | None) -> Gate:
        keys = tuple(self.pools.get(provider.name, ()))
        name = limiter_name(provider, api_key, keys)
        if name not in self.gates:
            self.gates[name] = LeasedGate(
                provider,
                self.links(provider, api_key, keys),
                self.worker,
                self.workers,
                keys=keys,
                api_key=api_key,
                **self.options,
            )
        return self.gates[name]

    async def close(self) -> None:
        for g in self.gates.values():
            await g.close()
