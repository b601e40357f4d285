"""The admission gate of one provider key: requests/min, tokens/min and concurrency enforced together."""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .logs import event
from .retry import RateHeaders

if TYPE_CHECKING:
    from .errors import RequestError

log = logging.getLogger(__name__)

__all__ = ["AdmissionGate", "GateStats", "RequestTooLarge", "Ticket"]

# The pace law after a 429 (all durations are for a 60 s period and scale with period_s / 60).
# A 429 multiplies the pace by _DECREASE and remembers the pace that overloaded the server as the
# ceiling. The pace then climbs back linearly: fast (the whole range in _CLIMB_S) up to _MARGIN below
# the ceiling, then slowly (_MARGIN in _PROBE_S) past it, so a server that enforces a limit lower
# than the job's is probed about once per _PROBE_S instead of hit every few seconds. A ceiling no
# 429 has confirmed for _FORGET_S is forgotten and the climb to full pace is fast again.
_DECREASE = 0.8
_MIN_FACTOR = 0.1
_CLIMB_S = 20.0
_MARGIN = 0.04
_PROBE_S = 40.0
_FORGET_S = 60.0
# A ceiling learned from a per-second server (a 429 with a short Retry-After for a request whose second
# held less than its share on our clock: the server's own share is lower than the job's), once a second
# such 429 agrees with it, describes a fixed limit, not a passing overload: it is probed past this
# slowly and forgotten after this long, so holding it costs about one 429 per minute whatever the
# request rate.
_PROBE_LEARNED_S = 120.0
_FORGET_LEARNED_S = 150.0
_MAX_CUT = 0.5  # a learned per-second limit lowers the pace at most this far in one 429
_AGREE = 0.15  # a per-second 429 confirms the last one's ceiling if its own is at most this much above
_BACKOFF_CAP = 30.0  # pause without Retry-After: 1, 2, 4 ... up to this, while 429s keep coming
_CONC_RECOVER_S = 30.0  # a concurrency cap lowered by the server comes back one slot per this long
# A Retry-After this short says the server counts over short periods (per second).
_SHORT_PAUSE = 2.0
# A request admitted with its second this full, counting one more request like it (no room left for
# another), is "at the edge": a 429 for it says the server's clock saw the second more crowded than
# ours did. Each such 429 widens the second by _SKEW_STEP (up to _SKEW_MAX) instead of slowing the pace.
_EDGE = 0.95
_SKEW_STEP = 0.01
_SKEW_MAX = 0.05
# ... and a minute (at a 60 s period) without such a 429 narrows it again by one step: a skew seen while
# the machine was busy (connections being opened, a load spike) does not cost the rest of the run.
_SKEW_FORGET_S = 60.0
# While a per-second server's confirmed limit is held, a 429 for a second that held less than it, by at most
# this share, is the same clock disagreement (see `near` in slow_down).
_NEAR = 0.08
_NEAR_S = 10.0
# Credit of the pacer in seconds of pace: absorbs the loop's lateness without letting a burst out.
_CREDIT_S = 0.05
# A request that the pace would have let go at some time but that went later (its coroutine woke up
# late on a loop busy with other work, or a window held it) banks up to this much of the delay as
# pace credit, spent by the next requests: the delay is caught up instead of lost, for a key of
# 10 requests a second as for one of 50 or for 10 embedding batches a second. It is time that passed
# with nothing sent: at most half of a second's share at the pace, and the windows (the long one, and
# the per-second one) still cap what the catch-up lets out.
_LATE_S = 0.5
# Floor for any nap: guarantees the clock moves even when float rounding puts a deadline a hair away.
_MIN_NAP = 1e-6


def _clock_grain(loop: asyncio.AbstractEventLoop) -> float:
    """The step of the loop's clock and timers, if coarse: uvloop (libuv) keeps both in whole
    milliseconds, so a timer for less than 1 ms fires at once at the same clock reading, and a nap
    until a deadline a fraction of a millisecond away spins the loop until the millisecond turns (at
    50 requests/s: ~10 wake-ups per admission instead of one). Naps there are rounded up to the grain
    (at most 1 ms late, which the pace banks as lateness: no request is lost)."""
    return 1e-3 if type(loop).__module__.startswith("uvloop") else 0.0


# `auto` limits: start at this much per minute and grow x1.5 every 5 s (scaled) during which the
# limit held admissions back, until the server answers with x-ratelimit headers or a 429.
_AUTO_START = {"rpm": 60, "tpm": 40_000}
_AUTO_GROW = 1.5
_AUTO_GROW_S = 5.0
# Batches of an `auto` token limit are sized for this budget per minute (the apiyi default).
_AUTO_BATCH_TPM = 1_000_000

REASONS = ("requests/min", "tokens/min", "concurrency", "429 pauses")


class RequestTooLarge(ValueError):
    """A single request needs more tokens than the provider allows in a whole period: it can never run."""

    def __init__(self, tokens: int, tpm: int, period_s: float) -> None:
        super().__init__(f"request needs {tokens} tokens but the provider's budget is {tpm} tokens per {period_s:g}s")
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
    rate_factor: float  # pace as a share of the limits' pace: 1.0 = full; lowered by 429s
    paused_until: float | None  # loop time the current 429 pause ends, None if not paused
    requests_in_window: int = 0  # admissions counted in the current window
    rpm: int | None = None  # the limits in force: the job's, lowered by what the server said
    tpm: int | None = None
    concurrency: int | None = None
    learned: dict[str, int] = field(default_factory=dict)  # what x-ratelimit headers said (per period)
    binding: str | None = None  # the limit admissions waited on longest (one of REASONS), None: none
    waited_s: dict[str, float] = field(default_factory=dict)  # admission wait by reason
    auto: dict[str, str] = field(default_factory=dict)  # `auto` limits: how each was found
    images: bool = False  # the token dimension counts images (a provider's ipm), not tokens

    def describe(self) -> str:
        """One line: which limit binds, the limits in force and what was learned."""
        binding = self.binding
        if self.images and binding == "tokens/min":
            binding = "images/min"
        parts = [f"binding: {binding or 'none (the server set the pace)'}"]
        tok = "ipm" if self.images else "tpm"
        for name, value in (("rpm", self.rpm), (tok, self.tpm), ("concurrency", self.concurrency)):
            if value is not None:
                key = "tpm" if name == "ipm" else name
                learned, how = self.learned.get(key), self.auto.get(key)
                note = f" (auto: {how})" if how else (f" (server says {learned:,})" if learned is not None else "")
                parts.append(f"{name} {value:,}{note}")
        if self.rate_factor < 1.0:
            parts.append(f"pace {self.rate_factor:.0%} after 429s")
        return ", ".join(parts)


class Ticket:
    """One admitted request attempt; hand it back to `AdmissionGate.release`."""

    __slots__ = ("_entries", "_gate", "_released", "edge", "fill", "key", "peers", "reserved", "started_at", "unheld")

    def __init__(
        self,
        gate: AdmissionGate,
        reserved: int,
        started_at: float,
        entries: tuple[list[float] | None, ...],
        peers: int = 1,
        fill: float = 0.0,
        edge: bool = False,
        unheld: bool = False,
    ) -> None:
        # how full this request's second was once it was admitted (itself included), as a share of the
        # second's budget: the fullest of the request and token seconds
        self.fill = fill
        # admitted with its second (nearly) full, no room left for another like it: a 429 for it says
        # the server's clock saw the second more crowded than ours did
        self.edge = edge
        # admitted with its token second full on our own count while seconds were not yet held to their
        # share (tokens are paced, not windowed, until a per-second server shows itself): a 429 for it
        # is explained by our own count, and says nothing about the clocks
        self.unheld = unheld
        self.reserved = reserved  # tokens reserved at admission
        self.started_at = started_at  # loop time of admission
        self.peers = peers  # requests in flight once this one was admitted (itself included)
        self._gate = gate
        # this ticket's entries in the request and token windows (long, short), shrunk by refunds
        self._entries = entries
        self._released = False
        self.key: str | None = None  # key pools: the API key this attempt goes out with (None: the transport's)

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

    def set_period(self, period: float) -> None:
        """Entries charged from now on count for `period` (those already in keep theirs)."""
        self._period = period

    def expire(self, now: float) -> None:
        log = self._log
        while log and log[0][0] <= now:
            self.total -= log.popleft()[1]

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

    def grow(self, entry: list[float], amount: float, now: float) -> None:
        """Add `amount` to `entry` if it still counts (the server counted more than was charged)."""
        self.expire(now)
        if entry[0] > now:
            entry[1] += amount
            self.total += amount

    def ready_at(self, amount: float, limit: float, now: float) -> float:
        """Earliest time `amount` more fits under `limit` if nothing else changes (`now` if it fits),
        entries expired by `now` dropped first.

        An amount over the limit fits once the window is empty (a limit learned from the server may
        be lower than the job's, which every request was checked against).
        """
        self.expire(now)
        excess = self.total + amount - max(limit, amount)
        if excess <= 0:
            return now
        # Only reached when blocked, and usually stops after a few entries.
        for expires_at, entry_amount in self._log:
            excess -= entry_amount
            if excess <= 0:
                return expires_at
        return now  # only refunded (zero) entries left


class _Pace:
    """An even pace: a bucket gaining `rate` per second, holding at most `credit`, that may go into debt.

    A request of `amount` goes when the bucket holds min(amount, credit), and then pays `amount`: one
    bigger than the credit goes when the bucket is full and leaves a debt that spaces the next one by
    its own size (a debt of at most `max_debt`, one second of the limits' pace: a bigger request
    cannot fit a per-second server anyway, and the window is the hard cap). So in any T seconds at
    most credit + rate * T (plus one oversized request) goes out, evenly: the bucket starts with its
    small credit, never with a period's budget.

    Late requests: a request that goes `late` seconds after the pace would have let it (`due`) keeps
    up to _LATE_S of that as a bank above the cap, which the next requests spend (it never grows by
    waiting: only a request held past its time adds to it). Then a late wake-up or a window's hold
    costs the run nothing, whatever the request's size, and in any T seconds at most
    cap + rate * (T + _LATE_S) goes out.
    """

    __slots__ = ("at", "banked", "cap", "credit", "credit_s", "due", "level", "max_debt", "rate")

    def __init__(self, rate: float, credit_s: float, unit: float, max_debt: float) -> None:
        self.rate = rate
        self.credit_s = credit_s
        self.credit = max(unit, rate * credit_s)
        self.cap = self.credit  # while a request bigger than the credit waits: its size (lateness is kept)
        self.max_debt = max_debt
        self.level = self.credit
        self.at: float | None = None
        self.due: float | None = None  # when the pace would have let the waiting request go
        self.banked = False  # the level is above the cap by a late request's bank

    def forget_delay(self) -> None:
        """The waiting request was held by a pause or left: no catch-up for the time it waited."""
        self.due = None
        self.level = min(self.level, self.cap)
        self.banked = False

    def fill(self, now: float, bank: float = 0.0) -> None:
        # (on every admission: written without min/max calls, with the same arithmetic:
        # min(a, b) is `b if b < a else a`, max(a, b) is `b if b > a else a`)
        at = self.at
        if at is None:
            self.at = now
            return
        if now > at:
            # `bank`: how far above the cap a late request may fill it; a bank above the cap kept
            # from earlier stays until spent, but does not grow
            cap = self.cap
            level = self.level
            top = cap + bank
            if self.banked and level > top:
                top = cap + self.rate * _LATE_S
                top = top if top < level else level
            level = level + self.rate * (now - at)
            level = level if level < top else top
            self.level = level
            self.banked = level > cap
            self.at = now

    def set_rate(self, now: float, rate: float, unit: float) -> None:
        self.fill(now)
        full = self.level >= self.credit
        self.rate = rate
        self.credit = max(unit, rate * self.credit_s)
        self.cap = max(self.cap, self.credit)
        if full and self.level < self.credit:  # a full bucket stays full: no chase after a moving credit
            self.level = self.credit

    def ready_at(self, now: float, amount: float) -> float:
        # A waiting request bigger than the credit may bank up to its own size, so a late wake-up
        # does not lose the time it was late by (the spacing then stays its size / rate); past its
        # due time it banks the delay (up to _LATE_S) on top.
        credit = self.credit
        top = credit + self.max_debt
        top = top if top < amount else amount
        self.cap = top if top > credit else credit
        due = self.due
        if due is not None and now > due:
            late = now - due
            self.fill(now, self.rate * (late if late < _LATE_S else _LATE_S))
        else:
            self.fill(now, 0.0)
        missing = (credit if credit < amount else amount) - self.level
        go = now if missing <= 1e-9 * credit else now + missing / self.rate
        self.due = go if due is None or go < due else due
        return go

    def pay(self, now: float, amount: float) -> None:
        self.fill(now)
        self.level = max(-self.max_debt, self.level - amount)
        self.cap = self.credit
        self.due = None

    def give_back(self, amount: float) -> None:
        capped = min(self.cap, self.level + amount)
        self.level = max(self.level, capped) if self.banked else capped


class _Dim:
    """One rate limit (requests or tokens): its long window, its short window and its pace."""

    __slots__ = (
        "_shares",
        "configured",
        "discovering",
        "found",
        "grow_at",
        "learned",
        "paced",
        "long",
        "name",
        "pace",
        "short",
        "short_on",
        "short_ratio",
        "unit",
    )

    def __init__(
        self, name: str, limit: int, period_s: float, short_s: float, credit_s: float, unit: float, auto: bool = False
    ) -> None:
        self.name = name
        self.configured = limit
        self.discovering = auto  # an `auto` limit still growing
        self.found: str | None = "discovering" if auto else None  # how an `auto` limit was found
        self.grow_at: float | None = None
        self.learned: int | None = None
        self.paced = False  # the last `ready_at` was decided by the pace (not by a window)
        self.long = _Window(period_s)
        self.short = _Window(short_s)
        self.short_ratio = short_s / period_s
        self.unit = unit
        self._shares: dict[tuple[int, float], float] = {}  # see `second_share`
        self.pace = _Pace(limit / period_s, credit_s, unit, max(unit, limit * self.short_ratio))
        # Tokens: enforced once the server shows it counts over short periods (a 429 with a short
        # pause); until then the pace alone spreads them, so a whole-period server loses nothing to
        # requests that do not divide the second's share evenly. Requests (rounded up to whole
        # ones) always.
        self.short_on = name == "rpm"  # whole requests divide any share: no loss to a whole-period server

    @property
    def limit(self) -> int:
        return self.configured if self.learned is None else min(self.configured, self.learned)

    def second_share(self, limit: int, second: float = 1.0) -> float:
        """The short window's budget under `limit`: `second` of the second's share (whole requests for
        rpm), at least one unit. Asked on every admission: computed once per (limit, second)."""
        share = self._shares.get((limit, second))
        if share is None:
            share = limit * self.short_ratio * second
            share = math.ceil(share - 1e-9) if self.name == "rpm" else share
            share = self._shares[(limit, second)] = max(self.unit, share)
        return share

    def set_configured(self, value: int) -> None:
        self.configured = max(1, value)
        self.pace.max_debt = max(self.unit, self.limit * self.short_ratio)

    def grow(self, now: float, every: float) -> bool:
        """An `auto` limit held admissions back: grow it if `every` seconds have passed since the last time."""
        if self.grow_at is None:
            self.grow_at = now + every
            return False
        if now < self.grow_at:
            return False
        self.set_configured(math.ceil(self.configured * _AUTO_GROW))
        self.grow_at = now + every
        return True

    def ready_at(self, amount: float, factor: float, period_s: float, now: float, second: float = 1.0) -> float:
        """When `amount` more may go at `factor` of the pace; `second`: the share of the second's budget
        the short window allows (below 1 while a per-second server's lower limit is held)."""
        limit = self.limit
        go = self.long.ready_at(amount, limit, now)
        if self.short_on:
            held = self.short.ready_at(amount, self.second_share(limit, second), now)
            go = held if held > go else go
        else:
            self.short.expire(now)  # (counted even while not enforced: see `fill`)
        self.paced = False
        if not amount:  # a request that reserves nothing waits only for an over-charged window
            return go
        pace = self.pace
        rate = limit / period_s * factor
        if rate != pace.rate:
            pace.set_rate(now, rate, self.unit)
        paced = pace.ready_at(now, amount)
        self.paced = paced > go
        return paced if paced > go else go

    def charge(self, now: float, amount: float) -> tuple[list[float], list[float]]:
        self.pace.pay(now, amount)
        return self.long.charge(now, amount), self.short.charge(now, amount)

    def fill(self, amount: float) -> tuple[float, bool]:
        """How full the current second is, as a share of its budget (counted even while not enforced), and
        whether it is at the edge: (nearly) no room for another `amount`."""
        share = self.second_share(self.limit)
        return self.short.total / share, self.short.total + amount >= _EDGE * share


class AdmissionGate:
    """Admit requests to one provider key under requests/min, tokens/min and a concurrency cap.

    Per limit, three layers: an exact sliding-window log over `period_s` is the hard cap (in any
    window at most `rpm` admissions and `tpm` reserved tokens, from the first second on); a second
    exact log over period_s / 60 holds each second to its share, as servers that enforce per-minute
    limits per second require; and a pace (a small-credit bucket) spreads admissions evenly inside
    the second. A 429 pauses admissions for the server's Retry-After and lowers the pace, never the
    windows: a window only ever holds what the server was actually sent. Limits the server announces
    in x-ratelimit-* headers lower the job's (never raise them). Waiting for the rate is FIFO: one
    caller at a time, in arrival order, decides when it may go. Time is read only from the running
    loop and waits are loop timers, so a fake clock drives it.
    """

    def __init__(
        self,
        *,
        rpm: int | None,
        tpm: int | None,
        concurrency: int | None,
        period_s: float = 60.0,
        burst_s: float = _CREDIT_S,
        nominal_period_s: float | None = None,
        auto: tuple[str, ...] = (),
        images: bool = False,
    ) -> None:
        for name, value in (("rpm", rpm), ("tpm", tpm), ("concurrency", concurrency)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 or None for unlimited, got {value}")
        for name in auto:
            if name not in _AUTO_START or (rpm if name == "rpm" else tpm) is not None:
                raise ValueError(f"auto limits are rpm and/or tpm left as None, got {auto} with rpm={rpm}, tpm={tpm}")
        if period_s <= 0 or burst_s <= 0:
            raise ValueError(f"period_s and burst_s must be positive, got {period_s} and {burst_s}")
        self.rpm = rpm
        self.tpm = tpm
        self.concurrency = concurrency
        self.images = images  # `tpm` counts images (a provider's ipm): only how the gate describes itself
        self.period_s = period_s
        self.burst_s = burst_s
        # the job's period without the executor's safety margin: x-ratelimit limits are per minute
        self._header_scale = (nominal_period_s or period_s) / 60.0
        self._scale = period_s / 60.0  # durations of the pace law are for a 60 s period
        short_s = period_s / 60.0

        self._slots = _Slots(concurrency) if concurrency is not None else None
        self._turn = asyncio.Lock()  # FIFO: the head of the queue alone computes its wait
        dims: dict[str, _Dim | None] = {}
        for name, value in (("rpm", rpm), ("tpm", tpm)):
            if name in auto:
                value = max(1, int(_AUTO_START[name] * self._header_scale))
            dims[name] = _Dim(name, value, period_s, short_s, burst_s, 1.0, name in auto) if value else None
        self._req, self._tok = dims["rpm"], dims["tpm"]
        self._grow_s = _AUTO_GROW_S * self._scale
        self._short_s = short_s
        self._short_margin = 0.0  # widened by 429s that came with a second held to its share
        self._widened_at = float("-inf")  # when the margin last widened (or narrowed back)
        self._near_at = float("-inf")  # the last 429 just under a held per-second limit (see slow_down)
        self._nudge: asyncio.Future[None] | None = None  # wakes the napping head early on a refund
        self._holder: _Dim | None = None  # the limit the napping head waits for (None: a 429 pause)
        self._grain = 0.0  # `_clock_grain` of the loop `_grain_of`
        self._grain_of: asyncio.AbstractEventLoop | None = None

        self._in_flight = 0
        self._admitted = 0
        self._waiting = 0
        self._waited = dict.fromkeys(REASONS, 0.0)
        self._first_answer_at: float | None = None  # loop time of the first release
        self._sat_since: float | None = None  # since when every slot is on the wire and others wait

        # 429 state. The factor is `_factor_base` until `_recover_from`, then climbs (see _DECREASE).
        self._paused_until = float("-inf")
        self._factor_base = 1.0
        self._recover_from = float("-inf")
        self._ceiling: float | None = None
        self._learned = False  # the ceiling is a per-second server's confirmed limit (see _PROBE_LEARNED_S)
        self._per_second = False  # a per-second server's limit is held: each second capped near the pace
        self._unconfirmed: float | None = None  # the ceiling of the last per-second 429, not yet confirmed
        self._long_pauses = False  # a 429 came with a long Retry-After: not a per-second server
        self._streak = 0
        self._last_event_at = float("-inf")
        self._last_pause = 0.0
        self._conc_timer: asyncio.TimerHandle | None = None

    # -- admission ---------------------------------------------------------------------------

    def check_fits(self, tokens: int) -> None:
        """Raise RequestTooLarge if a request of `tokens` could never be admitted (more than tpm)."""
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens}")
        if self.tpm is not None and tokens > self.tpm:
            raise RequestTooLarge(tokens, self.tpm, self.period_s)

    def token_share(self, seconds: float = 1.0) -> int | None:
        """The token budget of `seconds` at the limits' pace, or at a per-second server's lower limit
        while it is held (None: no token limit)."""
        if self._tok is None:
            return None
        limit = self._tok.limit if self._tok.found is None else _AUTO_BATCH_TPM * self._header_scale
        share = limit * seconds / (60.0 * self._header_scale)
        if self._per_second:
            # A per-second server's lower limit is held: the second's budget is what it allows. Packs
            # sized for the job's second would fill the server's in a few coarse steps (a tenth of the
            # job's second is a fifth of a server's at half the limit: one pack less in a second is 20%).
            try:
                factor = self._factor_at(asyncio.get_running_loop().time())
            except RuntimeError:  # no loop running: the factor as it stands
                factor = self._factor_base
            share *= min(1.0, factor * (1.0 + _MARGIN))
        return max(1, int(share))

    async def admit(self, tokens: int | Callable[[], int], priority: float = 0.0) -> Ticket:
        """Wait for a concurrency slot, then for the rate limits, and reserve `tokens`.

        `tokens` may be a function: it is asked for the amount when the request reaches the head of
        the queue, so an estimate that improved while the request queued (from the answers of the
        requests ahead of it) is the one reserved. A free slot goes to the waiter with the highest
        `priority`, in arrival order among equals. Raises RequestTooLarge at once for a request that
        can never fit. If the caller is cancelled while waiting, nothing stays reserved or held.
        """
        self.check_fits(tokens if isinstance(tokens, int) else tokens())
        self._waiting += 1
        try:
            # Slot first, so an admitted request can start at once instead of queueing again.
            slots = self._slots
            if slots is not None and not slots.try_acquire():  # (a free slot is taken without a coroutine)
                await slots.acquire(priority)
            try:
                async with self._turn:
                    amount = tokens if isinstance(tokens, int) else tokens()
                    self.check_fits(amount)
                    try:
                        now = await self._wait_for_rate(amount)
                    except BaseException:
                        self._forget_delays()  # the head left: the next one does not inherit its wait
                        raise
                    # No await between the final check and the reservation: nothing can slip in.
                    return self._reserve(amount, now)
            except BaseException:
                if self._slots is not None:
                    self._slots.release()
                raise
        finally:
            self._waiting -= 1

    def _forget_delays(self) -> None:
        """No catch-up for time spent in a 429 pause or by a waiter that left (see _Pace)."""
        for dim in (self._req, self._tok):
            if dim is not None:
                dim.pace.forget_delay()

    def release(self, ticket: Ticket, actual_tokens: int | None = None, *, rejected: bool = False) -> None:
        """Free the ticket's slot and, given `actual_tokens`, correct its token reservation.

        Fewer tokens than reserved gives the difference back (if the reservation still counts);
        more charges the difference now, which may push the window over tpm and so delays the next
        admissions, and adds it to the request's own second (a per-second server counted it there).
        `rejected` (the server refused the request with a 429, charging nothing) gives back the
        request and all its tokens. A second release of the same ticket does nothing.
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
        now = asyncio.get_running_loop().time()
        self._saturation(now)
        if self._first_answer_at is None:
            self._first_answer_at = now
        if ticket.started_at < self._first_answer_at and not rejected:
            self._restamp(ticket, now)
        req_long, req_short, tok_long, tok_short = ticket._entries
        # Wake the napping head only if this makes room where it waits: a window of the limit that
        # holds it, or the token pace. (Chat answers give back tokens while requests bind: no wake.)
        holder = self._holder
        wake = False
        req = self._req
        if rejected:
            if req is not None and req_long is not None and req_short is not None:
                refunded = req.long.refund(req_long, 1, now)
                refunded = req.short.refund(req_short, 1, now) or refunded
                wake = refunded and holder is req and not req.paced
            actual_tokens = 0
        tok = self._tok
        if actual_tokens is not None and tok is not None:
            diff = actual_tokens - ticket.reserved
            if diff > 0:
                tok.long.charge(now, diff)
                tok.pace.pay(now, diff)
                if tok_short is not None:
                    tok.short.grow(tok_short, diff, now)
            elif diff < 0 and tok_long is not None and tok_short is not None:
                if not rejected:
                    tok.pace.give_back(-diff)
                refunded = tok.long.refund(tok_long, -diff, now)
                refunded = tok.short.refund(tok_short, -diff, now) or refunded
                wake = wake or (holder is tok and (tok.paced and not rejected or not tok.paced and refunded))
        if wake:
            nudge = self._nudge
            if nudge is not None and not nudge.done():
                nudge.set_result(None)

    def _saturation(self, now: float) -> None:
        """Count the time concurrency binds: every slot held by a request on the wire, and callers waiting."""
        slots = self._slots
        saturated = slots is not None and self._in_flight >= slots.limit and slots.live > 0
        if saturated and self._sat_since is None:
            self._sat_since = now
        elif not saturated and self._sat_since is not None:
            self._waited["concurrency"] += now - self._sat_since
            self._sat_since = None

    def _restamp(self, ticket: Ticket, now: float) -> None:
        """Count a request sent before any answer came back as arriving at its answer (in the period).

        The first requests of a run pay for connection setup (and a cold server), so when the server
        counted them is the least known; counting them until `now + period` is the safe side.
        """
        entries = list(ticket._entries)
        # Long windows only: a second-long window restamped would hold the next second's pace back.
        for i, dim in ((0, self._req), (2, self._tok)):
            entry = entries[i]
            if dim is None or entry is None:
                continue
            window = dim.long
            amount = entry[1]
            window.refund(entry, amount, now)  # if it still counts; charged anew either way
            entries[i] = window.charge(now, amount)
        ticket._entries = (entries[0], entries[1], entries[2], entries[3])

    @asynccontextmanager
    async def slot(self, tokens: int) -> AsyncIterator[Ticket]:
        """`admit` on entry, `release` on exit (without correction unless the body released first)."""
        ticket = await self.admit(tokens)
        try:
            yield ticket
        finally:
            self.release(ticket)

    def _reserve(self, tokens: int, now: float) -> Ticket:
        req_long = req_short = tok_long = tok_short = None
        fill, edge, unheld = 0.0, False, False
        if self._req is not None:
            req_long, req_short = self._req.charge(now, 1)
            fill, edge = self._req.fill(1)
        if self._tok is not None and tokens:
            tok_long, tok_short = self._tok.charge(now, tokens)
            tok_fill, tok_edge = self._tok.fill(tokens)
            unheld = tok_edge and not self._tok.short_on
            fill, edge = max(fill, tok_fill), edge or tok_edge
        self._admitted += 1
        self._in_flight += 1
        self._saturation(now)
        entries = (req_long, req_short, tok_long, tok_short)
        return Ticket(self, tokens, now, entries, self._in_flight, fill, edge, unheld)

    async def _wait_for_rate(self, tokens: int) -> float:
        """Wait until a pause, the windows and the paces all let `tokens` through; return that time."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            if now < self._paused_until:
                self._holder = None
                await self._nap(loop, self._paused_until, "429 pauses")
                self._forget_delays()
                continue
            if self._short_margin and now - self._widened_at >= _SKEW_FORGET_S * self._scale:
                self._set_margin(now, self._short_margin - _SKEW_STEP)
            factor = 1.0 if self._factor_base >= 1.0 else self._factor_at(now)  # (full pace: no call)
            # A per-second server's lower limit holds each second too, not only the pace: the second
            # the server still counts (a burst at the start of a run) is waited out, not sent into.
            second = min(1.0, factor * (1.0 + _MARGIN)) if self._per_second else 1.0
            go_at, why, held = now, "", None
            req, tok = self._req, self._tok
            if req is not None:
                ready = req.ready_at(1, factor, self.period_s, now, second)
                if ready > go_at:
                    go_at, why, held = ready, "requests/min", req
            if tok is not None:
                ready = tok.ready_at(tokens, factor, self.period_s, now, second)
                if ready > go_at:
                    go_at, why, held = ready, "tokens/min", tok
            if go_at <= now:
                return now
            self._holder = held
            if held is not None and held.discovering and held.grow(now, self._grow_s):
                continue  # an `auto` limit holding demand back grows (until the server says where it is)
            await self._nap(
                loop, go_at if held is None or not held.discovering else min(go_at, held.grow_at or go_at), why
            )

    async def _nap(self, loop: asyncio.AbstractEventLoop, until: float, why: str) -> None:
        """Sleep until `until` in loop time, or less if a refund makes room earlier."""
        fut: asyncio.Future[None] = loop.create_future()
        self._nudge = fut
        start = loop.time()
        delay = max(until - start, _MIN_NAP)
        if self._grain_of is not loop:  # (per nap: the loop's grain looked up once per loop)
            self._grain, self._grain_of = _clock_grain(loop), loop
        grain = self._grain
        if grain:
            delay = math.ceil(delay / grain - 1e-6) * grain
        handle = loop.call_later(delay, _wake, fut)
        try:
            await fut
        finally:
            handle.cancel()
            self._nudge = None
            self._waited[why] += loop.time() - start

    # -- what the server says ----------------------------------------------------------------

    def observe(self, headers: RateHeaders, ticket: Ticket | None = None) -> None:
        """Take in a response's x-ratelimit-* headers: adopt lower limits, hold on an empty budget.

        Announced limits (per minute) only ever lower the job's limits, which stay the upper bound
        (gateways pass on headers that describe their own upstream key). A `remaining` of 0 holds
        admissions until its `reset`. `ticket`: the attempt answered (a key pool routes by it; unused here).
        """
        now = asyncio.get_running_loop().time()
        for dim, limit, remaining, reset in (
            (self._req, headers.limit_requests, headers.remaining_requests, headers.reset_requests_s),
            (self._tok, headers.limit_tokens, headers.remaining_tokens, headers.reset_tokens_s),
        ):
            if dim is None:
                continue
            if limit is not None and limit > 0:
                if dim.learned != (learned := max(1, int(limit * self._header_scale))):
                    event(log, logging.INFO, "gate.limits_learned", limit=dim.name, value=learned)
                dim.learned = learned
                if dim.found is not None:  # `auto`: the server's figure is the limit
                    dim.discovering = False
                    dim.found = "from x-ratelimit headers"
                    dim.set_configured(dim.learned)
            if remaining == 0 and reset is not None and 0 < reset <= 60 * self._scale:
                self._paused_until = max(self._paused_until, now + reset)

    def slow_down(
        self, retry_after: float | None = None, *, ticket: Ticket | None = None, concurrency: bool = False
    ) -> None:
        """Report a 429: pause every admission for Retry-After and lower the pace.

        The pause lasts `retry_after` seconds exactly, or else a backoff of 1, 2, 4 ... up to 30 s
        (scaled by period_s / 60) that grows while 429s keep coming. The pace factor is multiplied by
        0.8 (floor 0.1) and climbs back once the pause is over (see _DECREASE). A longer Retry-After
        extends a pause; nothing shortens one. The windows are untouched: they hold what the server
        was sent, which the server may already have forgotten.

        A 429 that arrives during a pause, or whose `ticket` was admitted before the previous 429,
        echoes an overload already reported: it may extend the pause but does not lower the pace
        again, so a hundred requests failing together count as one event.

        `concurrency`: the 429 names the number of parallel requests (LiteLLM's
        max_parallel_requests). The server refused the request that made `ticket.peers` in flight,
        so the concurrency cap comes down to one less (recovering one slot per 30 s); the pace is
        untouched, and so is the (LiteLLM: fixed 60 s) Retry-After: the cap is the cure. Only a
        request refused while alone pauses for Retry-After.
        """
        now = asyncio.get_running_loop().time()
        wait = retry_after if retry_after is not None and retry_after > 0 else None
        if concurrency:
            peers = ticket.peers if ticket is not None else self._in_flight + 1
            if peers <= 1:  # refused while alone: another client holds the key's slots
                self._extend_pause(now, now + (wait if wait is not None else self._scale))
            else:
                self._lower_concurrency(peers - 1)
            return
        echo = now < self._paused_until or (ticket is not None and ticket.started_at < self._last_event_at)
        if echo:
            if wait is not None:
                self._extend_pause(now, now + wait)
            return
        for dim in (self._req, self._tok):
            if dim is not None and dim.discovering:
                dim.discovering = False
                dim.found = f"429s began at {dim.limit / self._header_scale:,.0f}/min"
        factor = self._factor_at(now)
        # Consecutive: the previous pause ended no longer ago than it lasted (the overload goes on).
        self._streak = self._streak + 1 if now - self._paused_until <= self._last_pause else 1
        short = wait is not None and wait <= _SHORT_PAUSE * self._scale
        if wait is not None and not short:
            # A long Retry-After: this server counts over long periods (a full minute's window answers
            # short ones too, as its entries expire), so its 429s say nothing about our seconds.
            self._long_pauses = True
        base, ceiling = factor * _DECREASE, factor
        learned = per_second = False
        if wait is None:
            wait = min(2.0 ** (self._streak - 1), _BACKOFF_CAP) * self._scale
        elif short and ticket is not None:
            # The server forgets within seconds: it counts over short periods, so every second is held
            # to its share from now on.
            if self._tok is not None:
                self._tok.short_on = True
            if ticket.unheld:
                # Its second was full on our own count, but not held (tokens were paced only): the server
                # counts per second, and from now on every second is held. The clocks and the pace are
                # not in question.
                self._last_event_at = now
                self._paused_until = max(self._paused_until, now + wait)
                return
            # Refused just under a per-second limit already confirmed (its second held less than that
            # ceiling, by at most _NEAR): the clocks disagree, as at the edge of a full second; not a
            # limit lower still. (Arrival skew on a busy machine, read as a lower limit, ratcheted the pace
            # down a little with each such 429.) A second that held the ceiling or more is a probe past
            # the limit: the pace comes down as usual.
            # Only one such 429 in _NEAR_S: 429s that keep coming say the limit found was too high.
            found = self._ceiling
            near = (
                self._learned
                and self._per_second
                and found is not None
                and found * (1.0 - _NEAR) <= ticket.fill < found
                and now - self._near_at >= _NEAR_S * self._scale
            )
            if near:
                self._near_at = now
            if (ticket.edge or near) and self._short_margin < _SKEW_MAX:
                # Refused with its second held to the share: the server's arrival clock and our
                # admission clock differ by more than the second's margin. Widen the second; the pace
                # was right and stays.
                self._set_margin(now, self._short_margin + _SKEW_STEP)
                self._last_event_at = now
                self._paused_until = max(self._paused_until, now + wait)
                return
            if not ticket.edge and not self._long_pauses:
                # Refused while its second held only `fill` of the share: the server's per-second
                # limit is below that. Pace under it at once (not just x0.8: at the start of a run
                # the second is not full yet; but never below half the pace in one step), and hold
                # it as a fixed limit (_PROBE_LEARNED_S).
                ceiling = max(min(factor, ticket.fill), factor * _MAX_CUT)
                base = min(base, ceiling * (1.0 - _MARGIN))
                per_second = True
                # Held as a fixed limit once a second such 429 agrees with it (one alone may be clock
                # skew on a loaded machine, whose sends leave late): probed the usual way until then.
                confirmed = self._unconfirmed
                learned = confirmed is not None and ceiling <= confirmed * (1.0 + _AGREE)
                self._unconfirmed = None if learned else ceiling
        elif short and self._tok is not None and not self._tok.short_on:
            # No request to go by: hold every second to its share from now on; the pace stays.
            self._tok.short_on = True
            self._last_event_at = now
            self._paused_until = max(self._paused_until, now + wait)
            return
        self._last_event_at = now
        self._last_pause = wait
        self._ceiling = ceiling
        self._learned = learned
        self._per_second = per_second
        self._factor_base = max(_MIN_FACTOR, base)
        self._paused_until = max(self._paused_until, now + wait)
        self._recover_from = self._paused_until
        event(
            log,
            logging.INFO,
            "gate.pace_lowered",
            pace=round(self._factor_base, 3),
            pause_s=round(wait, 3),
            per_second_limit="held" if learned else "seen" if per_second else "no",
            second_fill=None if ticket is None else round(ticket.fill, 3),
        )

    def _set_margin(self, now: float, margin: float) -> None:
        """Seconds held from now on last 1 + `margin` of a second (see _SKEW_STEP)."""
        self._short_margin = max(0.0, min(_SKEW_MAX, round(margin, 6)))
        self._widened_at = now
        for dim in (self._req, self._tok):
            if dim is not None:
                dim.short.set_period(self._short_s * (1 + self._short_margin))
        event(log, logging.INFO, "gate.second_margin", margin=round(self._short_margin, 3))

    def _extend_pause(self, now: float, until: float) -> None:
        if until <= self._paused_until:
            return
        # Freeze the factor where it is now; the climb restarts when the pause ends.
        self._factor_base = self._factor_at(now)
        self._paused_until = until
        self._recover_from = until

    def _factor_at(self, now: float) -> float:
        base = self._factor_base
        if base >= 1.0:
            return 1.0
        ceiling = self._ceiling
        forget = (_FORGET_LEARNED_S if self._learned else _FORGET_S) * self._scale
        if ceiling is not None and now >= self._last_event_at + forget:
            # Unconfirmed for long enough: forget the ceiling, from the moment it lapsed.
            lapsed = max(self._last_event_at + forget, self._recover_from)
            self._factor_base = self._climb(base, ceiling, lapsed - self._recover_from)
            self._recover_from = lapsed
            self._ceiling = ceiling = None
            base = self._factor_base
        factor = self._climb(base, ceiling, now - self._recover_from)
        if factor >= 1.0:
            self._factor_base = 1.0  # fully recovered: back to the fast path
            self._ceiling = None
            self._learned = self._per_second = False
            self._unconfirmed = None
        return factor

    def _climb(self, base: float, ceiling: float | None, since: float) -> float:
        if since <= 0:
            return base
        fast = 1.0 / (_CLIMB_S * self._scale)
        slow = _MARGIN / ((_PROBE_LEARNED_S if self._learned else _PROBE_S) * self._scale)
        knee = 1.0 if ceiling is None else ceiling * (1.0 - _MARGIN)
        if base < knee:
            to_knee = (knee - base) / fast
            if since <= to_knee:
                return base + fast * since
            base, since = knee, since - to_knee
            if ceiling is None:
                return 1.0
        return min(1.0, base + slow * since)

    def _lower_concurrency(self, cap: int) -> None:
        """Lower the concurrency cap to `cap` (the server refused the request that made it cap + 1)."""
        slots = self._slots
        if slots is None or cap >= slots.limit:
            return  # already lower: an echo of a request admitted under the old cap
        slots.set_limit(cap)
        event(log, logging.INFO, "gate.concurrency_lowered", concurrency=cap)
        if self._conc_timer is None:
            self._conc_timer = asyncio.get_running_loop().call_later(_CONC_RECOVER_S * self._scale, self._regain_slot)

    def _regain_slot(self) -> None:
        self._conc_timer = None
        slots, configured = self._slots, self.concurrency
        if slots is None or configured is None or slots.limit >= configured:
            return
        slots.set_limit(slots.limit + 1)
        if slots.limit < configured:
            self._conc_timer = asyncio.get_running_loop().call_later(_CONC_RECOVER_S * self._scale, self._regain_slot)

    def refused(self, ticket: Ticket, error: RequestError) -> bool:
        """One key: a refusal is the run's (see `keypool.KeyPool.refused` for a gate of several)."""
        return False

    # -- observation -------------------------------------------------------------------------

    def waiting(self) -> int:
        """Callers inside `admit` not yet admitted."""
        return self._waiting

    def stats(self) -> GateStats:
        """A snapshot of the gate; window figures are as of now when called inside the loop."""
        try:
            now: float | None = asyncio.get_running_loop().time()
        except RuntimeError:
            now = None
        if now is not None:
            for dim in (self._req, self._tok):
                if dim is not None:
                    dim.long.expire(now)
        paused = now is not None and now < self._paused_until
        waited = dict(self._waited)
        if self._sat_since is not None and now is not None:
            waited["concurrency"] += now - self._sat_since
        top = max(waited, key=lambda k: waited[k])
        learned = {d.name: d.learned for d in (self._req, self._tok) if d is not None and d.learned is not None}
        found = {d.name: d.found for d in (self._req, self._tok) if d is not None and d.found is not None}
        return GateStats(
            in_flight=self._in_flight,
            admitted=self._admitted,
            tokens_reserved=int(self._tok.long.total) if self._tok is not None else 0,
            waiting=self._waiting,
            rate_factor=self._factor_at(now) if now is not None else self._factor_base,
            paused_until=self._paused_until if paused else None,
            requests_in_window=int(self._req.long.total) if self._req is not None else 0,
            rpm=self._req.limit if self._req is not None else None,
            tpm=self._tok.limit if self._tok is not None else None,
            concurrency=self._slots.limit if self._slots is not None else None,
            learned=learned,
            binding=top if waited[top] > 0 else None,
            waited_s=waited,
            auto=found,
            images=self.images,
        )


class _Slots:
    """A counting semaphore whose free slot goes to the highest-priority waiter (FIFO among equals).

    With long requests of mixed lengths (audio), sending the longest first makes the run end sooner:
    the last requests to finish are short ones, not a long one started at the very end. The number
    of slots can change while in use (a server that refuses parallel requests lowers it).
    """

    def __init__(self, n: int) -> None:
        self.limit = n
        self._held = 0
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0
        self.live = 0  # waiters not yet handed a slot nor cancelled

    def try_acquire(self) -> bool:
        """Take a free slot if there is one (then nobody waits: a slot is handed to a waiter before it
        is free)."""
        if self._held < self.limit:
            self._held += 1
            return True
        return False

    async def acquire(self, priority: float = 0.0) -> None:
        if self.try_acquire():
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._seq += 1
        heapq.heappush(self._heap, (-priority, self._seq, fut))
        self.live += 1
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.release()  # handed a slot, then cancelled: pass it on
            else:
                self.live -= 1
            raise

    def release(self) -> None:
        self._held -= 1
        self._wake()

    def set_limit(self, n: int) -> None:
        self.limit = n
        self._wake()

    def _wake(self) -> None:
        while self._held < self.limit and self._heap:
            fut = heapq.heappop(self._heap)[2]
            if not fut.done():
                self._held += 1
                self.live -= 1
                fut.set_result(None)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
