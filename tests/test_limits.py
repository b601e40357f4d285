"""Tests of the admission gate, all in virtual time: windows, pace, concurrency, 429s, cancellation, FIFO."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.limits import _LATE_S, AdmissionGate, RequestTooLarge, Ticket

try:
    from tests.fakeclock import run_virtual, virtual_time
except ModuleNotFoundError:  # tests/ collected as plain directory (no __init__.py): it is on sys.path
    from fakeclock import run_virtual, virtual_time  # type: ignore[no-redef]

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass
class Log:
    """What happened at the gate, in the order it happened."""

    events: list[tuple[str, float, float]] = field(default_factory=list)  # (kind, time, tokens)
    arrivals: list[int] = field(default_factory=list)
    admissions: list[int] = field(default_factory=list)

    def admit_times(self) -> list[float]:
        return [t for kind, t, _ in self.events if kind == "admit"]


async def drain(tasks: Sequence[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def max_in_window(times: list[float], period: float) -> int:
    """Most admissions counted at once: at each admission, those admitted in the last `period` s."""
    best, lo = 0, 0
    for hi, now in enumerate(times):
        while times[lo] + period <= now:  # the gate's own rule: an entry counts while now < t + period
            lo += 1
        best = max(best, hi - lo + 1)
    return best


# -- the virtual clock itself ---------------------------------------------------------------------


def test_virtual_clock_skips_waiting() -> None:
    async def main() -> float:
        await asyncio.gather(asyncio.sleep(30), asyncio.sleep(3600))
        return virtual_time()

    # A real hour's wait would trip pytest's timeout long before this returned.
    assert run_virtual(main()) == pytest.approx(3600)


# -- sizes ---------------------------------------------------------------------------------------


def test_too_large_raises_at_once_with_a_clear_message() -> None:
    async def main() -> None:
        gate = AdmissionGate(rpm=10, tpm=1000, concurrency=1, period_s=60)
        gate.check_fits(1000)
        with pytest.raises(RequestTooLarge) as caught:
            await gate.admit(1001)
        expected = "request needs 1001 tokens but the provider's budget is 1000 tokens per 60s"
        assert str(caught.value) == expected
        assert isinstance(caught.value, ValueError)
        with pytest.raises(ValueError, match="tokens must be >= 0"):
            gate.check_fits(-1)
        assert virtual_time() == 0
        stats = gate.stats()
        assert (stats.waiting, stats.in_flight, stats.admitted, stats.tokens_reserved) == (0, 0, 0, 0)

    run_virtual(main())


def test_request_bigger_than_the_pacer_bucket_still_fits() -> None:
    async def main() -> list[float]:
        # The token bucket holds 100 tokens (one second of 6000/min); the window counts the full 5000.
        gate = AdmissionGate(rpm=None, tpm=6000, concurrency=None, period_s=60)
        times = []
        for tokens in (5000, 1000, 1):
            ticket = await gate.admit(tokens)
            times.append(ticket.started_at)
        assert gate.stats().tokens_reserved == 1000 + 1  # the 5000 has left the window
        return times

    first, second, third = run_virtual(main())
    assert first == 0
    assert 0 < second < 60  # only the pacer delayed it
    assert third == pytest.approx(60)  # 6001 > 6000 until the first request leaves the window


def test_unlimited_gate_admits_zero_token_requests_at_once() -> None:
    async def main() -> None:
        gate = AdmissionGate(rpm=None, tpm=None, concurrency=None)
        tickets = [await gate.admit(0) for _ in range(1000)]
        assert virtual_time() == 0
        assert gate.stats().in_flight == 1000
        for ticket in tickets:
            gate.release(ticket, 50)
        assert gate.stats().in_flight == 0

    run_virtual(main())


# -- the hard cap: exact rolling windows ----------------------------------------------------------

# Times in periods: quarter steps land exactly on window edges, floats fall anywhere between.
periods_st = st.one_of(st.integers(0, 12).map(lambda k: k / 4), st.floats(0, 3))


@SETTINGS
@given(
    rpm=st.integers(1, 20),
    period=st.sampled_from([1.0, 6.0, 60.0]),
    burst=st.sampled_from([0.25, 1.0, 3.0]),
    concurrency=st.one_of(st.none(), st.integers(1, 8)),
    schedule=st.lists(st.tuples(periods_st, periods_st), min_size=1, max_size=60),
)
def test_any_window_holds_at_most_rpm_admissions(
    rpm: int, period: float, burst: float, concurrency: int | None, schedule: list[tuple[float, float]]
) -> None:
    log = Log()
    gate = AdmissionGate(rpm=rpm, tpm=None, concurrency=concurrency, period_s=period, burst_s=burst)

    async def request(i: int, arrive: float, hold: float) -> None:
        await asyncio.sleep(arrive * period)
        log.arrivals.append(i)
        async with gate.slot(0) as ticket:
            log.admissions.append(i)
            log.events.append(("admit", ticket.started_at, 0))
            await asyncio.sleep(hold * period / 10)

    async def main() -> None:
        await asyncio.gather(*(request(i, a, h) for i, (a, h) in enumerate(schedule)))

    run_virtual(main())

    times = log.admit_times()
    assert len(times) == len(schedule)
    assert max_in_window(times, period) <= rpm  # from the first admission on
    assert log.admissions == log.arrivals  # FIFO
    # The pacer: within any burst_s, at most one bucket plus what refills meanwhile, plus the catch-up of a
    # request held past its time (by a window, e.g. the first request's restamped entry; or a late
    # wake-up): at most _LATE_S at the pace (limits._Pace)
    rate = rpm / period
    assert max_in_window(times, burst) <= max(1.0, rate * burst) + rate * (burst + _LATE_S) + 1e-6


def token_schedules(refunds_only: bool) -> st.SearchStrategy[list[tuple[float, float, float, float]]]:
    """(arrival, hold, estimate as a fraction of tpm, actual as a multiple of the estimate)."""
    actual = st.floats(0, 1) if refunds_only else st.floats(0, 2.5)
    return st.lists(
        st.tuples(periods_st, periods_st, st.floats(0, 1), actual),
        min_size=1,
        max_size=50,
    )


def run_token_schedule(
    tpm: int, period: float, rpm: int | None, schedule: list[tuple[float, float, float, float]]
) -> Log:
    log = Log()

    async def request(i: int, arrive: float, hold: float, size: float, ratio: float) -> None:
        await asyncio.sleep(arrive * period)
        tokens = int(size * tpm)
        log.arrivals.append(i)
        ticket = await gate.admit(tokens)
        log.admissions.append(i)
        log.events.append(("admit", ticket.started_at, tokens))
        await asyncio.sleep(hold * period)
        actual = int(tokens * ratio)
        gate.release(ticket, actual)
        now = virtual_time()
        if actual > tokens:
            log.events.append(("charge", now, actual - tokens))
        elif ticket.started_at + period > now:  # the refund shrinks the admission's entry
            log.events.append(("refund", ticket.started_at, actual - tokens))

    gate = AdmissionGate(rpm=rpm, tpm=tpm, concurrency=None, period_s=period)

    async def main() -> None:
        await asyncio.gather(*(request(i, *item) for i, item in enumerate(schedule)))

    run_virtual(main())
    return log


def token_load_at_admissions(log: Log, period: float) -> list[float]:
    """Tokens counted at each admission (including it), charges and earlier refunds applied."""
    loads = []
    for k, (kind, now, _) in enumerate(log.events):
        if kind == "admit":
            loads.append(sum(n for _, t, n in log.events[: k + 1] if t <= now < t + period))
    return loads


@SETTINGS
@given(
    tpm=st.integers(1, 5000),
    period=st.sampled_from([6.0, 60.0]),
    rpm=st.one_of(st.none(), st.integers(1, 30)),
    schedule=token_schedules(refunds_only=False),
)
def test_tokens_in_window_never_exceed_tpm_at_any_admission(
    tpm: int, period: float, rpm: int | None, schedule: list[tuple[float, float, float, float]]
) -> None:
    log = run_token_schedule(tpm, period, rpm, schedule)
    assert len(log.admissions) == len(schedule)
    # A charge may push a window over tpm (it happens after the fact), but no admission is made
    # while the window, charges included, has no room for it.
    assert max(token_load_at_admissions(log, period)) <= tpm
    assert log.admissions == log.arrivals
    if rpm is not None:
        assert max_in_window(log.admit_times(), period) <= rpm


@SETTINGS
@given(tpm=st.integers(1, 5000), period=st.sampled_from([6.0, 60.0]), schedule=token_schedules(True))
def test_refunds_only_keep_every_window_under_tpm(
    tpm: int, period: float, schedule: list[tuple[float, float, float, float]]
) -> None:
    log = run_token_schedule(tpm, period, None, schedule)
    # With refunds only, every window's final total peaks at an admission; count final amounts.
    final = [(t, n) for kind, t, n in log.events]
    for now in log.admit_times():
        assert sum(n for t, n in final if t <= now < t + period) <= tpm


def test_refund_makes_room_before_the_window_expires() -> None:
    async def main() -> list[float]:
        gate = AdmissionGate(rpm=None, tpm=1000, concurrency=None, period_s=60)
        first = await gate.admit(900)
        waiter = asyncio.create_task(gate.admit(500))
        await asyncio.sleep(10)
        assert not waiter.done()
        gate.release(first, 300)  # 600 tokens come back; 300 + 500 fits
        second = await waiter
        assert gate.stats().tokens_reserved == 800
        return [first.started_at, second.started_at]

    assert run_virtual(main()) == [0, pytest.approx(10)]


def test_charge_delays_the_next_admission() -> None:
    async def main() -> float:
        gate = AdmissionGate(rpm=None, tpm=1000, concurrency=None, period_s=60)
        ticket = await gate.admit(100)
        await asyncio.sleep(5)
        gate.release(ticket, 1100)  # 1000 more charged at t=5: the window is over budget
        gate.release(ticket, 5000)  # idempotent: no second correction
        assert gate.stats().tokens_reserved == 1100
        return (await gate.admit(1)).started_at

    assert run_virtual(main()) == pytest.approx(65)  # the charge made at t=5 leaves at t=65


# -- throughput and smooth pace ---------------------------------------------------------------------


def saturate(gate: AdmissionGate, seconds: float, sizes: list[int] | None = None) -> Log:
    """Run more demand than the gate allows for `seconds` of virtual time; log admissions."""
    log = Log()

    async def worker(k: int) -> None:
        rng = random.Random(k)
        while True:
            tokens = rng.choice(sizes) if sizes else 0
            ticket = await gate.admit(tokens)
            log.events.append(("admit", ticket.started_at, tokens))
            await asyncio.sleep(rng.uniform(0.5, 3))
            gate.release(ticket, tokens)

    async def main() -> None:
        workers = [asyncio.create_task(worker(k)) for k in range(200)]
        await asyncio.sleep(seconds)
        await drain(workers)

    run_virtual(main())
    return log


def test_request_throughput_over_five_periods_is_at_the_limit_without_a_burst() -> None:
    rpm, period = 3000, 60.0
    times = saturate(AdmissionGate(rpm=rpm, tpm=None, concurrency=None), 5 * period).admit_times()
    admitted = sum(1 for t in times if t < 5 * period)
    print(f"\nrequests: {admitted} in 5 periods at rpm={rpm}: {admitted / (5 * rpm):.2%} of the limit")
    assert admitted >= 0.98 * 5 * rpm
    assert max_in_window(times, period) <= rpm
    # Smooth (issue 8: a per-second server allows no more): at start only the pacer's small credit
    # (50 ms of pace) goes at once, and no second ever sees more than its share.
    assert sum(1 for t in times if t == 0) <= 3
    assert max_in_window(times, 1.0) <= rpm / period
    # Each second of the first period gets its share: no front-loading of the minute.
    assert sum(1 for t in times if t < 30) <= rpm / 2 + rpm / period


def test_token_throughput_over_five_periods_is_at_the_limit() -> None:
    tpm, period = 200_000, 60.0
    sizes = random.Random(7).choices(range(50, 4000), k=100)
    log = saturate(AdmissionGate(rpm=None, tpm=tpm, concurrency=None), 5 * period, sizes)
    tokens = sum(n for _, t, n in log.events if t < 5 * period)
    print(f"\ntokens: {tokens} admitted in 5 periods at tpm={tpm}: {tokens / (5 * tpm):.2%} of the limit")
    assert tokens >= 0.98 * 5 * tpm
    assert max(token_load_at_admissions(log, period)) <= tpm


# -- concurrency ---------------------------------------------------------------------------------


def test_no_more_than_concurrency_in_flight() -> None:
    peak = 0

    async def request(gate: AdmissionGate, rng: random.Random) -> None:
        nonlocal peak
        await asyncio.sleep(rng.uniform(0, 5))
        async with gate.slot(10):
            peak = max(peak, gate.stats().in_flight)
            await asyncio.sleep(rng.uniform(0, 3))

    async def main() -> None:
        gate = AdmissionGate(rpm=None, tpm=None, concurrency=3)
        rng = random.Random(1)
        await asyncio.gather(*(request(gate, rng) for _ in range(50)))
        assert gate.stats().in_flight == 0
        assert gate.stats().admitted == 50

    run_virtual(main())
    assert peak == 3


def test_slot_releases_on_error_without_correction() -> None:
    async def main() -> None:
        gate = AdmissionGate(rpm=None, tpm=1000, concurrency=1)
        with pytest.raises(RuntimeError):
            async with gate.slot(400):
                raise RuntimeError("boom")
        stats = gate.stats()
        assert (stats.in_flight, stats.tokens_reserved) == (0, 400)
        async with gate.slot(100) as ticket:
            gate.release(ticket, 40)  # a correction inside the block wins; the exit release is a no-op
        assert gate.stats().tokens_reserved == 440

    run_virtual(main())


def test_release_rejects_a_foreign_ticket() -> None:
    async def main() -> None:
        a = AdmissionGate(rpm=None, tpm=None, concurrency=None)
        b = AdmissionGate(rpm=None, tpm=None, concurrency=None)
        with pytest.raises(ValueError, match="another gate"):
            b.release(await a.admit(1))

    run_virtual(main())


# -- 429s: pause and slow down -----------------------------------------------------------------------


def test_slow_down_pauses_everyone_until_retry_after_and_lowers_the_pace_not_the_window() -> None:
    # Issue 8: a 429 lowers the pace; the window keeps the job's limit, so a window full of traffic
    # sent before the 429 (which a per-second server has already forgotten) blocks nothing.
    rpm, period = 600, 60.0

    async def main() -> Log:
        gate = AdmissionGate(rpm=rpm, tpm=None, concurrency=None, period_s=period)
        log = Log()

        async def worker() -> None:
            while True:
                ticket = await gate.admit(0)
                log.events.append(("admit", ticket.started_at, 0))
                await asyncio.sleep(1)
                gate.release(ticket)

        workers = [asyncio.create_task(worker()) for _ in range(50)]
        await asyncio.sleep(120)
        gate.slow_down(retry_after=7.5)
        log.events.append(("429", virtual_time(), 0))
        stats = gate.stats()
        assert stats.paused_until == pytest.approx(127.5)
        assert stats.rate_factor == pytest.approx(0.8)
        await asyncio.sleep(200)
        assert gate.stats().rate_factor == 1.0
        await drain(workers)
        return log

    log = run_virtual(main())
    times = log.admit_times()
    after_429 = [t for kind, t, _ in log.events[[e[0] for e in log.events].index("429") :] if kind == "admit"]
    # Nothing during the pause; the first admission comes at its end, not when the window empties.
    assert min(after_429) == pytest.approx(127.5)
    assert max_in_window(times, period) <= rpm
    # The pace is cut: the factor climbs from 0.8 to 0.96 in 3.2 s, then slowly: the 10 s after the
    # pause admit about 93, where full pace admits 100.
    assert 88 <= sum(1 for t in times if 127.5 <= t < 137.5) <= 95


def test_backoff_doubles_while_429s_keep_coming_and_resets_after_recovery() -> None:
    async def main() -> None:
        gate = AdmissionGate(rpm=100, tpm=None, concurrency=None, period_s=6)  # backoffs scale by 0.1
        pauses, factors = [], []
        for _ in range(8):
            start = virtual_time()
            gate.slow_down()
            until = gate.stats().paused_until
            assert until is not None
            pauses.append(round(until - start, 9))
            factors.append(round(gate.stats().rate_factor, 9))
            await asyncio.sleep(until - start)  # the next 429 comes right after the pause
        assert pauses == [0.1, 0.2, 0.4, 0.8, 1.6, 3.0, 3.0, 3.0]
        assert factors == [0.8, 0.64, 0.512, 0.4096, 0.32768, 0.262144, 0.2097152, 0.16777216]
        await asyncio.sleep(60)  # recovered: the ceiling is forgotten after 6 s, then 0.5/s
        assert gate.stats().rate_factor == 1.0
        await asyncio.sleep(6)
        start = virtual_time()
        gate.slow_down(retry_after=0)  # no usable Retry-After: back off, first step again
        assert gate.stats().paused_until == pytest.approx(start + 0.1)

    run_virtual(main())


def test_slowed_gate_also_paces_slower() -> None:
    async def main() -> list[float]:
        gate = AdmissionGate(rpm=600, tpm=None, concurrency=None, period_s=60)  # 10/s
        gate.slow_down(retry_after=1)  # the window is empty: only the pace can slow this down
        times = []
        while virtual_time() < 6:
            times.append((await gate.admit(0)).started_at)
        return times

    times = run_virtual(main())
    # The factor is 0.8, climbing 0.05/s to 0.96 (3.2 s), then 0.001/s: about 45.5 in 5 s (plus the
    # pacer's credit), where full pace would give 50.
    assert min(times) == pytest.approx(1)
    assert 42 <= sum(1 for t in times if t < 6) <= 47


def test_factor_climbs_fast_below_the_ceiling_then_probes_slowly_then_forgets_it() -> None:
    async def main() -> list[float]:
        gate = AdmissionGate(rpm=100, tpm=None, concurrency=None, period_s=60)
        gate.slow_down(retry_after=10)  # at full pace: the ceiling is 1.0, the knee 0.96
        seen = []
        for at in (5, 10, 12, 18.2, 40, 69.9, 71, 100):
            await asyncio.sleep(at - virtual_time())
            seen.append(gate.stats().rate_factor)
        return seen

    # 0.8 during the pause; +0.05/s up to 0.96 (3.2 s); then +0.001/s, full pace 40 s later.
    assert run_virtual(main()) == pytest.approx([0.8, 0.8, 0.9, 0.965, 0.96 + 0.001 * 26.8, 1.0, 1.0, 1.0], abs=1e-6)


def test_echoed_429s_extend_but_never_shorten_and_do_not_compound() -> None:
    async def main() -> None:
        gate = AdmissionGate(rpm=100, tpm=None, concurrency=None, period_s=60)
        early = await gate.admit(0)
        await asyncio.sleep(1)
        gate.slow_down(retry_after=10)  # pause until 11
        gate.slow_down()  # the same overload, seen by another request
        gate.slow_down(retry_after=3)  # shorter: ignored
        assert gate.stats().paused_until == pytest.approx(11)
        assert gate.stats().rate_factor == pytest.approx(0.8)
        gate.slow_down(retry_after=20)  # longer: extends
        assert gate.stats().paused_until == pytest.approx(21)
        assert gate.stats().rate_factor == pytest.approx(0.8)
        ticket = await gate.admit(0)
        assert ticket.started_at == pytest.approx(21)
        gate.slow_down(ticket=early)  # admitted before the 429 at t=1: an echo, not a new event
        assert gate.stats().paused_until is None
        assert gate.stats().rate_factor == pytest.approx(0.8)
        gate.slow_down(ticket=ticket)  # a request admitted after it: a new event
        assert gate.stats().rate_factor == pytest.approx(0.64)
        assert gate.stats().paused_until == pytest.approx(23)  # second in a row: 2 s

    run_virtual(main())


def test_slowed_gate_never_waits_on_the_window_after_the_pause() -> None:
    async def main() -> float:
        gate = AdmissionGate(rpm=None, tpm=1000, concurrency=None, period_s=60)
        await gate.admit(600)
        gate.slow_down(retry_after=1)
        # 600 + 300 fits the job's 1000: the old law (a window cut to 70%) waited 60 s for it
        return (await gate.admit(300)).started_at

    assert run_virtual(main()) == pytest.approx(1.0, abs=0.5)


# -- cancellation --------------------------------------------------------------------------------


def test_cancelled_waiters_leave_nothing_behind() -> None:
    async def main() -> None:
        gate = AdmissionGate(rpm=1, tpm=1000, concurrency=3, period_s=60)
        held = await gate.admit(100)
        napping = asyncio.create_task(gate.admit(100))  # holds the turn, waits for the window
        queued = asyncio.create_task(gate.admit(100))  # has a slot, waits for the turn
        no_slot = asyncio.create_task(gate.admit(100))  # waits for a slot
        await asyncio.sleep(5)
        assert gate.stats().waiting == 3
        await drain([napping, queued, no_slot])
        stats = gate.stats()
        assert (stats.waiting, stats.in_flight, stats.admitted, stats.tokens_reserved) == (0, 1, 1, 100)
        assert stats.requests_in_window == 1
        # Two slots and the turn are free again; the next admission waits only for `held` to expire.
        nxt = await gate.admit(100)
        assert nxt.started_at == pytest.approx(60)
        gate.release(held)
        gate.release(nxt)
        assert gate.stats().in_flight == 0

    run_virtual(main())


def test_cancelled_while_paced_or_paused_takes_no_capacity() -> None:
    async def main() -> None:
        # 6000 tokens/min: the pacer refills 100 tokens a second.
        gate = AdmissionGate(rpm=None, tpm=6000, concurrency=None, period_s=60)
        await gate.admit(100)
        paced = asyncio.create_task(gate.admit(100))
        await asyncio.sleep(0.5)
        await drain([paced])
        assert (await gate.admit(100)).started_at == pytest.approx(1.0)  # not 2.0: nothing was taken
        gate.slow_down(retry_after=10)
        paused = asyncio.create_task(gate.admit(100))
        await asyncio.sleep(1)
        await drain([paused])
        stats = gate.stats()
        assert (stats.in_flight, stats.tokens_reserved, stats.waiting) == (2, 200, 0)

    run_virtual(main())


# -- FIFO ------------------------------------------------------------------------------------------


def test_large_request_is_not_starved_by_small_ones() -> None:
    async def main() -> list[tuple[str, float]]:
        gate = AdmissionGate(rpm=None, tpm=1000, concurrency=None, period_s=60)
        order: list[tuple[str, float]] = []

        async def request(name: str, tokens: int, at: float) -> Ticket:
            await asyncio.sleep(at)
            ticket = await gate.admit(tokens)
            order.append((name, ticket.started_at))
            return ticket

        await gate.admit(600)
        await asyncio.gather(
            request("large", 900, 0.1),
            *(request(f"small{i}", 50, 0.2 + i / 10) for i in range(5)),
        )
        return order

    order = run_virtual(main())
    assert [name for name, _ in order] == ["large"] + [f"small{i}" for i in range(5)]
    assert order[0][1] == pytest.approx(60)  # waited for the 600 to leave, though 50s would have fit


def test_stats_snapshot() -> None:
    async def main() -> None:
        gate = AdmissionGate(rpm=10, tpm=100, concurrency=2, period_s=60)
        a = await gate.admit(30)
        await gate.admit(20)
        stats = gate.stats()
        assert stats.in_flight == 2
        assert stats.admitted == 2
        assert stats.tokens_reserved == 50
        assert stats.requests_in_window == 2
        assert stats.rate_factor == 1.0
        assert stats.paused_until is None
        gate.release(a, 10)
        assert gate.stats().tokens_reserved == 30
        await asyncio.sleep(60)
        assert gate.stats().tokens_reserved == 0
        assert gate.stats().requests_in_window == 0

    run_virtual(main())


def test_free_slot_goes_to_the_highest_priority_then_fifo() -> None:
    async def main() -> list[str]:
        gate = AdmissionGate(rpm=None, tpm=None, concurrency=2)
        order: list[str] = []
        held = [await gate.admit(0), await gate.admit(0)]

        async def wait(name: str, priority: float) -> None:
            ticket = await gate.admit(0, priority)
            order.append(name)
            await asyncio.sleep(1)
            gate.release(ticket)

        tasks = []
        for name, prio in [("short", 1.0), ("long", 9.0), ("mid-a", 5.0), ("gone", 99.0), ("mid-b", 5.0)]:
            tasks.append(asyncio.create_task(wait(name, prio)))
            await asyncio.sleep(0)
        tasks[3].cancel()  # a cancelled waiter never takes a slot, nor loses one
        await asyncio.sleep(0)
        for t in held:
            gate.release(t)
        await asyncio.gather(*tasks, return_exceptions=True)
        assert gate.stats().in_flight == 0
        return order

    assert run_virtual(main()) == ["long", "mid-a", "mid-b", "short"]


def test_a_slot_handed_to_a_cancelled_waiter_passes_on() -> None:
    async def main() -> None:
        gate = AdmissionGate(rpm=None, tpm=None, concurrency=1)
        held = await gate.admit(0)
        first = asyncio.create_task(gate.admit(0, 2.0))
        second = asyncio.create_task(gate.admit(0, 1.0))
        await asyncio.sleep(0)
        gate.release(held)  # hands the slot to `first` ...
        first.cancel()  # ... which is cancelled before it runs
        ticket = await asyncio.wait_for(second, 1)
        assert first.cancelled() and gate.stats().in_flight == 1
        gate.release(ticket)

    run_virtual(main())


def test_token_amount_is_asked_when_the_request_reaches_the_head_of_the_queue() -> None:
    async def main() -> tuple[list[int], list[float]]:
        # 60 tokens per second: each request of 60 holds the pacer for a second.
        gate = AdmissionGate(rpm=None, tpm=3600, concurrency=None, period_s=60)
        learned = {"tokens": 60}
        asked: list[float] = []

        def amount() -> int:
            asked.append(virtual_time())
            return learned["tokens"]

        requests = [asyncio.ensure_future(gate.admit(n)) for n in (60, 60, amount)]
        await asyncio.sleep(0.5)
        learned["tokens"] = 30  # an answer taught us better while the third request queued
        tickets = await asyncio.gather(*requests)
        return [t.reserved for t in tickets], asked

    reserved, asked = run_virtual(main())
    assert reserved == [60, 60, 30]
    # asked on arrival (to refuse what can never fit), then when its turn came: after the second
    assert asked[0] == 0 and asked[-1] == pytest.approx(1.0)
