"""The gate against a model of a rate-limited server, on the fake clock (issue 8): a server that enforces
the job's limits (or half of them) per second with an exact rolling window, answers a 429 with the
Retry-After it would need, and charges nothing for a refused request. What bench/bench_limits.py
measures against the real simulator in its own process, here without the machine's noise, so the
control law itself is held to the issue's targets."""

from __future__ import annotations

import asyncio
import random
from collections import deque
from dataclasses import dataclass, field

import pytest

from pipeline.limits import AdmissionGate

try:
    from tests.fakeclock import run_virtual, virtual_time
except ModuleNotFoundError:  # tests/ collected as plain directory
    from fakeclock import run_virtual, virtual_time  # type: ignore[no-redef]

RPM, TPM, CONC = 3000, 1_000_000, 100


@dataclass
class Server:
    """Exact rolling-window limits over `period` s at `scale` of the job's, like `pipeline sim`'s KeyLimiter."""

    period: float
    scale: float
    ok: list[tuple[float, int]] = field(default_factory=list)  # (arrival, tokens) of every accepted request
    refused: list[float] = field(default_factory=list)
    _req: deque[float] = field(default_factory=deque)
    _tok: deque[tuple[float, int]] = field(default_factory=deque)
    _sum: int = 0

    def arrive(self, now: float, tokens: int) -> float | None:
        """None (accepted) or the Retry-After of a 429."""
        rpm = RPM * self.scale * self.period / 60
        tpm = TPM * self.scale * self.period / 60
        while self._req and self._req[0] <= now - self.period:
            self._req.popleft()
        while self._tok and self._tok[0][0] <= now - self.period:
            self._sum -= self._tok.popleft()[1]
        if len(self._req) + 1 > rpm + 1e-9:
            self.refused.append(now)
            return max(0.001, self._req[len(self._req) - int(rpm + 1e-9)] + self.period - now)
        if self._sum + tokens > tpm + 1e-9:
            self.refused.append(now)
            excess = self._sum + tokens - tpm
            for t, n in self._tok:
                excess -= n
                if excess <= 1e-9:
                    return max(0.001, t + self.period - now)
        self._req.append(now)
        self._tok.append((now, tokens))
        self._sum += tokens
        self.ok.append((now, tokens))
        return None


def run_against(server: Server, kind: str, seconds: float) -> None:
    """A run of the job (3000 RPM / 1M TPM / 100 concurrent, the executor's margin on the period):
    chat is RPM-bound (0.5 s answers), embed TPM-bound (1,666-token batches, the default a tenth of a
    second's share, that the provider counts 1% under what was reserved: TokenCalibration's margin;
    0.1 s answers)."""
    gate = AdmissionGate(rpm=RPM, tpm=TPM, concurrency=CONC, period_s=60.65, nominal_period_s=60)
    rng = random.Random(7)
    reserved, latency = (30, 0.5) if kind == "chat" else (1666, 0.1)
    actual = int(reserved / 1.01)

    async def worker() -> None:
        while True:
            ticket = await gate.admit(reserved)
            await asyncio.sleep(rng.uniform(0.0, 0.004))  # on the way to the server
            retry_after = server.arrive(virtual_time(), actual)
            if retry_after is not None:
                await asyncio.sleep(0.002)
                gate.release(ticket, rejected=True)
                gate.slow_down(retry_after, ticket=ticket)
                continue
            await asyncio.sleep(latency * rng.uniform(0.7, 1.3))
            gate.release(ticket, actual)

    async def main() -> None:
        tasks = [asyncio.create_task(worker()) for _ in range(150)]
        await asyncio.sleep(seconds)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    run_virtual(main())


def share_of_real(server: Server, kind: str, skip: float) -> float:
    counted = [(t, n) for t, n in server.ok if t >= skip]
    amount = len(counted) - 1 if kind == "chat" else sum(n for _, n in counted[:-1])
    real = (RPM if kind == "chat" else TPM) * server.scale / 60
    return amount / (counted[-1][0] - counted[0][0]) / real


@pytest.mark.parametrize("kind", ["chat", "embed"])
def test_a_per_second_server_with_the_jobs_limits(kind: str) -> None:
    server = Server(period=1.0, scale=1.0)
    run_against(server, kind, 60)
    assert share_of_real(server, kind, 0) >= 0.95
    assert len(server.refused) <= 0.005 * (len(server.ok) + len(server.refused))
    assert max(b - a for (a, _), (b, _) in zip(server.ok, server.ok[1:], strict=False)) <= 2.0  # no stall


@pytest.mark.parametrize("kind", ["chat", "embed"])
def test_a_per_second_server_with_half_the_jobs_limits(kind: str) -> None:
    server = Server(period=1.0, scale=0.5)
    run_against(server, kind, 150)
    assert share_of_real(server, kind, 60) >= 0.93  # the issue asks for 90% after the first minute
    assert len(server.refused) <= 0.01 * (len(server.ok) + len(server.refused))
    # the lower limit is learned in the first seconds, then probed about once a minute
    assert len([t for t in server.refused if t >= 10]) <= 3


@pytest.mark.parametrize("kind", ["chat", "embed"])
def test_a_per_minute_server_with_the_jobs_limits_sees_no_429(kind: str) -> None:
    server = Server(period=60.0, scale=1.0)
    run_against(server, kind, 59)
    assert share_of_real(server, kind, 0) >= 0.98
    assert server.refused == []
