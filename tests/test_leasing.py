"""The Ray backend's global limiter and leased gates, in one process on the fake loop clock (no Ray)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from typing import Any

import pytest

from pipeline.errors import FatalError
from pipeline.job.model import Limits
from pipeline.job.profiles import ResolvedProvider
from pipeline.raybackend.leasing import LeasedGate, LeasingGates, LimiterGone, LocalLink, limiter_name, static_share
from pipeline.raybackend.limiter import LeaseReply, Limiter, Settlement

from .test_limits import max_in_window

try:
    from tests.fakeclock import run_virtual
except ImportError:  # pragma: no cover - run from inside tests/
    from fakeclock import run_virtual  # type: ignore[no-redef]


def provider(**limits: Any) -> ResolvedProvider:
    return ResolvedProvider(
        name="p",
        base_urls=("http://127.0.0.1:9/v1",),
        api_key_env="K",
        limits=Limits(**limits),
        timeout_s=10,
        connect_timeout_s=5,
        headers=(),
        tokenizer=None,
        key_optional=False,
    )


def most_in_window(times: Sequence[float], window: float) -> int:
    """The most of `times` inside any window (t - window, t] (`test_limits.max_in_window` on them sorted)."""
    return max_in_window(sorted(times), window)


async def drive(
    gates: Sequence[LeasedGate], until: float, *, tasks_per_gate: int = 8, latency: float = 0.3, tokens: int = 10
) -> list[float]:
    """Each gate's callers admit requests back to back until `until` (loop time); the admission times."""
    loop = asyncio.get_running_loop()
    sent: list[float] = []
    rng = random.Random(1)

    async def caller(g: LeasedGate) -> None:
        while loop.time() < until:
            t = await g.admit(tokens)
            sent.append(loop.time())
            await asyncio.sleep(latency * (0.5 + rng.random()))
            g.release(t, tokens)

    await asyncio.gather(*(caller(g) for g in gates for _ in range(tasks_per_gate)))
    return sent


def test_four_leased_gates_hold_the_limiters_windows_and_its_pace() -> None:
    p = provider(rpm=2400, tpm=10_000_000, concurrency=100)

    async def main() -> tuple[list[float], Limiter, list[LeasedGate]]:
        limiter = Limiter(p, "k")
        gates = [LeasedGate(p, LocalLink(limiter), f"w{i}", 4) for i in range(4)]
        sent = await drive(gates, 160.0, tasks_per_gate=40)
        for g in gates:
            await g.close()
        return sent, limiter, gates

    sent, limiter, gates = run_virtual(main())
    assert most_in_window(sent, 60.0) <= 2400
    assert most_in_window(sent, 1.0) <= 40  # each second held to its share (2400/60)
    # the pace of the limit, shared by four workers (the second minute is a little lower for any gate:
    # requests admitted before the first answer count from their answer)
    steady = [t for t in sent if 90.0 <= t < 150.0]
    assert len(steady) >= 0.97 * 2400
    # leases, not one call per request: a lease holds what a quarter second brings among the leases
    # of every worker in flight (here about two grants; 3,000 rpm over four workers: ~25 calls/s)
    assert sum(g.leases for g in gates) < len(sent) / 1.5
    assert all(g.admitted > 0.2 * len(sent) for g in gates)  # every worker gets its share
    assert limiter.granted == len(sent) + sum(g.unused for g in gates)


def test_token_limit_is_held_across_workers() -> None:
    p = provider(rpm=100_000, tpm=60_000, concurrency=100)

    async def main() -> list[float]:
        limiter = Limiter(p, "k")
        gates = [LeasedGate(p, LocalLink(limiter), f"w{i}", 4) for i in range(4)]
        return await drive(gates, 130.0, tokens=500)

    sent = run_virtual(main())
    assert most_in_window(sent, 60.0) * 500 <= 60_000
    assert len([t for t in sent if 60 <= t < 120]) >= 0.95 * 120


def test_a_429_on_one_worker_pauses_every_worker() -> None:
    p = provider(rpm=600, concurrency=100)

    async def main() -> tuple[list[float], float]:
        loop = asyncio.get_running_loop()
        limiter = Limiter(p, "k")
        gates = [LeasedGate(p, LocalLink(limiter), f"w{i}", 4) for i in range(4)]

        async def hit() -> float:
            await asyncio.sleep(20.0)
            t = await gates[0].admit(1)
            gates[0].slow_down(5.0, ticket=t)
            gates[0].release(t, rejected=True)
            return loop.time()

        sent, at = await asyncio.gather(drive(gates[1:], 40.0), hit())
        return sent, at

    sent, at = run_virtual(main())
    # grants already on their way (one delay: 1 s) go; then nothing from any worker until the pause ends
    quiet = [t for t in sent if at + 1.1 <= t < at + 5.0 - 0.01]
    assert quiet == []
    assert [t for t in sent if at + 5.0 <= t < at + 8.0]  # and they resume


def test_grants_nobody_waits_for_go_back() -> None:
    p = provider(rpm=60, concurrency=10)

    async def main() -> tuple[Limiter, LeasedGate]:
        limiter = Limiter(p, "k")
        g = LeasedGate(p, LocalLink(limiter), "w0", 1)
        waiters = [asyncio.ensure_future(g.admit(1)) for _ in range(5)]
        await asyncio.sleep(0.01)  # the lease is asked for; the callers give up before the grants are due
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
        await asyncio.sleep(10)
        return limiter, g

    limiter, g = run_virtual(main())
    assert g.unused == limiter.granted > 0
    assert limiter.refunded == limiter.granted
    assert limiter.gate.stats().in_flight == 0


class _Down:
    async def lease(self, worker: str, tokens: list[int], span_s: float, settle: Settlement) -> LeaseReply:
        raise LimiterGone("ActorDiedError: the actor died")

    async def settle(self, worker: str, settle: Settlement) -> None:
        raise LimiterGone("ActorDiedError: the actor died")


def test_an_unreachable_limiter_falls_back_to_a_static_share(caplog: pytest.LogCaptureFixture) -> None:
    p = provider(rpm=600, concurrency=100)

    async def main() -> tuple[list[float], LeasedGate]:
        g = LeasedGate(p, _Down(), "w0", 4)
        return await drive([g], 130.0), g

    with caplog.at_level(logging.WARNING):
        sent, g = run_virtual(main())
    assert g.fallback_reason and "ActorDiedError" in g.fallback_reason
    assert "falls back to a static share" in caplog.text
    assert most_in_window(sent, 60.0) <= 150  # 600 / 4 workers
    assert len([t for t in sent if 60 <= t < 120]) >= 0.95 * 150
    assert static_share(p, 4).limits.rpm == 150 and static_share(p, 4).limits.concurrency == 25


class _DownUntil(LocalLink):
    """A limiter that cannot be reached until loop time `up` (Ray restarting it), then answers."""

    def __init__(self, limiter: Limiter, up: float) -> None:
        super().__init__(limiter)
        self.up = up

    def _check(self) -> None:
        if asyncio.get_running_loop().time() < self.up:
            raise LimiterGone("ActorUnavailableError: the actor is restarting")

    async def lease(self, worker: str, tokens: list[int], span_s: float, settle: Settlement) -> LeaseReply:
        self._check()
        return await super().lease(worker, tokens, span_s, settle)

    async def settle(self, worker: str, settle: Settlement) -> None:
        self._check()
        await super().settle(worker, settle)


def test_a_worker_on_its_static_share_leases_again_once_the_limiter_answers(caplog: pytest.LogCaptureFixture) -> None:
    p = provider(rpm=600, concurrency=100)

    async def main() -> tuple[list[float], LeasedGate]:
        g = LeasedGate(p, _DownUntil(Limiter(p, "key"), up=20.0), "w0", 4)
        return await drive([g], 60.0, tasks_per_gate=32), g  # enough callers for 1 s of grant delay

    with caplog.at_level(logging.WARNING):
        sent, g = run_virtual(main())
    assert g.fallback_reason and "ActorUnavailableError" in g.fallback_reason
    assert g.reconnects == 1 and g.leases > 0 and "answers again" in caplog.text
    assert len([t for t in sent if t < 20]) <= 150 / 3 + 1  # the static share: 600 / 4 workers a minute
    assert len([t for t in sent if 30 <= t < 60]) >= 0.95 * 300  # then the limiter's whole pace (one worker)
    assert most_in_window(sent, 60.0) <= 600


def test_a_key_pool_is_one_limiter_that_knows_every_key() -> None:
    p = provider(rpm=120, concurrency=100)
    keys = ("key-a", "key-b")

    async def main() -> tuple[dict[str | None, int], bool, list[str | None], str | None]:
        limiter = Limiter(p, "key-a", keys)
        factories = [
            LeasingGates(lambda pr, k, ks: LocalLink(limiter), f"w{i}", 2, {"p": keys}, span_s=0.25) for i in range(2)
        ]
        gates = [f(p, "key-a") for f in factories]
        assert all(isinstance(g, LeasedGate) for g in gates)
        per_key: dict[str | None, int] = {}
        loop = asyncio.get_running_loop()

        async def caller(g: Any) -> None:
            while loop.time() < 60:
                t = await g.admit(1)
                per_key[t.key] = per_key.get(t.key, 0) + 1
                await asyncio.sleep(0.2)
                g.release(t, 1)

        await asyncio.gather(*(caller(g) for g in gates for _ in range(4)))
        # the key of this request refused for good on worker 0: the pool (at the limiter) goes on with
        # the other key only, for every worker
        t = await gates[0].admit(1)
        err = FatalError("invalid api key", status=401, code="invalid_api_key")
        gone = t.key
        left = gates[0].refused(t, err)
        gates[0].release(t, rejected=True)
        await asyncio.sleep(1)
        after: list[str | None] = []
        for _ in range(10):
            t2 = await gates[1].admit(1)
            after.append(t2.key)
            gates[1].release(t2, 1)
        return per_key, left, after, gone

    per_key, left, after, gone = run_virtual(main())
    assert set(per_key) == {"key-a", "key-b"}
    assert per_key["key-a"] + per_key["key-b"] >= 0.9 * 2 * 120  # both keys' limits used
    assert left is True
    assert gone in keys and set(after) == set(keys) - {gone}


def test_limiter_names_depend_on_url_key_and_limits() -> None:
    a, b = provider(rpm=600), provider(rpm=300)
    assert limiter_name(a, "k1") == limiter_name(a, "k1")
    assert len({limiter_name(a, "k1"), limiter_name(a, "k2"), limiter_name(b, "k1")}) == 3
    assert "k1" not in limiter_name(a, "k1")
