"""The admission gate of one provider key: requests/min, tokens/min and concurrency enforced together."""

from __future__ import annotations

import asyncio
import heapq
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiolimiter import AsyncLimiter

__all__ = ["AdmissionGate", "GateStats", "RequestTooLarge", "Ticket"]

_SLOWDOWN = 0.7  # rate factor multiplier per 429 event
_MIN_FACTOR = 0.1
_RECOVERY_STEP = 0.05  # of full rate regained ...
_RECOVERY_PERIODS = 12  # ... per period_s / 12 seconds without a 429
_BACKOFF_CAP = 30.0  # seconds at a 60 s period; backoffs scale with period_s / 60
# Floor for any nap: guarantees the clock moves even when float rounding puts a deadline a hair away.
_MIN_NAP = 1e-6


class RequestTooLarge(ValueError):
    """A single request needs more tokens than the provider allows in a whole period: it can never run."""

    def __init__(self, tokens: int, tpm: int, period_s: float) -> None:
        super().__init__(
            f"request needs {tokens} tokens but the provider's budget is {tpm} tokens per {period_s:g}s"
        )
        self.tokens = tokens
        self.tpm = tpm
        self.period_s = period_s


@dataclass
class GateStats:
    """A snapshot of a gate. Window figures count the last `period_s` seconds."""

    in_flight: int  # admitted and not yet released
    admitted: int  # admissions since the gate was made
    tokens_reserved: int  # tokens counted in the current window (after corrections)
    waiting: int  # callers inside `admit` not yet admitted
    rate_factor: float  # 1.0 = full rate; lowered by 429s
    paused_until: float | None  # loop time the current 429 pause ends, None if not paused
    requests_in_window: int = 0  # admissions counted in the current window


class Ticket:
    """One admitted request attempt; hand it back to `AdmissionGate.release`."""

    __slots__ = ("_entry", "_gate", "_released", "reserved", "started_at")

    def __init__(self, gate: AdmissionGate, reserved: int, started_at: float, entry: list[float] | None):
        self.reserved = reserved  # tokens reserved at admission
        self.started_at = started_at  # loop time of admission
        self._gate = gate
        self._entry = entry  # this ticket's entry in the token window, shrunk by a refund
        self._released = False

    def __repr__(self) -> str:
        state = "released" if self._released else "held"
        return f"<Ticket reserved={self.reserved} started_at={self.started_at:.3f} {state}>"


class _Window:
    """Exact rolling sum of the amounts charged in the last `period` seconds.

    Entries are `[expires_at, amount]`; an entry counts while `now < expires_at`. Keeping the expiry
    rather than the start time means a nap until `expires_at` is exactly enough, with no rounding.
    """

    __slots__ = ("_log", "_period", "total")

    def __init__(self, period: float) -> None:
        self._period = period
        self._log: deque[list[float]] = deque()
        self.total = 0.0  # amounts are whole numbers, so the running sum stays exact

    def expire(self, now: float) -> None:
        log = self._log
        while log and log[0][0] <= now:
            self.total -= log.popleft()[1]

    def count(self) -> int:
        return len(self._log)

    def charge(self, now: float, amount: float) -> list[float]:
        entry = [now + self._period, amount]
        self._log.append(entry)
        self.total += amount
        return entry

    def refund(self, entry: list[float], amount: float, now: float) -> bool:
        """Shrink `entry` by up to `amount` if it still counts; False if it had already expired."""
        self.expire(now)
        if entry[0] <= now:
            return False
        taken = min(amount, entry[1])
        entry[1] -= taken
        self.total -= taken
        return True

    def ready_at(self, amount: float, limit: float, now: float) -> float:
        """Earliest time `amount` more fits under `limit` if nothing else changes (`now` if it fits)."""
        excess = self.total + amount - limit
        if excess <= 0:
            return now
        # Only reached when blocked, and usually stops after a few entries.
        for expires_at, entry_amount in self._log:
            excess -= entry_amount
            if excess <= 0:
                return expires_at
        return float("inf")  # amount > limit: the caller waits for the rate factor instead


def _pacer(limit: int, period_s: float, burst_s: float) -> AsyncLimiter:
    """A leaky bucket holding about `burst_s` worth of `limit`, refilled at exactly the limit's rate.

    For limits under one per `burst_s` the bucket holds one unit and the period stretches, so the
    pace is still the limit's and never one per `burst_s`.
    """
    rate = limit / period_s
    max_rate = max(1.0, rate * burst_s)
    return AsyncLimiter(max_rate, max_rate / rate)


class AdmissionGate:
    """Admit requests to one provider key under requests/min, tokens/min and a concurrency cap.

    Two layers: an exact sliding-window log per limit is the hard cap (in any `period_s` window at most
    `rpm` admissions and `tpm` reserved tokens, from the first second on), and an aiolimiter bucket per
    limit holding about `burst_s` worth smooths the pace so a period's budget never goes out at once.
    Waiting for the rate is FIFO: one caller at a time, in arrival order, decides when it may go.
    Time is read only from the running loop and waits are loop timers, so a fake clock drives it.
    """

    def __init__(
        self,
        *,
        rpm: int | None,
        tpm: int | None,
        concurrency: int | None,
        period_s: float = 60.0,
        burst_s: float = 1.0,
    ) -> None:
        for name, value in (("rpm", rpm), ("tpm", tpm), ("concurrency", concurrency)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 or None for unlimited, got {value}")
        if period_s <= 0 or burst_s <= 0:
            raise ValueError(f"period_s and burst_s must be positive, got {period_s} and {burst_s}")
        self.rpm = rpm
        self.tpm = tpm
        self.concurrency = concurrency
        self.period_s = period_s
        self.burst_s = burst_s

        self._slots = _Slots(concurrency) if concurrency is not None else None
        self._turn = asyncio.Lock()  # FIFO: the head of the queue alone computes its wait
        self._req_window = _Window(period_s) if rpm is not None else None
        self._tok_window = _Window(period_s) if tpm is not None else None
        self._req_pacer = _pacer(rpm, period_s, burst_s) if rpm is not None else None
        self._tok_pacer = _pacer(tpm, period_s, burst_s) if tpm is not None else None
        self._nudge: asyncio.Future[None] | None = None  # wakes the napping head early on a refund

        self._in_flight = 0
        self._admitted = 0
        self._waiting = 0

        # 429 state. The factor is `_factor_base` until `_recover_from`, then climbs linearly to 1.
        self._paused_until = float("-inf")
        self._factor_base = 1.0
        self._recover_from = float("-inf")
        self._recover_every = period_s / _RECOVERY_PERIODS
        self._streak = 0
        self._last_event_at = float("-inf")

    # -- admission ---------------------------------------------------------------------------

    def check_fits(self, tokens: int) -> None:
        """Raise RequestTooLarge if a request of `tokens` could never be admitted (more than tpm)."""
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens}")
        if self.tpm is not None and tokens > self.tpm:
            raise RequestTooLarge(tokens, self.tpm, self.period_s)

    async def admit(self, tokens: int, priority: float = 0.0) -> Ticket:
        """Wait for a concurrency slot, then for the rate limits, and reserve `tokens`.

        A free slot goes to the waiter with the highest `priority`, in arrival order among equals.
        Raises RequestTooLarge at once for a request that can never fit. If the caller is cancelled
        while waiting, nothing stays reserved or held.
        """
        self.check_fits(tokens)
        self._waiting += 1
        try:
            # Slot first, so an admitted request can start at once instead of queueing again.
            if self._slots is not None:
                await self._slots.acquire(priority)
            try:
                async with self._turn:
                    now = await self._wait_for_rate(tokens)
                    # No await between the final check and the reservation: nothing can slip in.
                    return self._reserve(tokens, now)
            except BaseException:
                if self._slots is not None:
                    self._slots.release()
                raise
        finally:
            self._waiting -= 1

    def release(self, ticket: Ticket, actual_tokens: int | None = None) -> None:
        """Free the ticket's slot and, given `actual_tokens`, correct its token reservation.

        Fewer tokens than reserved gives the difference back (if the reservation still counts);
        more charges the difference now, which may push the window over tpm and so delays the next
        admissions. A second release of the same ticket does nothing.
        """
        if ticket._gate is not self:
            raise ValueError("ticket belongs to another gate")
        if ticket._released:
            return
        if actual_tokens is not None and actual_tokens < 0:
            raise ValueError(f"actual_tokens must be >= 0, got {actual_tokens}")
        ticket._released = True
        self._in_flight -= 1
        if self._slots is not None:
            self._slots.release()
        window = self._tok_window
        if actual_tokens is None or window is None:
            return
        diff = actual_tokens - ticket.reserved
        now = asyncio.get_running_loop().time()
        if diff > 0:
            window.charge(now, diff)
        elif diff < 0 and ticket._entry is not None and window.refund(ticket._entry, -diff, now):
            nudge = self._nudge
            if nudge is not None and not nudge.done():
                nudge.set_result(None)

    @asynccontextmanager
    async def slot(self, tokens: int) -> AsyncIterator[Ticket]:
        """`admit` on entry, `release` on exit (without correction unless the body released first)."""
        ticket = await self.admit(tokens)
        try:
            yield ticket
        finally:
            self.release(ticket)

    def _reserve(self, tokens: int, now: float) -> Ticket:
        if self._req_window is not None:
            self._req_window.charge(now, 1)
        entry = None
        if self._tok_window is not None and tokens:
            entry = self._tok_window.charge(now, tokens)
        self._admitted += 1
        self._in_flight += 1
        return Ticket(self, tokens, now, entry)

    async def _wait_for_rate(self, tokens: int) -> float:
        """Wait until a pause, the windows and the pacers all let `tokens` through; return that time."""
        loop = asyncio.get_running_loop()
        rpm, tpm = self.rpm, self.tpm
        req_window, tok_window = self._req_window, self._tok_window
        req_pacer, tok_pacer = self._req_pacer, self._tok_pacer
        paced = False
        while True:
            now = loop.time()
            if now < self._paused_until:
                await self._nap(loop, self._paused_until)
                continue

            factor = self._factor_at(now)
            go_at = now
            if req_window is not None and rpm is not None:
                req_window.expire(now)
                go_at = max(go_at, req_window.ready_at(1, rpm * factor, now))
            if tok_window is not None and tpm is not None:
                tok_window.expire(now)
                go_at = max(go_at, tok_window.ready_at(tokens, tpm * factor, now))
            if go_at == float("inf"):
                # Bigger than the reduced budget: only the factor's recovery can make room.
                need = max(1 / rpm if rpm else 0.0, tokens / tpm if tpm else 0.0)
                await self._nap(loop, self._recovered_at(need))
                continue
            if go_at > now:
                await self._nap(loop, go_at)
                continue

            if paced:
                return now
            # The pacer charges amount / factor, so a slowed gate also paces slower; capped at the
            # bucket size because aiolimiter refuses more (the window still counts the full amount).
            req_amount = min(1 / factor, req_pacer.max_rate) if req_pacer is not None else 0.0
            tok_amount = min(tokens / factor, tok_pacer.max_rate) if tok_pacer is not None else 0.0
            if (req_pacer is None or req_pacer.has_capacity(req_amount)) and (
                tok_pacer is None or tok_pacer.has_capacity(tok_amount)
            ):
                # Fast path: both acquisitions return without suspending.
                if req_pacer is not None:
                    await req_pacer.acquire(req_amount)
                if tok_pacer is not None and tok_amount:
                    await tok_pacer.acquire(tok_amount)
                return now
            # Slow path: wait for the pacers, then re-check the pause and windows, which may have
            # changed meanwhile (a 429, a charge); the pacers are paid once.
            if req_pacer is not None:
                await req_pacer.acquire(req_amount)
            if tok_pacer is not None and tok_amount:
                await tok_pacer.acquire(tok_amount)
            paced = True

    async def _nap(self, loop: asyncio.AbstractEventLoop, until: float) -> None:
        """Sleep until `until` in loop time, or less if a refund makes room earlier."""
        fut: asyncio.Future[None] = loop.create_future()
        self._nudge = fut
        handle = loop.call_later(max(until - loop.time(), _MIN_NAP), _wake, fut)
        try:
            await fut
        finally:
            handle.cancel()
            self._nudge = None

    # -- 429 handling ------------------------------------------------------------------------

    def slow_down(self, retry_after: float | None = None, *, ticket: Ticket | None = None) -> None:
        """Report a 429: pause every admission and lower the rate factor.

        The pause lasts `retry_after` seconds, or else a backoff of 1, 2, 4 ... up to 30 s (scaled by
        period_s / 60) that grows while 429s keep coming before the factor has recovered. The factor
        is multiplied by 0.7 (floor 0.1) and, once the pause is over, regains 0.05 of full rate per
        period_s / 12 seconds. A longer Retry-After extends a pause; nothing shortens one.

        A 429 that arrives during a pause, or whose `ticket` was admitted before the previous 429,
        echoes an overload already reported: it may extend the pause but does not lower the rate
        again, so a hundred requests failing together count as one event.
        """
        now = asyncio.get_running_loop().time()
        wait = retry_after if retry_after is not None and retry_after > 0 else None
        echo = now < self._paused_until or (ticket is not None and ticket.started_at < self._last_event_at)
        if echo:
            if wait is not None and now + wait > self._paused_until:
                self._pause(now, now + wait)
            return
        factor = self._factor_at(now)
        # Consecutive = before the factor has recovered from the previous 429.
        self._streak = self._streak + 1 if factor < 1.0 else 1
        if wait is None:
            wait = min(2.0 ** (self._streak - 1), _BACKOFF_CAP) * self.period_s / 60.0
        self._last_event_at = now
        self._pause(now, now + wait)
        self._factor_base = max(_MIN_FACTOR, factor * _SLOWDOWN)

    def _pause(self, now: float, until: float) -> None:
        # Freeze the factor where it is now; recovery restarts when the pause ends.
        self._factor_base = self._factor_at(now)
        self._paused_until = until
        self._recover_from = until

    def _factor_at(self, now: float) -> float:
        base = self._factor_base
        if base >= 1.0:
            return 1.0
        since = now - self._recover_from
        if since <= 0:
            return base
        factor = base + _RECOVERY_STEP * since / self._recover_every
        if factor >= 1.0:
            self._factor_base = 1.0  # fully recovered: back to the fast path
            return 1.0
        return factor

    def _recovered_at(self, factor: float) -> float:
        """Loop time at which the rate factor reaches `factor`."""
        if factor <= self._factor_base:
            return self._recover_from
        return self._recover_from + (factor - self._factor_base) / _RECOVERY_STEP * self._recover_every

    # -- observation -------------------------------------------------------------------------

    def stats(self) -> GateStats:
        """A snapshot of the gate; window figures are as of now when called inside the loop."""
        try:
            now: float | None = asyncio.get_running_loop().time()
        except RuntimeError:
            now = None
        if now is not None:
            for window in (self._req_window, self._tok_window):
                if window is not None:
                    window.expire(now)
        paused = now is not None and now < self._paused_until
        return GateStats(
            in_flight=self._in_flight,
            admitted=self._admitted,
            tokens_reserved=int(self._tok_window.total) if self._tok_window is not None else 0,
            waiting=self._waiting,
            rate_factor=self._factor_at(now) if now is not None else self._factor_base,
            paused_until=self._paused_until if paused else None,
            requests_in_window=self._req_window.count() if self._req_window is not None else 0,
        )


class _Slots:
    """A counting semaphore whose free slot goes to the highest-priority waiter (FIFO among equals).

    With long requests of mixed lengths (audio), sending the longest first makes the run end sooner:
    the last requests to finish are short ones, not a long one started at the very end.
    """

    def __init__(self, n: int) -> None:
        self._free = n
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0

    async def acquire(self, priority: float = 0.0) -> None:
        if self._free > 0:  # then nobody waits: a slot is freed to a waiter before it is counted free
            self._free -= 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._heap, (-priority, self._seq, fut))
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.release()  # handed a slot, then cancelled: pass it on
            raise

    def release(self) -> None:
        while self._heap:
            fut = heapq.heappop(self._heap)[2]
            if not fut.done():
                fut.set_result(None)
                return
        self._free += 1


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
