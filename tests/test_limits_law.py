"""The gate's control law (issue 8) on the fake clock: windows never over their limits whatever the 429s
and headers, no start burst, a 429'd reservation given back, headers adopted, recovery after 429s stop,
and concurrency lowered by parallel-request 429s (issue 14)."""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.cache import NoCache
from pipeline.calls import MAX_FREE_429S, CallError, ProviderClient, RunStats
from pipeline.errors import ConcurrencyLimited, RateLimited
from pipeline.job.model import Retry
from pipeline.limits import AdmissionGate
from pipeline.retry import RateHeaders, classify, parse_duration, parse_rate_headers
from pipeline.transport import HttpRequest, HttpResponse

try:
    from tests.fakeclock import run_virtual, virtual_time
    from tests.test_calls import OK, FakeTransport, parse
    from tests.test_limits import drain, max_in_window
except ModuleNotFoundError:  # tests/ collected as plain directory
    from fakeclock import run_virtual, virtual_time  # type: ignore[no-redef]
    from test_calls import OK, FakeTransport, parse  # type: ignore[no-redef]
    from test_limits import drain, max_in_window  # type: ignore[no-redef]


def saturate(
    gate: AdmissionGate, seconds: float, events: dict[float, Any] | None = None, workers: int = 200, tokens: int = 0
) -> list[float]:
    """Admission times under more demand than the gate allows; `events` maps a time to a gate call."""
    times: list[float] = []

    async def worker(k: int) -> None:
        rng = random.Random(k)
        while True:
            ticket = await gate.admit(tokens)
            times.append(ticket.started_at)
            await asyncio.sleep(rng.uniform(0.2, 1.5))
            gate.release(ticket, tokens)

    async def main() -> None:
        tasks = [asyncio.create_task(worker(k)) for k in range(workers)]
        for at, action in sorted((events or {}).items()):
            await asyncio.sleep(at - virtual_time())
            action(gate)
        await asyncio.sleep(seconds - virtual_time())
        await drain(tasks)

    run_virtual(main())
    return times


# -- no window above its limit, whatever happens ----------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rpm=st.integers(60, 3000),
    incidents=st.lists(
        st.tuples(
            st.floats(0, 90), st.sampled_from(["429", "429-short", "echo", "header", "parallel"]), st.floats(0.001, 10)
        ),
        max_size=12,
    ),
)
def test_no_window_ever_above_its_limit(rpm: int, incidents: list[tuple[float, str, float]]) -> None:
    gate = AdmissionGate(rpm=rpm, tpm=None, concurrency=80, period_s=60)
    learned: list[tuple[float, int]] = []

    def act(kind: str, x: float) -> Any:
        def go(g: AdmissionGate) -> None:
            if kind == "429":
                g.slow_down(x)
            elif kind == "429-short":
                g.slow_down(min(x, 1.0))
            elif kind == "echo":
                g.slow_down(None)
            elif kind == "parallel":
                g.slow_down(x, concurrency=True)
            else:
                limit = max(1, int(rpm * min(1.0, x / 10)))
                learned.append((virtual_time(), limit))
                g.observe(RateHeaders(limit_requests=limit))

        return go

    events = {at + i * 1e-6: act(kind, x) for i, (at, kind, x) in enumerate(incidents)}
    times = saturate(gate, 150, events)
    assert max_in_window(times, 60) <= rpm
    assert max_in_window(times, 1.0) <= math.ceil(rpm / 60)
    # after a header lowered the limit, no window that starts later holds more than it
    for at, limit in learned:
        later = [t for t in times if t >= at]
        if not any(a > at for a, _ in learned):
            assert max_in_window(later, 60) <= limit


def test_token_windows_hold_with_refused_requests_given_back() -> None:
    tpm = 60_000  # 1,000 a second
    gate = AdmissionGate(rpm=None, tpm=tpm, concurrency=None, period_s=60)
    loads: list[float] = []

    async def worker(k: int) -> None:
        rng = random.Random(k)
        while True:
            ticket = await gate.admit(rng.randint(50, 400))
            loads.append(gate.stats().tokens_reserved)
            await asyncio.sleep(rng.uniform(0.1, 1))
            if rng.random() < 0.1:
                gate.release(ticket, rejected=True)
                gate.slow_down(0.2, ticket=ticket)
            else:
                gate.release(ticket, int(ticket.reserved * rng.uniform(0.5, 1.0)))

    async def main() -> None:
        tasks = [asyncio.create_task(worker(k)) for k in range(50)]
        await asyncio.sleep(300)
        await drain(tasks)

    run_virtual(main())
    assert max(loads) <= tpm


# -- smooth from the first second --------------------------------------------------------------


def test_no_start_burst_above_the_per_second_share() -> None:
    # The job's 3000 RPM with the executor's margin, as a per-second server sees it: 50 per second.
    times = saturate(AdmissionGate(rpm=3000, tpm=None, concurrency=None, period_s=60.65), 10)
    assert sum(1 for t in times if t < 1.0) <= 50
    assert sum(1 for t in times if t == 0) <= 3
    assert max_in_window(times, 1.0) <= 50
    # evenly inside the second: no 100 ms slice holds more than its share plus the pacer's credit
    assert max_in_window(times, 0.1) <= 5 + 3


def test_no_burst_after_a_pause() -> None:
    times = saturate(
        AdmissionGate(rpm=3000, tpm=None, concurrency=None, period_s=60.65), 40, {10.0: lambda g: g.slow_down(5.0)}
    )
    after = [t for t in times if t >= 15.0]
    assert min(after) == pytest.approx(15.0)
    assert sum(1 for t in after if t < 16.0) <= 50 * 0.8 + 3  # the slowed pace, not a refill
    assert not [t for t in times if 10.0 < t < 15.0]


def test_token_pace_spreads_requests_inside_the_second() -> None:
    # 1M TPM: 16,666 tokens a second; requests of 4,000 go about a quarter second apart, not at once.
    times = saturate(AdmissionGate(rpm=None, tpm=1_000_000, concurrency=None, period_s=60), 10, tokens=4000)
    gaps = [b - a for a, b in zip(times[1:], times[2:], strict=False)]
    assert min(gaps) >= 4000 / (1_000_000 / 60) - 1e-6
    assert sum(1 for t in times if t < 1.0) <= 5


def test_late_wake_ups_do_not_lose_throughput() -> None:
    # The loop blocked for 0.2 s every 2 s (a Parquet part of embedding vectors written on it): the
    # request waiting for the pace wakes up to 0.2 s late. That time is caught up, not lost (it was
    # 95% of the token pace when a late wake-up kept only what a request's size could bank).
    def stall(gate: AdmissionGate) -> None:
        loop = asyncio.get_running_loop()
        assert hasattr(loop, "advance")
        loop.advance(0.2)  # time passes and no callback runs

    stalls: dict[float, Any] = {2.0 * k + 0.05: stall for k in range(1, 30)}
    # 1M TPM in requests of 1,666 tokens (embed's default batch): about ten a second
    times = saturate(AdmissionGate(rpm=None, tpm=1_000_000, concurrency=None, period_s=60), 60, stalls, tokens=1666)
    assert (len(times) - 1) * 1666 / (times[-1] - times[0]) >= 0.99 * 1_000_000 / 60
    assert times[-1] < 60 and len(times) * 1666 <= 1_000_000  # one window: never above its limit
    # the catch-up is at most the lateness banked (0.2 s of pace) on top of the usual pacing
    assert max_in_window(times, 0.1) <= 1 + math.ceil(0.3 * 1_000_000 / 60 / 1666)


# -- 429s -------------------------------------------------------------------------------------


def test_429_gives_back_the_reservation() -> None:
    async def main() -> tuple[float, int, int]:
        gate = AdmissionGate(rpm=2, tpm=1000, concurrency=None, period_s=60)
        ticket = await gate.admit(900)
        gate.release(ticket, rejected=True)  # the server refused it: it charged nothing
        stats = gate.stats()
        again = await gate.admit(900)  # not 60 s later: the window is empty again
        other = await gate.admit(100)
        return again.started_at, stats.tokens_reserved, stats.requests_in_window + other.reserved

    started, tokens, requests = run_virtual(main())
    assert tokens == 0 and requests == 100
    assert started < 60


def test_recovery_to_the_configured_pace_within_80_s_after_429s_stop() -> None:
    rpm = 3000
    # a storm: a new 429 every 0.5 s for 10 s drives the pace to its floor
    storm = {5.0 + k / 2: (lambda g: g.slow_down(0.1)) for k in range(20)}
    times = saturate(AdmissionGate(rpm=rpm, tpm=None, concurrency=None, period_s=60), 200, storm)
    last = 15.0
    # 60 s to forget the ceiling, then 0.05/s: full pace again by 80 s after the last 429
    for start in (last + 80, last + 100):
        in_10s = sum(1 for t in times if start <= t < start + 10)
        assert in_10s >= 0.98 * rpm / 6, (start, in_10s)
    assert sum(1 for t in times if last <= t < last + 10) < 0.4 * rpm / 6  # it was really slowed


def test_ceiling_is_probed_slowly_then_forgotten() -> None:
    async def main() -> list[float]:
        gate = AdmissionGate(rpm=100, tpm=None, concurrency=None, period_s=60)
        gate.slow_down(0.001)
        await asyncio.sleep(3)
        gate.slow_down(0.001)  # a second 429 at 0.8 + climb: the ceiling drops below 1
        ceiling = gate.stats().rate_factor / 0.8
        seen = [ceiling]
        for at in (20, 30, 62.9, 64, 70):
            await asyncio.sleep(at - virtual_time())
            seen.append(gate.stats().rate_factor)
        return seen

    ceiling, at20, at30, at63, at64, at70 = run_virtual(main())
    knee = ceiling * 0.96
    assert at20 == pytest.approx(knee + 0.001 * (20 - 3.001 - (knee - 0.8 * ceiling) / 0.05), abs=1e-6)
    assert at30 < ceiling  # 27 s after the 429: still below the pace that drew it
    assert at63 < 0.98 and at64 == 1.0  # forgotten 60 s after the 429: the fast climb is back
    assert at70 == 1.0


def test_retry_after_is_the_pause_exactly() -> None:
    async def main() -> float:
        gate = AdmissionGate(rpm=600, tpm=None, concurrency=None, period_s=60)
        for _ in range(300):  # a full minute of history at the old pace
            gate.release(await gate.admit(0))
        gate.slow_down(0.001)
        return (await gate.admit(0)).started_at - virtual_time()

    assert run_virtual(main()) <= 0.11  # the pause, then the (slowed) pace: never the window


def test_headers_lower_the_limits_before_any_429() -> None:
    async def main() -> tuple[list[float], Any]:
        gate = AdmissionGate(rpm=3000, tpm=1_000_000, concurrency=None, period_s=60)
        gate.observe(RateHeaders(limit_requests=1500, limit_tokens=400_000, remaining_requests=1400))
        times = []
        while virtual_time() < 30:
            times.append((await gate.admit(100)).started_at)
        return times, gate.stats()

    times, stats = run_virtual(main())
    assert (stats.rpm, stats.tpm, stats.learned) == (1500, 400_000, {"rpm": 1500, "tpm": 400_000})
    assert stats.rate_factor == 1.0
    assert max_in_window(times, 1.0) <= 25
    assert len(times) <= 25 * 30 + 3
    assert "server says 1,500" in stats.describe()


def test_headers_never_raise_the_configured_limits() -> None:
    async def main() -> Any:
        gate = AdmissionGate(rpm=100, tpm=None, concurrency=None, period_s=60)
        gate.observe(RateHeaders(limit_requests=10_000))
        return gate.stats()

    assert run_virtual(main()).rpm == 100


def test_empty_remaining_holds_until_reset() -> None:
    async def main() -> float:
        gate = AdmissionGate(rpm=3000, tpm=None, concurrency=None, period_s=60)
        gate.observe(RateHeaders(remaining_requests=0, reset_requests_s=0.4))
        return (await gate.admit(0)).started_at

    assert run_virtual(main()) == pytest.approx(0.4)


def test_binding_limit_is_reported() -> None:
    gate = AdmissionGate(rpm=600, tpm=None, concurrency=500, period_s=60)
    saturate(gate, 30)

    async def snap() -> Any:
        return gate.stats()

    stats = run_virtual(snap())
    assert stats.binding == "requests/min"
    assert stats.describe().startswith("binding: requests/min, rpm 600")


# -- concurrency refused by the server (LiteLLM max_parallel_requests) ---------------------------


def test_parallel_429_lowers_concurrency_then_it_recovers_slowly() -> None:
    async def main() -> list[int | None]:
        gate = AdmissionGate(rpm=None, tpm=None, concurrency=10, period_s=60)
        tickets = [await gate.admit(0) for _ in range(5)]
        gate.release(tickets[4], rejected=True)
        gate.slow_down(60, ticket=tickets[4], concurrency=True)  # refused as the 5th in flight
        seen = [gate.stats().concurrency]
        assert gate.stats().paused_until is None  # the cap is the cure, not a 60 s pause
        gate.release(tickets[3], rejected=True)
        gate.slow_down(60, ticket=tickets[3], concurrency=True)  # the 4th: the server allows 3
        seen.append(gate.stats().concurrency)
        gate.slow_down(60, ticket=tickets[4], concurrency=True)  # late echo of the 5th: no change
        seen.append(gate.stats().concurrency)
        await asyncio.sleep(31)
        seen.append(gate.stats().concurrency)
        await asyncio.sleep(30 * 10)
        seen.append(gate.stats().concurrency)
        return seen

    assert run_virtual(main()) == [4, 3, 3, 4, 10]


def test_parallel_429_for_a_request_sent_alone_pauses_for_retry_after() -> None:
    async def main() -> float | None:
        gate = AdmissionGate(rpm=None, tpm=None, concurrency=4, period_s=60)
        alone = await gate.admit(0)
        gate.release(alone, rejected=True)
        gate.slow_down(60, ticket=alone, concurrency=True)
        return gate.stats().paused_until

    assert run_virtual(main()) == pytest.approx(60)


# -- the client: 429s cost time, not attempts ------------------------------------------------------


def _client(script: list[Any], attempts: int = 2, concurrency: int = 4) -> tuple[ProviderClient, FakeTransport]:
    t = FakeTransport(list(script))
    gate = AdmissionGate(rpm=None, tpm=1000, concurrency=concurrency)
    c = ProviderClient(
        t,
        gate,
        NoCache(),
        Retry(max_attempts=attempts, backoff_base_s=1, backoff_cap_s=60),
        RunStats(),
        rng=random.Random(1),
    )
    return c, t


def _call(c: ProviderClient) -> Any:
    return c.call(HttpRequest("/chat/completions", json_body={}), tokens=300, cache_key=None, parse=parse)


def _limited(message: str = "Rate limit reached for requests", **headers: str) -> tuple[int, bytes, dict[str, str]]:
    body = json.dumps({"error": {"message": message, "type": "rate_limit_exceeded", "code": "rate_limit_exceeded"}})
    return 429, body.encode(), {"retry-after-ms": "10", **headers}


def test_429s_do_not_spend_attempts_and_give_tokens_back() -> None:
    c, t = _client([_limited()] * 5 + [(200, OK, {})], attempts=2)

    async def main() -> Any:
        reply = await _call(c)
        return reply, c.gate.stats()

    reply, stats = run_virtual(main())
    assert reply.attempts == 1 and len(t.sent) == 6
    assert stats.tokens_reserved == 7 + 1  # only the answered request's usage stays counted
    assert c.stats.rate_limited == 5


def test_a_server_that_always_429s_still_fails_the_row() -> None:
    c, t = _client([_limited()] * 100, attempts=2)
    with pytest.raises(CallError) as caught:
        run_virtual(_call(c))
    assert isinstance(caught.value.error, RateLimited)
    assert len(t.sent) == MAX_FREE_429S + 2


def test_headers_on_answers_reach_the_gate() -> None:
    c, _ = _client([(200, OK, {"x-ratelimit-limit-tokens": "600", "x-ratelimit-remaining-tokens": "500"})])

    async def main() -> Any:
        await _call(c)
        return c.gate.stats()

    assert run_virtual(main()).tpm == 600


# -- parsing ---------------------------------------------------------------------------------------


def test_parse_rate_headers_and_durations() -> None:
    assert [parse_duration(s) for s in ("6m0s", "1s", "20ms", "1h2m3.5s", "0.25", "soon", "")] == [
        360,
        1,
        0.02,
        3723.5,
        0.25,
        None,
        None,
    ]
    h = parse_rate_headers(
        HttpResponse(
            200,
            b"",
            {
                "X-RateLimit-Limit-Requests": "3000",
                "x-ratelimit-remaining-requests": "2999",
                "x-ratelimit-reset-requests": "20ms",
                "x-ratelimit-limit-tokens": "1000000",
                "x-ratelimit-remaining-tokens": "999000",
                "x-ratelimit-reset-tokens": "6m0s",
            },
        ).headers
    )
    assert h == RateHeaders(3000, 1_000_000, 2999, 999_000, 0.02, 360)
    assert parse_rate_headers({"content-type": "application/json"}) is None


def test_classify_parallel_request_429s_and_reset_as_retry_after() -> None:
    litellm = json.dumps(
        {
            "error": {
                "message": "Max parallel request limit reached Hit limit for api_key: sk-***. "
                "current max_parallel_requests: 1. Limit type: max_parallel_requests",
                "type": "None",
                "param": "None",
                "code": "429",
            }
        }
    ).encode()
    err = classify(429, litellm, {"retry-after": "60"})
    assert isinstance(err, ConcurrencyLimited) and err.retry_after == 60
    plain = classify(
        429,
        b"",
        {
            "x-ratelimit-remaining-tokens": "0",
            "x-ratelimit-reset-tokens": "1.5s",
            "x-ratelimit-remaining-requests": "10",
            "x-ratelimit-reset-requests": "9s",
        },
    )
    assert type(plain) is RateLimited and plain.retry_after == 1.5


# -- `auto` limits ---------------------------------------------------------------------------------


def test_auto_rpm_starts_slow_and_grows_while_it_holds_demand_back() -> None:
    gate = AdmissionGate(rpm=None, tpm=None, concurrency=None, period_s=60, auto=("rpm",))
    times = saturate(gate, 31)
    assert sum(1 for t in times if t < 5) <= 5 + 3  # 60/min: one a second at first
    # x1.5 (rounded up) every 5 s of held-back demand: 60 -> 687/min after 30 s
    assert 8 <= sum(1 for t in times if 30 <= t < 31) <= 12
    assert max_in_window(times, 60) <= 687

    async def snap() -> Any:
        return gate.stats()

    stats = run_virtual(snap())
    assert stats.auto == {"rpm": "discovering"} and stats.rpm == 687  # 60, 90, 135, 203, 305, 458, 687


def test_auto_rpm_stops_at_the_first_429_and_takes_header_figures() -> None:
    async def main() -> tuple[Any, Any]:
        gate = AdmissionGate(rpm=None, tpm=None, concurrency=None, period_s=60, auto=("rpm", "tpm"))
        for _ in range(40):
            gate.release(await gate.admit(10))
        gate.slow_down(0.5)
        at_429 = gate.stats()
        gate.observe(RateHeaders(limit_tokens=2_000_000))
        return at_429, gate.stats()

    at_429, later = run_virtual(main())
    assert at_429.auto["rpm"] == f"429s began at {at_429.rpm:,}/min"
    assert later.auto["tpm"] == "from x-ratelimit headers" and later.tpm == 2_000_000
    assert "rpm" in later.auto and "(auto: from x-ratelimit headers)" in later.describe()


def test_a_429_with_the_second_held_to_its_share_widens_the_second_not_the_pace() -> None:
    async def main() -> tuple[list[float], list[float], Any]:
        gate = AdmissionGate(rpm=3000, tpm=None, concurrency=None, period_s=60)
        tickets = [await gate.admit(0) for _ in range(55)]  # a second's 50, then the next second's
        edge = next(t for t in tickets if t.edge)
        calm = tickets[0]
        assert not calm.edge
        gate.release(edge, rejected=True)
        gate.slow_down(0.01, ticket=edge)
        widened = gate.stats()
        times = [(await gate.admit(0)).started_at for _ in range(200)]
        gate.slow_down(0.01)  # no ticket to go by: the pace comes down as usual
        return times, [widened.rate_factor, gate.stats().rate_factor], widened

    times, factors, _ = run_virtual(main())
    assert factors == [1.0, pytest.approx(0.8)]
    assert max_in_window(times, 1.01) <= 50  # the second is now 1% longer


def test_binding_is_concurrency_only_while_every_slot_is_on_the_wire() -> None:
    seen: list[Any] = []
    saturate(
        AdmissionGate(rpm=None, tpm=None, concurrency=5, period_s=60), 20, {19.0: lambda g: seen.append(g.stats())}
    )
    saturate(
        AdmissionGate(rpm=6000, tpm=None, concurrency=20, period_s=60),
        40,
        {1.0: lambda g: g.slow_down(30), 39.0: lambda g: seen.append(g.stats())},
    )
    busy, paused = seen
    assert busy.binding == "concurrency" and busy.waited_s["concurrency"] > 15
    # a 30 s pause queues every caller behind full slots: that is the pause binding, not concurrency
    assert paused.binding == "429 pauses"


def count_naps(monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """Count the gate's naps (its timers) from now on: returns how many so far."""
    naps = 0
    nap = AdmissionGate._nap

    async def counted(self: AdmissionGate, loop: asyncio.AbstractEventLoop, until: float, why: str) -> None:
        nonlocal naps
        naps += 1
        await nap(self, loop, until, why)

    monkeypatch.setattr(AdmissionGate, "_nap", counted)
    return lambda: naps


def test_the_head_naps_once_per_admission_when_answers_give_back_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    # Issue 8/12 (CPU): chat answers give back part of their token reservations while the request
    # pace binds. Such a refund cannot let the head go earlier, so it does not wake it: one timer
    # per admission (it was two: every answer woke the head, which computed the same time again).
    nap_count = count_naps(monkeypatch)
    admitted = 0

    async def main() -> None:
        nonlocal admitted
        gate = AdmissionGate(rpm=3000, tpm=1_000_000, concurrency=100, period_s=60.65)

        async def worker() -> None:
            nonlocal admitted
            while True:
                ticket = await gate.admit(40)
                admitted += 1
                await asyncio.sleep(0.05)
                gate.release(ticket, 25)

        tasks = [asyncio.create_task(worker()) for _ in range(20)]
        await asyncio.sleep(20)
        await drain(tasks)

    run_virtual(main())
    assert admitted >= 0.98 * 3000 / 60.65 * 20
    naps = nap_count()
    assert naps <= 1.02 * admitted


def test_a_refund_still_wakes_a_head_held_by_the_token_window() -> None:
    async def main() -> float:
        gate = AdmissionGate(rpm=None, tpm=1000, concurrency=None, period_s=60)
        big = await gate.admit(900)
        waiter = asyncio.ensure_future(gate.admit(600))  # held by the window until 900 expire
        await asyncio.sleep(5)
        gate.release(big, 100)  # the answer used 100: room now
        return (await waiter).started_at

    assert run_virtual(main()) == pytest.approx(5.0)


def test_a_per_second_429_below_the_share_sets_the_pace_under_it_at_once_and_waits_out_the_second() -> None:
    # 1,000 tokens a second; half a second at full pace, then the server (whose own share is ~450)
    # refuses a request with a short Retry-After: the second held half its share when it did.
    async def main() -> tuple[float, float, list[tuple[float, int]]]:
        gate = AdmissionGate(rpm=None, tpm=60_000, concurrency=None, period_s=60)
        sent: list[tuple[float, int]] = []
        last = None
        while virtual_time() < 0.5:
            last = await gate.admit(50)
            sent.append((last.started_at, 50))
        assert last is not None
        gate.release(last, rejected=True)
        sent.pop()
        gate.slow_down(0.01, ticket=last)
        factor = gate.stats().rate_factor
        while virtual_time() < 30:
            t = await gate.admit(50)
            sent.append((t.started_at, 50))
        return factor, last.fill, sent

    factor, fill, sent = run_virtual(main())
    assert 0.45 <= fill <= 0.55
    assert factor == pytest.approx(0.96 * fill)  # not 0.8: under what the refused second held
    # from then on no second holds more than the learned pace (probed by 1% in 30 s) lets, and the
    # second cap 4% over it: the half second sent at full pace before the 429 is waited out, not
    # sent into
    for t0, _ in sent:
        in_second = sum(n for t, n in sent if t0 - 1.0 < t <= t0)
        assert in_second <= 1000 * (0.96 * fill + 0.01) * 1.04 + 1e-9
    assert sum(n for t, n in sent if t >= 10) >= 0.96 * 0.48 * 1000 * 20  # and the pace is kept


def test_a_learned_per_second_limit_is_probed_over_two_minutes_then_forgotten() -> None:
    async def main() -> tuple[float, float, list[float]]:
        gate = AdmissionGate(rpm=None, tpm=60_000, concurrency=None, period_s=60)
        for _ in range(10):
            t = await gate.admit(50)
        gate.slow_down(0.01, ticket=t)  # the second held half its share: 0.48, unconfirmed
        await asyncio.sleep(2)
        for _ in range(10):
            t = await gate.admit(50)
        before = gate.stats().rate_factor
        gate.slow_down(0.01, ticket=t)  # a second one agrees: the limit is held
        start = virtual_time() + 0.01  # the pause's end
        seen = []
        for at in (20, 60, 149, 170, 200):
            await asyncio.sleep(start + at - virtual_time())
            seen.append(gate.stats().rate_factor)
        return before, t.fill, seen

    before, fill, (at20, at60, at149, at170, at200) = run_virtual(main())
    ceiling = min(before, fill)
    assert 0.45 <= ceiling <= 0.55
    knee = 0.96 * ceiling
    to_knee = (knee - 0.8 * before) / 0.05  # x0.8 (deeper than the knee), then the fast climb
    probe = 0.04 / 120  # past the knee: 4% of full pace in 120 s (not 40 s)
    assert at20 == pytest.approx(knee + probe * (20 - to_knee), abs=1e-6)
    assert at60 == pytest.approx(knee + probe * (60 - to_knee), abs=1e-6)
    assert at149 == pytest.approx(knee + probe * (149 - to_knee), abs=1e-6)
    assert at170 == at200 == 1.0  # no 429 for 150 s: forgotten, the fast climb is back


def test_one_per_second_429_alone_is_probed_the_usual_way() -> None:
    # a single 429 below the share may be clock skew on a loaded machine: the pace is lowered under
    # the second's fill, but the climb past it is the usual one (4% in 40 s, forgotten after 60 s)
    async def main() -> list[float]:
        gate = AdmissionGate(rpm=None, tpm=60_000, concurrency=None, period_s=60)
        for _ in range(10):
            t = await gate.admit(50)
        gate.slow_down(0.01, ticket=t)
        seen = [gate.stats().rate_factor]
        for at in (20, 40, 80):
            await asyncio.sleep(at - virtual_time())
            seen.append(gate.stats().rate_factor)
        return seen

    knee, at20, at40, at80 = run_virtual(main())
    assert knee == pytest.approx(0.48, abs=0.03)
    assert at20 == pytest.approx(knee + 0.001 * (20 - 0.46), abs=0.002)
    assert at40 < 0.96 < at80 == 1.0


def test_short_retry_afters_of_a_per_minute_server_are_not_per_second_evidence() -> None:
    # A per-minute server whose window is full answers short Retry-Afters too (as its entries expire).
    # Once a 429 came with a long one, a short one for a request sent into an empty second is the
    # usual x0.8, not a per-second limit learned from that second (which collapsed the pace to 10%).
    async def main() -> tuple[float, float, float]:
        gate = AdmissionGate(rpm=3000, tpm=None, concurrency=None, period_s=60.65)
        first = await gate.admit(0)
        await asyncio.sleep(30)
        gate.slow_down(29.0, ticket=first)  # the minute is full: a long pause
        after_long = gate.stats().rate_factor
        alone = await gate.admit(0)  # at the end of the pause: its second holds only itself
        gate.slow_down(0.005, ticket=alone)
        return after_long, alone.fill, gate.stats().rate_factor

    after_long, fill, factor = run_virtual(main())
    assert after_long == pytest.approx(0.8)
    assert fill < 0.05
    assert factor == pytest.approx(0.8 * 0.8)


def test_a_learned_per_second_limit_at_most_halves_the_pace_in_one_429() -> None:
    async def main() -> float:
        gate = AdmissionGate(rpm=3000, tpm=None, concurrency=None, period_s=60.65)
        alone = await gate.admit(0)  # its second holds only itself: 2% of the share
        gate.slow_down(0.005, ticket=alone)
        return gate.stats().rate_factor

    assert run_virtual(main()) == pytest.approx(0.5 * 0.96)


def test_an_answer_over_its_reservation_counts_in_its_second() -> None:
    # A per-second server counted the request at its arrival with what it really held: an answer whose
    # usage is above the reservation (a text mix the calibration had not seen yet) fills that second
    # by the difference, so the next request waits for the second to pass instead of being refused.
    async def main() -> float:
        gate = AdmissionGate(rpm=None, tpm=60_000, concurrency=None, period_s=60)  # 1,000 a second
        gate.slow_down(0.001)  # a short Retry-After: the server counts per second
        await asyncio.sleep(0.01)
        ticket = await gate.admit(500)
        gate.release(ticket, 950)
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0.6)  # the pace has room again; the second has not
        start = loop.time()
        await gate.admit(100)
        return loop.time() - start

    waited = run_virtual(main())
    assert waited == pytest.approx(0.41, abs=0.01)  # until the first request's second ends


def test_a_429_for_a_second_our_own_count_held_full_holds_seconds_and_keeps_the_clocks() -> None:
    # Tokens are paced, not windowed, until a per-second server shows itself: the pace lets a second hold
    # its share plus one request. A 429 for a request admitted into such a second is explained by our
    # own count: every second is held from then on, but the second is not widened (the clocks agree)
    # and the pace stays.
    async def main() -> tuple[bool, float, float, list[float]]:
        gate = AdmissionGate(rpm=None, tpm=60_000, concurrency=None, period_s=60)  # 1,000 a second
        tickets = [await gate.admit(300) for _ in range(5)]  # 1,500 within the first second
        over = tickets[-1]
        gate.release(over, rejected=True)
        gate.slow_down(0.01, ticket=over)
        times: list[float] = []
        for _ in range(40):
            t = await gate.admit(300)
            gate.release(t, 300)
            times.append(t.started_at)
        return over.unheld, gate._short_margin, gate.stats().rate_factor, times

    unheld, margin, factor, times = run_virtual(main())
    assert unheld
    assert margin == 0.0
    assert factor == 1.0
    assert max_in_window(times, 1.0) <= 3  # 900 tokens a second: three requests of 300, never four


def test_a_widened_second_narrows_again_after_a_quiet_minute() -> None:
    async def main() -> list[float]:
        gate = AdmissionGate(rpm=3000, tpm=None, concurrency=None, period_s=60)
        tickets = [await gate.admit(0) for _ in range(55)]
        edge = next(t for t in tickets if t.edge)
        gate.release(edge, rejected=True)
        gate.slow_down(0.01, ticket=edge)
        margins = [gate._short_margin]
        await asyncio.sleep(59.0)
        await gate.admit(0)
        margins.append(gate._short_margin)  # not a minute yet
        await asyncio.sleep(1.5)
        await gate.admit(0)
        margins.append(gate._short_margin)
        return margins

    assert run_virtual(main()) == [pytest.approx(0.01), pytest.approx(0.01), 0.0]


def test_a_held_per_second_limit_shrinks_the_second_packs_are_sized_for() -> None:
    # Packs are a tenth of the second's token budget; at a per-second server's lower limit they are a
    # tenth of its second, not of the job's (or one pack more or less in its second is a 20% step).
    async def main() -> tuple[int | None, int | None, int | None]:
        gate = AdmissionGate(rpm=None, tpm=60_000, concurrency=None, period_s=60)  # 1,000 a second
        before = gate.token_share(1.0)
        tickets = [await gate.admit(100) for _ in range(5)]  # half the second
        gate.release(tickets[-1], rejected=True)
        gate.slow_down(0.01, ticket=tickets[-1])  # refused with its second half full: the server's is lower
        held = gate.token_share(1.0)
        await asyncio.sleep(400.0)  # no 429 since: the limit is forgotten and the pace climbs back
        await gate.admit(100)
        return before, held, gate.token_share(1.0)

    before, held, after = run_virtual(main())
    assert before == 1000
    assert held is not None and 400 <= held <= 520
    assert after == 1000


def test_a_429_just_under_a_held_per_second_limit_widens_the_second_and_keeps_the_pace() -> None:
    # Once a per-second server's limit is confirmed (two 429s agree on ~0.5 of the job's second), a 429 for
    # a second that held a little less than that is the clocks disagreeing (arrival skew on a busy
    # machine), as at the edge of a full second: the second widens, the pace and the limit stay. Read as
    # a limit lower still, each such 429 ratcheted the pace down (a real run ended at 40% for a server
    # allowing 50%). A second that held the limit or more is a probe past it: the pace comes down.
    async def main() -> tuple[float, float, float, float, float, float]:
        gate = AdmissionGate(rpm=None, tpm=60_000, concurrency=None, period_s=60)  # 1,000 a second
        for _ in range(10):
            t = await gate.admit(50)
        gate.slow_down(0.01, ticket=t)  # half the second held: 0.5, seen
        await asyncio.sleep(2)
        for _ in range(10):
            t = await gate.admit(50)
        gate.slow_down(0.01, ticket=t)  # agrees: held
        await asyncio.sleep(3)
        held = gate.stats().rate_factor
        for _ in range(9):
            t = await gate.admit(50)  # 450 of the second: under the limit found
        gate.release(t, rejected=True)
        gate.slow_down(0.01, ticket=t)
        after_skew = gate.stats().rate_factor
        margin = gate._short_margin
        await asyncio.sleep(3)
        t = await gate.admit(50)
        t.fill = 0.55  # its second held more than the limit found (the pace probes past it slowly)
        gate.release(t, rejected=True)
        gate.slow_down(0.01, ticket=t)
        return held, after_skew, margin, t.fill, gate.stats().rate_factor, gate._short_margin

    held, after_skew, margin, probe_fill, after_probe, margin_after = run_virtual(main())
    assert after_skew == pytest.approx(held, abs=0.002)  # the pace stays (it climbs as before)
    assert margin == pytest.approx(0.01)
    assert probe_fill >= 0.5
    assert after_probe < 0.85 * held  # a probe past the limit lowers the pace as before
    assert margin_after == pytest.approx(0.01)


def test_on_uvloop_the_head_naps_once_per_admission_not_until_its_millisecond_clock_turns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Issue 12 (CPU): uvloop's clock and timers count whole milliseconds. A nap for what is left of
    # the pace's spacing (a fraction of a millisecond after the timer rounded it) fired at once at the
    # same clock reading, and the head napped again and again until the millisecond turned: ~10
    # wake-ups per admission at 50 requests/s. Counted, not timed: the run stops after 60 admissions.
    uvloop = pytest.importorskip("uvloop")
    nap_count = count_naps(monkeypatch)
    admitted = 0

    async def main() -> None:
        gate = AdmissionGate(rpm=6000, tpm=None, concurrency=100, period_s=60.65)  # 10.1 ms apart

        async def worker() -> None:
            nonlocal admitted
            while admitted < 60:
                gate.release(await gate.admit(1))
                admitted += 1

        await asyncio.gather(*(worker() for _ in range(5)))

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
    naps = nap_count()
    assert naps <= 1.2 * admitted, (naps, admitted)
