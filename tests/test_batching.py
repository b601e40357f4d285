"""The batcher in virtual time: when batches close, how a bad input is split out, and the pure helpers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pipeline.batching import Batcher, Slot, TokenCalibration, apportion, blamed_input, splittable
from pipeline.calls import CallError, Stopped
from pipeline.errors import FatalError, RowError, TooLargeError, TransientError
from pipeline.records import StepResult

from .fakeclock import run_virtual, virtual_time


class FakeServer:
    """A packed endpoint: answers every input with its own text, refuses requests holding a bad input."""

    def __init__(
        self,
        bad: set[str] | None = None,
        message: str = "invalid input",
        param: str | None = None,
        blame: bool = False,
        latency: float = 0.1,
    ) -> None:
        self.bad = bad or set()
        self.message = message
        self.param = param
        self.blame = blame  # name the bad input's position, like OpenAI's `'$.input[3]' is invalid`
        self.latency = latency
        self.requests: list[tuple[float, list[str]]] = []

    async def send(self, slots: list[Slot[str]]) -> None:
        texts = [s.payload for s in slots]
        self.requests.append((virtual_time(), texts))
        await asyncio.sleep(self.latency)
        bad = [i for i, t in enumerate(texts) if t in self.bad]
        if bad:
            msg = f"'$.input[{bad[0]}]' is invalid" if self.blame else self.message
            raise CallError(RowError(f"{msg} (request id: r{len(self.requests)})", status=400, param=self.param), 1)
        for s in slots:
            s.attempts += 1
            s.settle(StepResult("ok", {"v": s.payload.upper()}, attempts=s.attempts))


def submit_all(b: Batcher[str], texts: list[str]) -> list[asyncio.Future[StepResult]]:
    return [b.submit(t, t, len(t)) for t in texts]


def make(server: FakeServer, **kw: Any) -> Batcher[str]:
    opts: dict[str, Any] = {"max_items": 8, "max_tokens": 10_000, "linger_s": 0.005}
    opts["spawn"] = asyncio.ensure_future
    opts.update(kw)
    return Batcher(server.send, **opts)


def test_batches_close_by_count_then_linger() -> None:
    server = FakeServer()

    async def main() -> list[StepResult]:
        b = make(server)
        futs = submit_all(b, [f"t{i}" for i in range(20)])
        return list(await asyncio.gather(*futs))

    results = run_virtual(main())
    assert [r.values["v"] for r in results] == [f"T{i}" for i in range(20)]
    assert [len(t) for _, t in server.requests] == [8, 8, 4]
    # the two full batches leave at once, the rest after the linger
    assert server.requests[0][0] == server.requests[1][0] == 0.0
    assert server.requests[2][0] == pytest.approx(0.005)


def test_batches_close_by_tokens() -> None:
    server = FakeServer()

    async def main() -> None:
        b = make(server, max_items=100, max_tokens=10)
        await asyncio.gather(*submit_all(b, ["aaaa", "bbbb", "cccc", "dddd", "e"]))

    run_virtual(main())
    assert [t for _, t in server.requests] == [["aaaa", "bbbb"], ["cccc", "dddd", "e"]]


def test_a_row_arriving_within_the_linger_joins_the_batch() -> None:
    server = FakeServer()

    async def main() -> None:
        b = make(server)
        first = b.submit("a", "a", 1)
        await asyncio.sleep(0.004)
        second = b.submit("b", "b", 1)
        await asyncio.sleep(0.004)  # 8 ms after the first row, 4 ms after the last one: still open
        assert server.requests == []
        await asyncio.gather(first, second)

    run_virtual(main())
    assert [t for _, t in server.requests] == [["a", "b"]]


def test_batch_waits_while_earlier_requests_queue_for_admission() -> None:
    server = FakeServer()
    queued = {"n": 1}

    async def main() -> None:
        b = make(server, busy=lambda: queued["n"] > 0)
        fut = b.submit("a", "a", 1)
        await asyncio.sleep(0.05)
        assert server.requests == []  # the gate is busy: the batch keeps growing
        queued["n"] = 0
        await fut

    run_virtual(main())
    assert len(server.requests) == 1


def test_same_key_is_sent_once_and_answers_every_row() -> None:
    server = FakeServer()

    async def main() -> list[StepResult]:
        b = make(server)
        return list(await asyncio.gather(*submit_all(b, ["x", "y", "x", "x"])))

    results = run_virtual(main())
    assert [r.values["v"] for r in results] == ["X", "Y", "X", "X"]
    assert [t for _, t in server.requests] == [["x", "y"]]


def test_one_bad_input_is_bisected_out() -> None:
    server = FakeServer(bad={"t37"})

    async def main() -> list[StepResult]:
        b = make(server, max_items=64)
        return list(await asyncio.gather(*submit_all(b, [f"t{i}" for i in range(64)])))

    results = run_virtual(main())
    failed = [i for i, r in enumerate(results) if r.status == "error"]
    assert failed == [37]
    assert "HTTP 400" in (results[37].error or "") and "invalid input" in (results[37].error or "")
    # 1 request, then 2 per halving level down to one input: 1 + 2 * log2(64)
    assert len(server.requests) == 1 + 2 * 6
    assert results[37].attempts == 1 + 6
    assert max(r.attempts for r in results if r.status == "ok") <= 7


def test_a_blamed_input_costs_one_extra_request() -> None:
    server = FakeServer(bad={"t5", "t9"}, blame=True)

    async def main() -> list[StepResult]:
        b = make(server, max_items=16)
        return list(await asyncio.gather(*submit_all(b, [f"t{i}" for i in range(16)])))

    results = run_virtual(main())
    assert [i for i, r in enumerate(results) if r.status == "error"] == [5, 9]
    assert [len(t) for _, t in server.requests] == [16, 15, 14]


def test_an_error_blaming_another_field_fails_the_batch_without_splitting() -> None:
    server = FakeServer(bad={"t1"}, message="This model does not support specifying dimensions.", param="dimensions")

    async def main() -> list[StepResult]:
        b = make(server)
        return list(await asyncio.gather(*submit_all(b, [f"t{i}" for i in range(8)])))

    results = run_virtual(main())
    assert all(r.status == "error" and "dimensions" in (r.error or "") for r in results)
    assert len(server.requests) == 1


def test_an_error_of_every_input_stops_splitting_early() -> None:
    server = FakeServer(bad={f"t{i}" for i in range(64)})

    async def main() -> list[StepResult]:
        b = make(server, max_items=64)
        return list(await asyncio.gather(*submit_all(b, [f"t{i}" for i in range(64)])))

    results = run_virtual(main())
    assert all(r.status == "error" for r in results)
    assert len(server.requests) == 3  # the whole, then both halves failing the same way


def test_stop_and_fatal_reach_the_rows() -> None:
    async def stopped(slots: list[Slot[str]]) -> None:
        raise Stopped()

    async def fatal(slots: list[Slot[str]]) -> None:
        raise FatalError("bad key", status=401)

    async def main() -> None:
        for send, exc in ((stopped, Stopped), (fatal, FatalError)):
            b: Batcher[str] = Batcher(send, max_items=2, max_tokens=100, linger_s=0.01, spawn=asyncio.ensure_future)
            futs = submit_all(b, ["a", "b"])
            for f in futs:
                with pytest.raises(exc):
                    await f

    run_virtual(main())


def test_cancelled_sender_leaves_rows_to_do() -> None:
    tasks: list[asyncio.Task[None]] = []

    async def slow(slots: list[Slot[str]]) -> None:
        await asyncio.sleep(100)

    def spawn(coro: Any) -> asyncio.Task[None]:
        tasks.append(asyncio.ensure_future(coro))
        return tasks[-1]

    async def main() -> None:
        b: Batcher[str] = Batcher(slow, max_items=2, max_tokens=100, linger_s=0.01, spawn=spawn)
        futs = submit_all(b, ["a", "b"])
        await asyncio.sleep(1)
        tasks[0].cancel()
        for f in futs:
            with pytest.raises(Stopped):
                await f

    run_virtual(main())


def test_apportion_sums_to_the_total() -> None:
    assert apportion(100, [1, 1, 1]) == [34, 33, 33]
    assert apportion(7, [10, 0, 30]) == [2, 0, 5]
    assert sum(apportion(12345, [3, 17, 5, 9, 41])) == 12345
    assert apportion(5, [0, 0]) == [3, 2]
    assert apportion(0, []) == []


def test_blamed_input_and_splittable() -> None:
    assert blamed_input(RowError("'$.input[3]' is invalid: expected a string."), 8) == 3
    assert blamed_input(RowError('[{"loc": ["body", "input", 5], "msg": "too long"}]'), 8) == 5
    assert blamed_input(RowError("input[3] and input[4] are invalid"), 8) is None
    assert blamed_input(RowError("'$.input[12]' is invalid"), 8) is None
    assert blamed_input(RowError("Invalid 'dimensions'"), 8) is None
    assert splittable(RowError("x", status=400, param="input"))
    assert splittable(RowError("x", status=413))
    assert splittable(TooLargeError("x"))
    assert not splittable(RowError("x", status=400, param="dimensions"))
    assert not splittable(RowError("asked for 256 dimensions, got 1536"))  # our own check: status 0
    assert not splittable(TransientError("x", status=500))


def test_calibration_reserves_the_largest_recent_ratio() -> None:
    c = TokenCalibration(window=3)
    assert c.reserve(1000) == 1000  # nothing learned: the raw estimate
    c.observe(1000, 700)
    c.observe(1000, 720)
    assert c.reserve(1000) == 728  # 0.72 * 1.01, rounded up
    c.observe(1000, 650)
    c.observe(1000, 650)
    c.observe(1000, 650)
    assert c.reserve(1000) == 657  # the 0.72 has left the window
    c.observe(100, 10_000)
    assert c.factor == 2.0  # clamped
    assert c.reserve(0) == 0
