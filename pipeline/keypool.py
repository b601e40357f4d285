"""Key pools: several API keys of one provider, each with its own admission gate and 429 state.

A `KeyPool` offers what `ProviderClient` uses of an `AdmissionGate` (admit, release, observe,
slow_down, check_fits, token_share, stats). Each request goes to the key that can admit it soonest;
when every key is busy it waits in that key's queue (it never fails for it). The ticket names its key
(`Ticket.key`), and the transport sends that key. A key the server refuses (401/403, quota) leaves the
pool with a warning naming it masked; requests queued on it go to the other keys, and the run stops
only when the last key is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import RequestError, mask_secret
from .limits import REASONS, AdmissionGate, GateStats, Ticket
from .retry import RateHeaders

__all__ = ["KeyPool", "PoolStats", "make_gate", "read_keys"]

log = logging.getLogger("pipeline.keypool")

# Refusals that are about the key (its account, its quota), not the request: the key leaves the pool.
KEY_CODES = frozenset(
    {
        "insufficient_quota",
        "insufficient_user_quota",
        "invalid_api_key",
        "account_deactivated",
        "billing_hard_limit_reached",
        "access_terminated",
        "pre_consume_token_quota_failed",
    }
)


def read_keys(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """The keys the variables `names` hold (a variable may hold several, comma-separated), and the
    names of the variables that are unset or empty. Keys keep their order; a repeated key counts once."""
    keys: list[str] = []
    unset: list[str] = []
    for name in names:
        value = os.environ.get(name, "")
        found = [k.strip() for k in value.split(",") if k.strip()]
        if not found:
            unset.append(name)
        keys.extend(k for k in found if k not in keys)
    return keys, unset


@dataclass
class KeyStats:
    """One key of a pool: what it did and whether it is still used."""

    masked: str  # e.g. sk-...abcd
    requests: int  # admissions on this key
    rate_limited: int  # 429s this key answered
    active: bool
    why_removed: str | None = None
    gate: GateStats | None = None

    def describe(self) -> str:
        state = "active" if self.active else f"removed ({self.why_removed})"
        return f"key {self.masked}: {self.requests:,} requests, {self.rate_limited:,} 429s, {state}"


@dataclass
class PoolStats(GateStats):
    """A pool's gate figures summed over its active keys, and each key's own line."""

    keys: list[KeyStats] = field(default_factory=list)

    def describe(self) -> str:
        active = sum(k.active for k in self.keys)
        head = f"{len(self.keys)} keys" + ("" if active == len(self.keys) else f" ({active} active)")
        return f"{head}, {super().describe()}"

    def key_lines(self) -> list[str]:
        return [k.describe() for k in self.keys]


class _Key:
    __slots__ = ("active", "gate", "gone", "in_flight", "key", "queued", "rate_limited", "requests", "why_removed")

    def __init__(self, key: str, gate: AdmissionGate) -> None:
        self.key = key
        self.gate = gate
        self.active = True
        self.why_removed: str | None = None
        self.queued = 0  # routed here, not yet admitted
        self.in_flight = 0
        self.requests = 0
        self.rate_limited = 0
        self.gone: asyncio.Future[None] | None = None  # set when the key leaves the pool

    def full(self) -> bool:
        """Every concurrency slot of this key taken or promised to a request routed here."""
        limit = self.gate.stats().concurrency
        return limit is not None and self.in_flight + self.queued >= limit

    def stats(self) -> KeyStats:
        return KeyStats(
            mask_secret(self.key), self.requests, self.rate_limited, self.active, self.why_removed, self.gate.stats()
        )


class KeyPool:
    """Admission over several keys of one provider, each under the provider's limits."""

    def __init__(self, provider: str, keys: Sequence[str], new_gate: Callable[[], AdmissionGate]) -> None:
        if len(keys) < 1:
            raise ValueError("a key pool needs at least one key")
        self.provider = provider
        self._keys = [_Key(k, new_gate()) for k in keys]
        self._by_key = {m.key: m for m in self._keys}
        self._held: set[Ticket] = set()  # admitted, not yet released
        self._waiters: deque[asyncio.Future[None]] = deque()  # callers waiting for any key's free slot
        first = self._keys[0].gate
        # what callers read of a gate: the limits of one key
        self.rpm, self.tpm, self.concurrency, self.period_s = first.rpm, first.tpm, first.concurrency, first.period_s

    @property
    def active(self) -> list[_Key]:
        return [m for m in self._keys if m.active]

    # -- admission ---------------------------------------------------------------------------

    def check_fits(self, tokens: int) -> None:
        self._keys[0].gate.check_fits(tokens)  # every key has the provider's limits

    def token_share(self, seconds: float = 1.0) -> int | None:
        """One key's token budget for `seconds`: a request (e.g. an embedding batch) goes to one key."""
        return (self.active or self._keys)[0].gate.token_share(seconds)

    async def admit(self, tokens: int | Callable[[], int], priority: float = 0.0) -> Ticket:
        """A ticket on the key that can admit soonest; re-routed if that key leaves the pool meanwhile."""
        self.check_fits(tokens if isinstance(tokens, int) else tokens())
        while True:
            await self._free_slot()
            member = self._pick(tokens if isinstance(tokens, int) else None)
            ticket = await self._admit_on(member, tokens, priority)
            if ticket is not None:
                return ticket

    async def _free_slot(self) -> None:
        """While every key has all its concurrency slots taken (or promised), wait for a release: the
        request then goes to the key that freed one, not to a queue picked before anyone finished."""
        loop = asyncio.get_running_loop()
        while all(m.full() for m in self.active):
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append(fut)
            try:
                await fut
            except BaseException:
                if fut.done() and not fut.cancelled():
                    self._wake()  # woken, then cancelled: pass the turn on
                raise
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)

    def _wake(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def _pick(self, tokens: int | None) -> _Key:
        members = self.active  # never empty: the last key is not removed (its refusal stops the run)
        members = [m for m in members if not m.full()] or members
        if len(members) == 1:
            return members[0]
        now = asyncio.get_running_loop().time()

        def soonest(m: _Key) -> tuple[float, float, int]:
            st = m.gate.stats()
            # Seconds until this key could admit one more: its 429 pause, then the queue ahead of it at
            # its pace (requests and tokens); then how full its concurrency is; then least used.
            wait = max(0.0, (st.paused_until or now) - now)
            ahead = m.queued + 1
            factor = max(st.rate_factor, 1e-3)
            if st.rpm:
                wait += ahead * m.gate.period_s / (st.rpm * factor)
            if st.tpm and tokens:
                wait += ahead * tokens * m.gate.period_s / (st.tpm * factor)
            load = (m.in_flight + m.queued) / st.concurrency if st.concurrency else 0.0
            return wait, load, m.requests

        return min(members, key=soonest)

    async def _admit_on(self, m: _Key, tokens: int | Callable[[], int], priority: float) -> Ticket | None:
        """Wait for `m`'s gate; None if `m` left the pool before admitting (the caller routes again)."""
        loop = asyncio.get_running_loop()
        if m.gone is None:
            m.gone = loop.create_future()
        gone = m.gone
        m.queued += 1
        inner = asyncio.ensure_future(m.gate.admit(tokens, priority))
        try:
            try:
                waiters: set[asyncio.Future[Any]] = {inner, gone}
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                m.queued -= 1
                if not inner.done():
                    inner.cancel()
            ticket = await inner
        except asyncio.CancelledError:
            self._wake()  # the slot promised to this request is free again
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                if inner.done() and not inner.cancelled() and inner.exception() is None:
                    m.gate.release(inner.result(), rejected=True)
                raise
            return None  # the inner admission was cancelled because the key left the pool
        if not m.active:
            m.gate.release(ticket, rejected=True)
            self._wake()
            return None
        ticket.key = m.key
        self._held.add(ticket)
        m.in_flight += 1
        m.requests += 1
        return ticket

    def release(self, ticket: Ticket, actual_tokens: int | None = None, *, rejected: bool = False) -> None:
        m = self._member(ticket)
        if ticket in self._held:
            self._held.discard(ticket)
            m.in_flight -= 1
        m.gate.release(ticket, actual_tokens, rejected=rejected)
        if self._waiters:
            self._wake()

    def _member(self, ticket: Ticket) -> _Key:
        if ticket.key is None or ticket.key not in self._by_key:
            raise ValueError("ticket belongs to no key of this pool")
        return self._by_key[ticket.key]

    # -- what the server says ----------------------------------------------------------------

    def observe(self, headers: RateHeaders, ticket: Ticket | None = None) -> None:
        """x-ratelimit-* headers describe the key that was sent: its gate takes them."""
        if ticket is not None and ticket.key in self._by_key:
            self._by_key[ticket.key].gate.observe(headers)

    def slow_down(
        self, retry_after: float | None = None, *, ticket: Ticket | None = None, concurrency: bool = False
    ) -> None:
        """A 429 pauses and slows the key that answered it, not the others."""
        members = [self._member(ticket)] if ticket is not None else self._keys
        for m in members:
            m.rate_limited += ticket is not None
            m.gate.slow_down(retry_after, ticket=ticket, concurrency=concurrency)

    def refused(self, ticket: Ticket, error: RequestError) -> bool:
        """The key of `ticket` was refused for good (401/403, quota): take it out of the pool.

        True while other keys are left (the caller sends again, on another key); False when it was the
        last one (the caller stops the run as for a single key). Requests queued on it move on.
        """
        if not is_key_refusal(error):
            return False  # the job is wrong, not the key: every key would say the same
        m = self._member(ticket)
        if m.active:
            others = [k for k in self._keys if k.active and k is not m]
            if not others:
                return False
            m.active = False
            m.why_removed = f"{error.status or ''} {error.code or ''}".strip() or "refused"
            log.warning(
                "provider `%s`: key %s removed from the pool after %s; %d key(s) left",
                self.provider,
                mask_secret(m.key),
                error.short(),
                len(others),
                extra={"provider": self.provider, "key": mask_secret(m.key)},
            )
            if m.gone is not None and not m.gone.done():
                m.gone.set_result(None)
        return any(k.active for k in self._keys)

    # -- observation -------------------------------------------------------------------------

    def waiting(self) -> int:
        """Callers waiting for admission on the active keys (on every key when none is active)."""
        gates = [m.gate for m in self._keys if m.active] or [m.gate for m in self._keys]
        return sum(g.waiting() for g in gates)

    def stats(self) -> PoolStats:
        """The active keys' figures summed (limits too: the pool's capacity), with every key's own."""
        keys = [m.stats() for m in self._keys]
        live = [k.gate for k in keys if k.active and k.gate is not None] or [k.gate for k in keys if k.gate is not None]

        def total(values: list[int | None]) -> int | None:
            return None if any(v is None for v in values) else sum(v for v in values if v is not None)

        waited = {r: sum(g.waited_s.get(r, 0.0) for g in live) for r in REASONS}
        top = max(waited, key=lambda r: waited[r])
        paused = [g.paused_until for g in live]
        learned: dict[str, int] = {}
        for g in live:
            for name, value in g.learned.items():
                learned[name] = learned.get(name, 0) + value
        return PoolStats(
            in_flight=sum(k.gate.in_flight for k in keys if k.gate is not None),
            admitted=sum(k.gate.admitted for k in keys if k.gate is not None),
            tokens_reserved=sum(g.tokens_reserved for g in live),
            waiting=sum(g.waiting for g in live),
            rate_factor=min(g.rate_factor for g in live),
            paused_until=None if any(p is None for p in paused) else min(p for p in paused if p is not None),
            requests_in_window=sum(g.requests_in_window for g in live),
            rpm=total([g.rpm for g in live]),
            tpm=total([g.tpm for g in live]),
            concurrency=total([g.concurrency for g in live]),
            learned=learned if len(learned) and all(g.learned for g in live) else {},
            binding=top if waited[top] > 0 else None,
            waited_s=waited,
            auto=live[0].auto,
            keys=keys,
        )


def is_key_refusal(error: RequestError) -> bool:
    """Whether `error` refuses the key itself (401/403, quota), not the job (an unknown model would be
    refused by every key alike)."""
    return error.code != "model_not_found" and (error.status in (401, 403) or error.code in KEY_CODES)


def make_gate(provider: str, keys: Sequence[str], new_gate: Callable[[], AdmissionGate]) -> AdmissionGate | KeyPool:
    """One gate for one key, a pool of gates for several."""
    return KeyPool(provider, keys, new_gate) if len(keys) > 1 else new_gate()
