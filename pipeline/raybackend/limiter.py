"""The global limiter of one provider key (or key pool): leases of admissions granted to every worker.

It is a plain asyncio object, run as a named async Ray actor by the backend (and directly, on a fake
clock, by the tests). Inside it is the local backend's own gate (`gates.LocalGates`: an AdmissionGate,
or a KeyPool for several keys), so every guarantee of a local run holds for the cluster as a whole:
rolling windows never above the limit, a smooth pace, each second held to its share, 429 pauses.

A worker asks for a lease: the token estimates of the requests it has waiting (at most about a quarter
second of its share). The limiter admits them one by one through the gate, which paces them among every
worker's leases, until the lease spans `span_s`; it answers with each grant's age. The worker sends each
granted request a fixed delay after its grant (see `leasing.LeasedGate`), so what the server receives is
the limiter's admissions shifted in time: the same counts in every window. Grants a worker did not use
come back as refunds; token corrections, rate headers and 429s come back in batches (`Settlement`).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import RequestError
from ..gates import LocalGates
from ..job.profiles import ResolvedProvider
from ..limits import GateStats, Ticket
from ..ports import Gate
from ..retry import RateHeaders


@dataclass(frozen=True, slots=True)
class Grant:
    """One admitted request: its id at the limiter, the tokens reserved, when it was admitted (the
    limiter's loop time) and the pool key it goes out with (index into the keys, or None)."""

    gid: int
    tokens: int
    at: float
    key_index: int | None = None


@dataclass(frozen=True, slots=True)
class LeaseReply:
    grants: tuple[Grant, ...]
    started: float  # the limiter's loop time when the call began, and when it answered: with the
    answered: float  # worker's own two times of the call they give the offset of the two clocks
    rate_factor: float  # the gate's pace after 429s (1.0: full)
    workers: int = 1  # workers heard from lately: a worker's share is the limits over these


@dataclass
class Settlement:
    """What a worker reports since its last call: releases (gid, actual tokens or None, rejected),
    the latest rate headers (with the gid they came on), 429s (retry_after, gid, concurrency), refused keys."""

    releases: list[tuple[int, int | None, bool]] = field(default_factory=list)
    headers: tuple[RateHeaders, int | None] | None = None
    slowdowns: list[tuple[float | None, int | None, bool]] = field(default_factory=list)
    refusals: list[tuple[int, RequestError]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.releases or self.headers or self.slowdowns or self.refusals)


# Grants are sent by other processes, each a little early or late against its schedule (timers, the
# clocks' offset): the limiter's windows are this much longer than the local gate's (whose own margin
# covers network jitter), so a second's share still holds at the server. About 0.5% of the pace.
JITTER_MARGIN = 0.005
ACTIVE_S = 2.0  # a worker that leased within this long (scaled with the period) counts as active
GIVE_UP_SPANS = 3.0  # a lease's grants come within this many spans of its first (see `lease`)


def widened(provider: ResolvedProvider) -> ResolvedProvider:
    """The provider with its period JITTER_MARGIN longer (the limits per period unchanged), and no
    concurrency limit: each worker holds its share of that one (see `leasing.LeasedGate`)."""
    lim = provider.limits
    update = {"period_s": lim.period_s * (1 + JITTER_MARGIN), "concurrency": None}
    return dataclasses.replace(provider, limits=lim.model_copy(update=update))


class Limiter:
    """Grants leases of one provider key's (or key pool's) admissions to the workers of a cluster."""

    def __init__(self, provider: ResolvedProvider, api_key: str | None, keys: Sequence[str] = ()) -> None:
        self.provider = provider
        self.api_key = api_key
        self.keys = tuple(keys)
        self._gate: Gate | None = None  # made on first use, on the loop that runs the limiter
        self._tickets: dict[int, tuple[str, Ticket]] = {}  # gid -> (worker, ticket): granted, not settled
        self._next = 0
        self._primed = False
        self.calls = 0  # lease and settle calls received
        self.granted = 0
        self.refunded = 0
        self.seen: dict[str, float] = {}  # worker -> loop time it last called

    @property
    def gate(self) -> Gate:
        """The local backend's gate for this key (a KeyPool for several keys)."""
        if self._gate is None:
            pools: Mapping[str, Sequence[str]] = {self.provider.name: self.keys} if len(self.keys) > 1 else {}
            self._gate = LocalGates(pools)(widened(self.provider), self.api_key)
        return self._gate

    async def lease(
        self, worker: str, tokens: Sequence[int], span_s: float, settle: Settlement | None = None
    ) -> LeaseReply:
        """Admit requests of `tokens` (in order) while the lease spans less than `span_s`; the grants."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        self.calls += 1
        self.seen[worker] = start
        if settle:
            self._settle(settle)
        if not tokens:
            # an empty lease: a worker measuring the clocks before the run. The gate is not made (or
            # primed) for it: a gate left idle after it is made banks the gap as pace credit, up to
            # half a second of grants let out at once when the run starts.
            now = loop.time()
            factor = self._gate.stats().rate_factor if self._gate is not None else 1.0
            return LeaseReply((), start, now, factor, max(1, self._recent(now)))
        gate = self.gate
        if not self._primed:
            # The local gate counts requests admitted before its first answer from that answer (it does
            # not yet know how late the server sees them). Here every grant goes out a fixed delay after
            # it (`leasing.LeasedGate`), so its time is known: one empty admission given back at once
            # tells the gate so, instead of the first releases (a second late) pushing a second of grants
            # later in its windows.
            self._primed = True
            gate.release(await gate.admit(0), rejected=True)
        admitted: list[tuple[int, int, float, int | None]] = []
        first: float | None = None
        for amount in tokens:
            if first is None:
                ticket = await gate.admit(amount)
            else:
                # An admission waits behind those of the other leases in flight (two per worker), so a
                # lease's last grant comes at most about 3 spans after its first; past that it is given
                # up (leaving the gate's queue costs the pace a little: it is the exception).
                try:
                    async with asyncio.timeout_at(first + GIVE_UP_SPANS * span_s):
                        ticket = await gate.admit(amount)
                except TimeoutError:
                    break
            now = loop.time()
            first = now if first is None else first
            gid = self._next
            self._next += 1
            self._tickets[gid] = (worker, ticket)
            key_index = self.keys.index(ticket.key) if ticket.key is not None and ticket.key in self.keys else None
            admitted.append((gid, amount, now, key_index))
        self.granted += len(admitted)
        now = loop.time()
        return LeaseReply(
            tuple(Grant(gid, amount, at, k) for gid, amount, at, k in admitted),
            start,
            now,
            gate.stats().rate_factor,
            max(1, self._recent(now)),
        )

    def _recent(self, now: float) -> int:
        """Workers heard from lately."""
        return sum(1 for t in self.seen.values() if now - t <= ACTIVE_S * self.provider.limits.period_s / 60)

    async def settle(self, worker: str, settle: Settlement) -> None:
        """A worker's releases, corrections, rate headers and 429s (without a lease)."""
        self.calls += 1
        self.seen[worker] = asyncio.get_running_loop().time()
        self._settle(settle)

    def _settle(self, s: Settlement) -> None:
        gate = self.gate
        for gid, actual, rejected in s.releases:
            held = self._tickets.pop(gid, None)
            if held is None:
                continue  # granted before a restart of the limiter, or already forgotten
            self.refunded += rejected
            gate.release(held[1], actual, rejected=rejected)
        if s.headers is not None:
            headers, on = s.headers
            t = self._tickets.get(on) if on is not None else None
            gate.observe(headers, t[1] if t else None)
        for retry_after, on, concurrency in s.slowdowns:
            t = self._tickets.get(on) if on is not None else None
            gate.slow_down(retry_after, ticket=t[1] if t else None, concurrency=concurrency)
        refused = getattr(gate, "refused", None)
        for gid, error in s.refusals:
            t = self._tickets.get(gid)
            if refused is not None and t is not None:
                refused(t[1], error)

    async def forget(self, worker: str) -> int:
        """A worker died: release what it held (it may have been sent: nothing is refunded)."""
        gone = [gid for gid, (w, _) in self._tickets.items() if w == worker]
        for gid in gone:
            self.gate.release(self._tickets.pop(gid)[1])
        self.seen.pop(worker, None)
        return len(gone)

    async def stats(self) -> tuple[GateStats, dict[str, int]]:
        """The gate's figures, and the limiter's own: calls, grants, refunds, grants outstanding."""
        st = self.gate.stats()
        return st, {
            "calls": self.calls,
            "granted": self.granted,
            "refunded": self.refunded,
            "outstanding": len(self._tickets),
        }
