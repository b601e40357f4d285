"""The cache's answer log: answers written once per loop turn, moved into the store in batches, taken over
from dead processes (killed runs), never from live ones; torn tails, disk errors, the `cache` commands."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import diskcache
import pytest

from pipeline import cache as cache_mod
from pipeline.cache import ResponseCache, read_log
from pipeline.errors import DiskError
from pipeline.sim.config import FaultRule

from .conftest import output, write_job
from .test_bad_input import cli, flat


def store(cache: ResponseCache, items: list[tuple[str, bytes]]) -> None:
    asyncio.run(cache.store_many(items))


def logs(directory: Path) -> list[Path]:
    return sorted(directory.glob("answers-*.log"))


def logged(directory: Path) -> list[tuple[int, str, bytes]]:
    return [r for log in logs(directory) for r in read_log(log.read_bytes())]


def in_store(directory: Path) -> dict[str, bytes]:
    """What the diskcache store itself holds (not what a ResponseCache would take over)."""
    with diskcache.Cache(str(directory)) as dc:
        return {k: dc[k] for k in dc.iterkeys()}


# A process that stores answers (and deletes one), then dies without closing its cache: its log is left
_DIE = """
import asyncio, os, sys
from pipeline.cache import ResponseCache
c = ResponseCache(sys.argv[1])
c.MOVE_AFTER_S = 3600
asyncio.run(c.store_many([(f"k{i}", f"body {i}".encode()) for i in range(int(sys.argv[2]))]))
asyncio.run(c.store_many([("k-late", b"late")]))
c.delete("k0")
os._exit(0)
"""


def die_with_log(directory: Path, n: int) -> Path:
    subprocess.run([sys.executable, "-c", _DIE, str(directory), str(n)], check=True, timeout=60)
    (log,) = logs(directory)
    return log


def test_answers_wait_in_the_log_and_move_into_the_store_in_one_batch(tmp_path: Path) -> None:
    c = ResponseCache(tmp_path)
    c.MOVE_AFTER_S = 3600
    store(c, [("a", b"A"), ("b", b"B")])
    store(c, [("c", b"C")])
    assert [(op, k) for op, k, _ in logged(tmp_path)] == [(0, "a"), (0, "b"), (0, "c")]
    assert in_store(tmp_path) == {}
    assert c.get("a") == b"A"
    c.prefetch(["a", "c", "missing"])
    assert (c.get("a"), c.get("c"), c.get("missing")) == (b"A", b"C", None)
    c.prefetch(["later"])
    store(c, [("later", b"L")])  # a prefetch that said "missing" does not hide an answer stored since
    assert c.get("later") == b"L"
    c._move()
    assert in_store(tmp_path) == {"a": b"A", "b": b"B", "c": b"C", "later": b"L"}
    assert logged(tmp_path) == [] and c.get("b") == b"B"
    c.close()
    assert logs(tmp_path) == []


def test_a_batch_moves_once_it_holds_enough_answers(tmp_path: Path) -> None:
    c = ResponseCache(tmp_path)
    c.MOVE_AFTER_S, c.MOVE_ENTRIES = 3600, 5
    store(c, [(f"k{i}", b"x") for i in range(4)])
    assert len(in_store(tmp_path)) == 0
    store(c, [("k4", b"x")])
    assert len(in_store(tmp_path)) == 5 and logged(tmp_path) == []
    c.close()


def test_a_batch_moves_after_move_after_s_of_loop_time(tmp_path: Path) -> None:
    c = ResponseCache(tmp_path)
    c.MOVE_AFTER_S = 0.01

    async def main() -> None:
        await c.store_many([("a", b"A")])
        assert in_store(tmp_path) == {}
        moved = asyncio.Event()
        move = c._move

        def spy() -> None:
            move()
            moved.set()

        c._move = spy  # type: ignore[method-assign]
        c._move_timer.cancel()  # type: ignore[union-attr]
        c._move_timer = asyncio.get_running_loop().call_later(c.MOVE_AFTER_S, c._move)
        await moved.wait()

    asyncio.run(main())
    assert in_store(tmp_path) == {"a": b"A"}
    c.close()


def test_a_dead_process_log_is_taken_over_with_its_deletes(tmp_path: Path) -> None:
    log = die_with_log(tmp_path, 3)
    assert in_store(tmp_path) == {}
    assert [(op, k) for op, k, _ in read_log(log.read_bytes())] == [
        (0, "k0"),
        (0, "k1"),
        (0, "k2"),
        (0, "k-late"),
        (1, "k0"),
    ]
    c = ResponseCache(tmp_path)
    assert logs(tmp_path) == []
    assert (c.get("k0"), c.get("k1"), c.get("k2"), c.get("k-late")) == (None, b"body 1", b"body 2", b"late")
    c.close()
    assert in_store(tmp_path) == {"k1": b"body 1", "k2": b"body 2", "k-late": b"late"}


def test_a_torn_record_at_the_end_of_a_log_is_dropped_and_the_records_before_it_kept(tmp_path: Path) -> None:
    log = die_with_log(tmp_path, 3)
    data = log.read_bytes()
    log.write_bytes(data[:-5])  # killed in the middle of writing the last record (the delete of k0)
    c = ResponseCache(tmp_path)
    assert (c.get("k0"), c.get("k1"), c.get("k-late")) == (b"body 0", b"body 1", b"late")
    c.close()
    assert logs(tmp_path) == []
    # a damaged record ends the log too: nothing after it is trusted
    log2 = die_with_log(tmp_path / "two", 3)
    data = bytearray(log2.read_bytes())
    second = data.index(b"body 1")
    data[second] ^= 0xFF
    log2.write_bytes(bytes(data))
    c = ResponseCache(tmp_path / "two")
    assert (c.get("k0"), c.get("k1"), c.get("k2")) == (b"body 0", None, None)
    c.close()


def test_a_live_cache_log_is_never_taken_over_by_another_cache_on_the_folder(tmp_path: Path) -> None:
    first = ResponseCache(tmp_path)
    first.MOVE_AFTER_S = 3600
    store(first, [("a", b"A")])
    (log,) = logs(tmp_path)
    second = ResponseCache(tmp_path)  # e.g. a second run or a Ray worker on the same folder
    second.MOVE_AFTER_S = 3600
    assert logs(tmp_path) == [log] and [k for _, k, _ in read_log(log.read_bytes())] == ["a"]
    assert second.get("a") is None and in_store(tmp_path) == {}
    store(second, [("b", b"B")])
    assert len(logs(tmp_path)) == 2
    third = ResponseCache(tmp_path)
    assert len(logs(tmp_path)) == 2
    third.close()
    first.close()
    assert logs(tmp_path) != [] and log not in logs(tmp_path)
    assert second.get("a") == b"A"
    second.close()
    assert logs(tmp_path) == [] and in_store(tmp_path) == {"a": b"A", "b": b"B"}


def test_delete_clear_and_stats_count_the_answers_still_in_the_log(tmp_path: Path) -> None:
    c = ResponseCache(tmp_path)
    c.MOVE_AFTER_S = 3600
    store(c, [("a", b"A" * 100), ("b", b"B")])
    c.delete("a")
    assert c.get("a") is None
    c2 = ResponseCache(tmp_path)  # a fresh view sees the store only: the log waits for its move
    assert c2.stats().entries == 0
    assert c.stats().entries == 1  # (`stats` moves the log first)
    assert c2.stats().entries == 1
    store(c, [("c", b"C"), ("d", b"D")])
    assert c.clear() == 3 and c.get("c") is None and c.get("b") is None
    c.close()
    assert c2.stats().entries == 0 and logs(tmp_path) == []
    c2.close()


def test_cache_commands_count_and_clear_a_killed_run_s_log(tmp_path: Path) -> None:
    die_with_log(tmp_path / "c", 4)
    res = cli("cache", "stats", "--dir", str(tmp_path / "c"))
    assert res.exit_code == 0 and "4 entries" in flat(res.output), res.output
    die_with_log(tmp_path / "c", 2)
    res = cli("cache", "clear", "--dir", str(tmp_path / "c"), "--yes")
    assert res.exit_code == 0 and "removed 4 entries" in flat(res.output), res.output  # k1, k2, k3 and k-late
    res = cli("cache", "stats", "--dir", str(tmp_path / "c"))
    assert "0 entries" in flat(res.output) and logs(tmp_path / "c") == []


def test_a_failed_move_keeps_the_answers_and_stops_the_next_store_and_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = ResponseCache(tmp_path)
    c.MOVE_AFTER_S = 3600
    store(c, [("a", b"A")])

    def full(*args: Any, **kwargs: Any) -> Any:
        raise sqlite3.OperationalError("database or disk is full")

    with monkeypatch.context() as m:
        m.setattr(diskcache.Cache, "set", full)
        c._move()
        assert c.get("a") == b"A" and [k for _, k, _ in logged(tmp_path)] == ["a"]
        with pytest.raises(DiskError, match="database or disk is full"):
            store(c, [("b", b"B")])  # written to the log all the same: it was paid for
        with pytest.raises(DiskError, match=f"cannot write {tmp_path}: database or disk is full"):
            c.close()
    assert [k for _, k, _ in logged(tmp_path)] == ["a", "b"]
    again = ResponseCache(tmp_path)  # space is back: the next run takes the log over
    assert (again.get("a"), again.get("b")) == (b"A", b"B") and logs(tmp_path) == []
    again.close()


@pytest.mark.parametrize("short", [False, True], ids=["enospc", "short-write-then-enospc"])
def test_a_failed_log_write_fails_the_stores_and_leaves_whole_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, short: bool
) -> None:
    c = ResponseCache(tmp_path)
    c.MOVE_AFTER_S = 3600
    store(c, [("a", b"A")])
    real_write = os.write
    calls = []

    def write(fd: int, data: Any) -> int:
        calls.append(len(data))
        if short and len(calls) == 1:
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(cache_mod.os, "write", write)
        with pytest.raises(DiskError, match=f"cannot write {tmp_path}: No space left on device"):
            store(c, [("b", b"B" * 1000), ("c", b"C")])
    assert c.get("b") is None  # not stored, as a failed commit stored nothing
    store(c, [("d", b"D")])
    assert [k for _, k, _ in logged(tmp_path)] == ["a", "d"]
    c.close()
    assert in_store(tmp_path) == {"a": b"A", "d": b"D"}


def test_a_turn_of_big_answers_is_written_in_chunks_not_copied_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # several packs' answers in one loop turn (tens of MB of vectors): written in writes of about 1 MB,
    # not joined into one copy of them all while they are still held
    c = ResponseCache(tmp_path)
    c.MOVE_AFTER_S = 3600
    bodies = [bytes([65 + i]) * 700_000 for i in range(4)]
    real_write = os.write
    sizes: list[int] = []

    def write(fd: int, data: Any) -> int:
        sizes.append(len(data))
        return real_write(fd, data)

    with monkeypatch.context() as m:
        m.setattr(cache_mod.os, "write", write)
        store(c, [(f"k{i}", b) for i, b in enumerate(bodies)])
    assert len(sizes) == 2 and max(sizes) < 1_500_000, sizes
    assert [(k, b) for _, k, b in logged(tmp_path)] == [(f"k{i}", b) for i, b in enumerate(bodies)]
    # a write failing at the second chunk stores none of the turn's answers and leaves whole records
    store(c, [("a", b"A")])

    def fail_second(fd: int, data: Any) -> int:
        sizes.append(len(data))
        if len(sizes) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    sizes.clear()
    with monkeypatch.context() as m:
        m.setattr(cache_mod.os, "write", fail_second)
        with pytest.raises(DiskError):
            store(c, [(f"x{i}", b) for i, b in enumerate(bodies)])
    assert len(sizes) == 2 and c.get("x0") is None
    assert [k for _, k, _ in logged(tmp_path)] == ["k0", "k1", "k2", "k3", "a"]
    c.close()
    assert set(in_store(tmp_path)) == {"k0", "k1", "k2", "k3", "a"}


# `pipeline run` whose answers stay in the log (no move for an hour): killed, its answers only in its log
_RUN_WITHOUT_MOVES = """
import runpy, sys
from pipeline.cache import ResponseCache
ResponseCache.MOVE_AFTER_S = 3600
sys.argv = ["pipeline", *sys.argv[1:]]
runpy.run_module("pipeline.cli", run_name="__main__")
"""


@pytest.mark.slow
def test_a_run_killed_with_answers_only_in_its_log_is_resumed_without_paying_again(tmp_path: Path, sim: Any) -> None:
    sim.set_faults([FaultRule(kind="hang", when_contains="(#7)")])  # row 7 never answers: the run stays up
    job = write_job(tmp_path, sim.url, rows=20)
    cmd = [sys.executable, "-c", _RUN_WITHOUT_MOVES, "run", str(job), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    cache_dir = tmp_path / "cache"
    deadline = time.monotonic() + 120
    while not cache_dir.exists() or len({k for _, k, _ in logged(cache_dir)}) < 19:
        assert time.monotonic() < deadline and proc.poll() is None, "the run did not store its answers"
        time.sleep(0.02)
    assert in_store(cache_dir) == {}  # every answer is in the log only
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    sim.set_faults([])
    before = len(sim.records)
    res = cli("run", str(job), "--quiet")
    assert res.exit_code == 0, res.output
    resent = sim.records[before:]
    assert len(resent) == 1 and "(#7)" in json.dumps(resent[0].body), [r.body for r in resent]
    assert output(tmp_path).height == 20 and logs(cache_dir) == []
