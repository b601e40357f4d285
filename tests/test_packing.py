"""Embed packs sized to the second (issue 8): packs hold a tenth of a second's token share in the
provider's tokens, not in the estimate's (they are formed late, once answers have calibrated the
estimate), so whole packs fill a per-second server's window. On the loop clock (tests/loopsim.py)
against the simulator's own limiter enforcing the job's limits (or half of them) per 1 s, with the
simulator's Retry-After."""

from __future__ import annotations

import asyncio
from pathlib import Path

import diskcache
import polars as pl
import pytest

from pipeline.batching import Batcher, FirstCount, Slot, TokenCalibration, pack_max_tokens
from pipeline.estimate import estimate
from pipeline.plan import build_plan
from pipeline.records import StepResult
from pipeline.sim.config import KeyLimits
from pipeline.sim.tokens import vocabulary_for

from .fakeclock import run_virtual, virtual_time
from .loopsim import LoopSim, run_job_virtual
from .test_embed import MODEL, assert_own_vectors, result, write_embed_job

RPM, TPM, CONC = 3000, 1_000_000, 100
SHARE = TPM // 60  # the job's tokens per second
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu"]


def bench_docs(n: int) -> pl.DataFrame:
    # short docs as bench_limits.py's (~17 tokens each; the estimate over-counts them by ~20%)
    texts = [" ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(12)) + f" #{i}" for i in range(n)]
    return pl.DataFrame({"doc_id": [f"d{i:06d}" for i in range(n)], "text": texts})


def test_first_count_calibrates_once_enough_is_in() -> None:
    calls: list[list[str]] = []

    def count(inputs: list[str]) -> int:
        calls.append(list(inputs))
        return 8 * len(inputs)

    first: FirstCount[str] = FirstCount(100, count)
    assert [first.add(f"t{i}", 10) for i in range(4)] == [None] * 4  # 40 < half of 100
    assert first.add("t4", 10) == (50, 40)
    assert calls == [["t0", "t1", "t2", "t3", "t4"]]
    c = TokenCalibration()
    assert pack_max_tokens(1000, c) == 1000
    c.observe(50, 40)
    assert pack_max_tokens(1000, c) == int(1000 / (0.8 * 1.01))


def run_bench(tmp_path: Path, scale: float, seconds: float, provider: str = "") -> tuple[LoopSim, pl.DataFrame, Path]:
    rows = int(SHARE * scale * seconds / 17)
    sim = LoopSim(
        KeyLimits(rpm=RPM, tpm=TPM, concurrency=CONC),
        window_s=60,
        period_s=1.0,
        scale=scale,
        latency_s=0.1,
        retry_after=True,
    )
    data = bench_docs(rows)
    job = write_embed_job(
        tmp_path,
        "http://127.0.0.1:9/v1",
        data=data,
        step="batch_size: 2048",
        limits=f"{{rpm: {RPM}, tpm: {TPM}, concurrency: {CONC}}}{provider}",
    )
    run_job_virtual(job, sim)
    return sim, data, job


def held(sim: LoopSim, scale: float, skip: float) -> float:
    ok = sorted((r.t_start, r.prompt_tokens) for r in sim.records if r.status == 200)
    t0 = ok[0][0]
    counted = [(t, n) for t, n in ok if t - t0 >= skip]
    return sum(n for _, n in counted[:-1]) / (counted[-1][0] - counted[0][0]) / (SHARE * scale)


def assert_every_row_once(sim: LoopSim, data: pl.DataFrame, tmp_path: Path) -> None:
    sent = [t for r in sim.records if r.status == 200 for t in r.body["input"]]
    assert len(sent) == len(set(sent)) == data.height  # no row dropped, none sent twice
    assert set(sent) == set(data["text"])
    df = result(tmp_path)
    assert df.height == data.height and set(df["emb__status"]) == {"ok"}
    assert_own_vectors(df.sample(200, seed=1))


@pytest.mark.parametrize(("scale", "seconds", "skip", "floor"), [(1.0, 20, 0, 0.95), (0.5, 90, 60, 0.90)])
def test_packs_fill_a_per_second_server(
    tmp_path: Path, scale: float, seconds: float, skip: float, floor: float
) -> None:
    sim, data, job = run_bench(tmp_path, scale, seconds)
    recs = sim.records
    ok = [r for r in recs if r.status == 200]
    # packs hold a tenth of the second in the provider's tokens: sized on the answers in before they
    # were formed, not on the estimate (which over-counts ~20%: packs of ~1,300-1,400 tokens before
    # issue 8d); a pack may pass its target by the drift of the text since (a few %). The second is the
    # job's, or the server's once its lower per-second limit is held (at half the job's: packs of about
    # a twentieth of the job's second, which the pace's probing moves by a few %)
    sizes = sorted(r.prompt_tokens for r in ok)
    assert sizes[-1] <= 1.06 * SHARE / 10
    if scale == 1.0:
        assert 0.95 * SHARE / 10 <= sizes[len(sizes) // 2] <= SHARE / 10, sizes[:: max(1, len(sizes) // 10)]
        assert sum(1 for n in sizes if n < 0.9 * SHARE / 10) <= 3  # the first two (before any answer) and the last
    else:
        assert 0.85 * scale * SHARE / 10 <= sizes[len(sizes) // 2] <= 1.1 * scale * SHARE / 10, sizes[::50]
    assert held(sim, scale, skip) >= floor
    # a server counting per second is learned from its first 429: before it, the gate paces the job's
    # minute, which lets a second take the pace's share plus the pack that goes into debt (at the
    # job's own rate: 11 packs of ~1,633 cl100k tokens in 0.99 s). Once learned, the second is held.
    refused = [r for r in recs if r.status == 429]
    assert len(refused) <= max(1, (0.005 if scale == 1 else 0.01) * len(recs)), [r.t_start for r in refused]
    starts = sorted(r.t_start for r in ok)
    assert max(b - a for a, b in zip(starts, starts[1:], strict=False)) <= 2.0  # no stall
    assert_every_row_once(sim, data, tmp_path)
    # each row's own cache entry: one per row, and a re-run sends nothing and finds every row
    with diskcache.Cache(str(tmp_path / "cache")) as dc:
        assert len(dc) == data.height
    n = len(recs)
    run_job_virtual(job, sim)
    assert len(sim.records) == n and set(result(tmp_path)["emb__status"]) == {"ok"}


def test_estimate_packs_as_the_run_does(tmp_path: Path) -> None:
    # the estimate's exact count is in the vocabulary the simulator bills the model in (cl100k_base for
    # text-embedding-3, as OpenAI bills it; a provider counting in another vocabulary than the closest
    # OpenAI one is one the estimate cannot know)
    sim, data, job = run_bench(tmp_path, 1.0, 5, f"\n    tokenizer: {vocabulary_for(MODEL)}")
    est = estimate(build_plan(job)).steps[0]  # (every row is cached now: count with a fresh cache)
    assert est.requests == 0
    job.write_text(
        job.read_text().replace(f"cache: {{dir: {tmp_path / 'cache'}}}", f"cache: {{dir: {tmp_path / 'c2'}}}")
    )
    est = estimate(build_plan(job)).steps[0]
    sent = [r for r in sim.records if r.status == 200]
    assert est.requests <= len(sent) <= est.requests + 2, (est.requests, len(sent))


def test_rows_beyond_the_packs_ahead_wait_unpacked_and_take_the_new_size() -> None:
    # a pack formed after an answer is sized with what that answer taught (issue 8d): rows arriving all
    # at once are not all packed by the first size; none is lost or sent twice
    sent: list[tuple[float, list[str]]] = []
    gate_queue: list[int] = []

    async def main() -> list[StepResult]:
        async def send(slots: list[Slot[str]]) -> None:
            sent.append((virtual_time(), [s.payload for s in slots]))
            gate_queue.append(1)
            await asyncio.sleep(0.01)  # waits for admission
            gate_queue.pop()
            await asyncio.sleep(0.1)  # on the wire
            b.max_tokens = 20  # the answer taught: twice as many inputs fit
            for s in slots:
                s.attempts += 1
                s.settle(StepResult("ok", {"v": s.payload}, attempts=s.attempts))

        b: Batcher[str] = Batcher(
            send,
            max_items=100,
            max_tokens=10,
            linger_s=0.005,
            spawn=asyncio.ensure_future,
            ahead=2,
            waiting=lambda: len(gate_queue),
        )
        futs = [b.submit(f"t{i:03d}", f"t{i:03d}", 1) for i in range(200)]
        return list(await asyncio.gather(*futs))

    results = run_virtual(main())
    assert [r.values["v"] for r in results] == [f"t{i:03d}" for i in range(200)]
    inputs = [t for _, ts in sent for t in ts]
    assert sorted(inputs) == [f"t{i:03d}" for i in range(200)]  # each once
    sizes = [len(ts) for _, ts in sent]
    assert sizes[:2] == [10, 10]  # before any answer: the first size, only `ahead` of them
    assert set(sizes[2:-1]) == {20}  # after it: the new size
    # and at most two were waiting for admission at any time
    assert all(t >= 0.11 for t, _ in sent[2:])
