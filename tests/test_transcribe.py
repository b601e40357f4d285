"""The transcribe step end to end against the simulator: own transcripts, splitting, bad files, resume."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path
from typing import Any

import diskcache
import numpy as np
import polars as pl
import pytest

from pipeline import audiofiles
from pipeline.errors import JobError, RunAborted
from pipeline.executor import Executor, RunOptions, execute
from pipeline.plan import build_plan
from pipeline.records import Progress
from pipeline.sim import FaultRule, count_tokens, sim_transcript

from .conftest import SIM_KEY_ENV, take_over_logs

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_data" / "audio"
RATE = 8000


def write_wav(path: Path, parts: list[tuple[float, float]], seed: int = 0) -> Path:
    """A mono 16-bit WAV of (seconds, tone Hz) parts; Hz 0 is digital silence. Noise makes it unique."""
    rng = np.random.default_rng(seed)
    chunks = []
    for seconds, hz in parts:
        n = int(seconds * RATE)
        if hz:
            t = np.arange(n) / RATE
            chunks.append(0.3 * np.sin(2 * np.pi * hz * t) + 0.05 * rng.standard_normal(n))
        else:
            chunks.append(np.zeros(n))
    pcm = (np.clip(np.concatenate(chunks), -1, 1) * 32767).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.tobytes())
    return path


# 6 x (24 s of tone, 1.5 s of silence) = 153 s, 2.4 MB: over a 0.5 MB limit even re-encoded (1.2 MB)
LONG_LAYOUT = [p for i in range(6) for p in ((24.0, 300.0 + 40 * i), (1.5, 0.0))]
LONG_SILENCES = [(25.5 * i + 24.0, 25.5 * (i + 1)) for i in range(6)]


def write_job(
    tmp_path: Path,
    url: str,
    input_path: str,
    *,
    step: str = "",
    limits: str = "{concurrency: 8}",
    timeout: float = 30,
    fmt: str = "verbose_json",
    model: str = "whisper-1",
    attempts: int = 3,
) -> Path:
    """A transcribe job over `input_path`; `step` adds lines (YAML) to the step."""
    extra = "".join(f"    {line}\n" for line in step.splitlines())
    job = tmp_path / "job.yaml"
    job.write_text(
        "version: 1\nname: transcribe-test\nproviders:\n  local:\n"
        f"    base_url: {url}\n    api_key_env: {SIM_KEY_ENV}\n"
        f"    limits: {limits}\n    timeout_s: {timeout}\n"
        f'input:\n  path: "{input_path}"\n'
        "steps:\n  - name: tr\n    kind: transcribe\n    provider: local\n"
        f'    model: {model}\n    audio: "{{{{ row.path }}}}"\n    response_format: {fmt}\n{extra}'
        f"output:\n  path: {tmp_path / 'out' / 'transcripts.parquet'}\n"
        f"cache: {{dir: {tmp_path / 'cache'}}}\n"
        f"retry: {{max_attempts: {attempts}, backoff_base_s: 0.01, backoff_cap_s: 0.05}}\n"
    )
    return job


def run(job: Path, **opts: Any) -> Any:
    return asyncio.run(execute(build_plan(job), RunOptions(**opts)))


def out(tmp_path: Path) -> pl.DataFrame:
    return pl.read_parquet(tmp_path / "out" / "transcripts.parquet")


def stored_answers(cache_dir: Path) -> set[str]:
    """sha256 of the transcript of every answer in a run's cache (the simulator records the same)."""
    take_over_logs(cache_dir)
    with diskcache.Cache(str(cache_dir)) as dc:
        bodies = [dc.get(k) for k in dc.iterkeys()]
    texts = [json.loads(b).get("text") for b in bodies if isinstance(b, bytes) and b.startswith(b"{")]
    return {hashlib.sha256(t.encode()).hexdigest() for t in texts if isinstance(t, str)}


def audio_records(sim: Any) -> list[Any]:
    return [r for r in sim.records if r.path.endswith("/audio/transcriptions")]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_row_gets_the_transcript_of_its_own_file(tmp_path: Path, sim: Any) -> None:
    archive = tmp_path / "archive"
    shutil.copytree(SAMPLES, archive / "samples")
    for i in range(4):
        write_wav(archive / "calls" / f"call{i}.wav", [(1.0 + i, 300.0 + 50 * i)], seed=i)
    job = write_job(tmp_path, sim.url, f"{archive}/**/*.{{wav,mp3,flac,ogg,m4a,webm}}")
    seen: list[Progress] = []
    summary = asyncio.run(execute(build_plan(job), RunOptions(), seen.append))
    df = out(tmp_path)
    assert summary.failed_rows == 0 and df.height == 10
    assert set(df["tr__status"]) == {"ok"}, df["tr__error"].to_list()
    assert df["path"].to_list() == sorted(df["path"].to_list())
    assert "calls/call0.wav" in df["path"].to_list() and "samples/zh_weather.flac" in df["path"].to_list()
    recs = {r.body["file_sha256"]: r for r in audio_records(sim)}
    assert len(audio_records(sim)) == 10 and len(recs) == 10
    for row in df.iter_rows(named=True):
        f = archive / row["path"]
        rec = recs[sha(f)]
        assert rec.body["file_name"] == f.name and rec.body["response_format"] == "verbose_json"
        text, segments = sim_transcript(f.read_bytes(), rec.body["duration_s"])
        assert row["tr"] == text, row["path"]
        assert row["tr__duration"] == pytest.approx(rec.body["duration_s"], abs=1e-3)
        assert [(s["start"], s["end"], s["text"]) for s in row["tr__segments"]] == [
            (s["start"], s["end"], s["text"]) for s in segments
        ]
        assert row["tr__language"] == "english" and row["tr__attempts"] == 1
        if row["path"].startswith("samples/"):  # the simulator measured every format (ffmpeg for non-WAV)
            assert 6.0 < rec.body["duration_s"] < 11.0, row["path"]
        else:
            assert rec.body["duration_s"] == pytest.approx(1.0 + int(row["path"][-5]), abs=1e-3)
        assert row["size_bytes"] == f.stat().st_size
    # the progress reports the audio transcribed
    assert seen[-1].audio_s_done == pytest.approx(sum(r.body["duration_s"] for r in recs.values()), rel=0.01)
    assert seen[-1].audio_s_left == 0


def test_table_of_paths_relative_to_the_input_file(tmp_path: Path, sim: Any) -> None:
    shutil.copytree(SAMPLES, tmp_path / "audio")
    job = write_job(
        tmp_path,
        sim.url,
        str(tmp_path / "audio" / "manifest.csv"),
        step='language: "{{ row.lang }}"\nprompt: "Expected: {{ row.spoken_text }}"',
    )
    run(job)
    df = out(tmp_path)
    assert set(df["tr__status"]) == {"ok"}, df["tr__error"].to_list()
    assert df.columns[:4] == ["row_id", "path", "lang", "spoken_text"]
    by_name = {r.body["file_name"]: r.body for r in audio_records(sim)}
    for row in df.iter_rows(named=True):
        body = by_name[row["path"]]
        assert body["language"] == row["lang"] and body["prompt"] == f"Expected: {row['spoken_text']}"
        assert body["file_sha256"] == sha(tmp_path / "audio" / row["path"])


def test_long_file_is_split_at_silences_and_joined(tmp_path: Path, sim_factory: Any) -> None:
    limit = 500_000
    sim = sim_factory(max_upload_bytes=limit)
    long = write_wav(tmp_path / "in" / "long.wav", LONG_LAYOUT, seed=7)
    short = write_wav(tmp_path / "in" / "short.wav", [(2.0, 440.0)], seed=8)
    assert long.stat().st_size > 4 * limit
    job = write_job(tmp_path, sim.url, str(tmp_path / "in" / "*.wav"), step="max_upload_mb: 0.5")
    run(job)
    df = out(tmp_path)
    assert set(df["tr__status"]) == {"ok"}, df["tr__error"].to_list()
    recs = audio_records(sim)
    assert all(r.status == 200 for r in recs)
    assert all(r.body["file_size"] <= limit for r in recs), [r.body["file_size"] for r in recs]
    pieces_sent = [r for r in recs if r.body["file_sha256"] != sha(short)]
    assert len(pieces_sent) == 3 and all(r.body["file_name"].startswith("long.part") for r in pieces_sent)

    # the same split, done here: the pieces sent are exactly these, and the row is their joined answer
    async def split() -> list[audiofiles.Piece]:
        return await audiofiles.split(long, tmp_path / "pieces", max_bytes=limit, max_duration_s=None)

    (tmp_path / "pieces").mkdir()
    pieces = asyncio.run(split())
    by_sha = {r.body["file_sha256"]: r.body for r in pieces_sent}
    assert {sha(p.path) for p in pieces} == set(by_sha)
    text_parts, segments = [], []
    for p in pieces:
        for a, b in LONG_SILENCES:  # every cut lies in a silence
            if p.offset_s and a <= p.offset_s <= b:
                break
        else:
            assert p.offset_s == 0, f"cut at {p.offset_s} s is not in a silence"
        text, segs = sim_transcript(p.path.read_bytes(), by_sha[sha(p.path)]["duration_s"])
        text_parts.append(text)
        segments += [(s["start"] + p.offset_s, s["end"] + p.offset_s, s["text"]) for s in segs]
    row = df.filter(pl.col("path") == "long.wav").row(0, named=True)
    assert row["tr"] == " ".join(text_parts)
    got = [(s["start"], s["end"], s["text"]) for s in row["tr__segments"]]
    assert [t for *_, t in got] == [t for *_, t in segments]
    assert np.allclose([g[:2] for g in got], [s[:2] for s in segments], atol=1e-6)
    assert got[-1][1] == pytest.approx(153.0, abs=0.1)
    assert row["tr__duration"] == pytest.approx(153.0, abs=0.1)
    assert row["tr__attempts"] == 3 and not row["tr__cached"]

    # a renamed copy costs no request: its answer is keyed by content, and needs no ffmpeg either
    n = len(sim.records)
    long.rename(tmp_path / "in" / "renamed.wav")
    run(job)
    assert len(sim.records) == n
    again = out(tmp_path).filter(pl.col("path") == "renamed.wav").row(0, named=True)
    assert again["tr"] == row["tr"] and again["tr__segments"] == row["tr__segments"] and again["tr__cached"]


def test_bad_files_fail_their_own_rows(tmp_path: Path, sim: Any) -> None:
    d = tmp_path / "in"
    write_wav(d / "good1.wav", [(1.5, 300.0)], seed=1)
    write_wav(d / "good2.wav", [(2.5, 500.0)], seed=2)
    (d / "corrupt.mp3").write_bytes(np.random.default_rng(3).bytes(20_000))
    (d / "empty.wav").write_bytes(b"")
    (d / "notes.txt").write_text("not audio")
    (d / "sub.wav").mkdir()
    paths = ["good1.wav", "corrupt.mp3", "empty.wav", "notes.txt", "missing.wav", "sub.wav", "good2.wav", ""]
    pl.DataFrame({"path": paths}).write_csv(d / "list.csv")
    job = write_job(tmp_path, sim.url, str(d / "list.csv"))
    summary = run(job)
    df = out(tmp_path)
    status = dict(zip(df["path"].fill_null(""), df["tr__status"], strict=True))
    errors = dict(zip(df["path"].fill_null(""), df["tr__error"], strict=True))
    assert status["good1.wav"] == status["good2.wav"] == "ok"
    assert "cannot read audio from" in errors["corrupt.mp3"] and "corrupt.mp3" in errors["corrupt.mp3"]
    assert "Invalid data" in errors["corrupt.mp3"]
    assert f"audio file is empty (0 bytes): {d / 'empty.wav'}" in errors["empty.wav"]
    assert "unsupported audio format (`.txt`)" in errors["notes.txt"] and "mp3" in errors["notes.txt"]
    assert f"audio file not found: {d / 'missing.wav'}" in errors["missing.wav"]
    assert "is a folder" in errors["sub.wav"]
    assert status[""] == "error" and "audio: the path is empty" in errors[""]
    assert summary.failed_rows == 6
    assert {r.body["file_name"] for r in audio_records(sim)} == {"good1.wav", "good2.wav"}


def test_server_rejection_fails_only_that_row(tmp_path: Path, sim: Any) -> None:
    d = tmp_path / "in"
    write_wav(d / "a.wav", [(1.0, 300.0)], seed=1)
    write_wav(d / "tiny.wav", [(0.05, 300.0)], seed=2)  # the API refuses audio under 0.1 s
    write_wav(d / "b.wav", [(1.0, 500.0)], seed=3)
    run(write_job(tmp_path, sim.url, str(d / "*.wav")))
    df = out(tmp_path)
    assert df.filter(pl.col("tr__status") == "ok")["path"].to_list() == ["a.wav", "b.wav"]
    err = df.filter(pl.col("path") == "tiny.wav")["tr__error"][0]
    assert "HTTP 400 audio_too_short" in err and "(request id: sim-" in err


def test_long_requests_start_together_under_the_concurrency_limit(tmp_path: Path, sim_factory: Any) -> None:
    conc = 4
    count_tokens("warm up")  # the simulator loads its tokenizer on first use: not what is measured here
    # 2 s on the wire each: the client has that long to start the first `conc` together, which a busy
    # machine's scheduling delays cannot eat (at 0.6 s it failed once at load 9)
    sim = sim_factory(default_limits={"concurrency": conc}, latency_per_audio_s=2.0)
    for i in range(12):
        write_wav(tmp_path / "in" / f"f{i:02d}.wav", [(1.0, 300.0 + 20 * i)], seed=i)
    run(write_job(tmp_path, sim.url, str(tmp_path / "in" / "*.wav"), limits=f"{{concurrency: {conc}}}"))
    assert set(out(tmp_path)["tr__status"]) == {"ok"}
    recs = audio_records(sim)
    assert all(r.status == 200 for r in recs) and len(recs) == 12
    # the key was proven by a free GET /models: the first requests did not wait for one alone
    assert [r.path for r in sim.records].count("/v1/models") == 1
    # ... they were on the wire together: the last of the first `conc` started before any of them ended
    # (an order on the server's clock, not a duration: a loaded machine cannot make it fail)
    first = sorted(recs, key=lambda r: r.t_start)[:conc]
    assert first[-1].t_start < min(r.t_end for r in first)
    events = sorted([(r.t_start, 1) for r in recs] + [(r.t_end, -1) for r in recs])
    level = peak = 0
    for _, d in events:
        level += d
        peak = max(peak, level)
    assert peak == conc


def test_srt_of_a_split_file_is_renumbered_and_shifted(tmp_path: Path, sim_factory: Any) -> None:
    sim = sim_factory(max_upload_bytes=500_000)
    write_wav(tmp_path / "in" / "long.wav", LONG_LAYOUT, seed=7)
    run(write_job(tmp_path, sim.url, str(tmp_path / "in" / "*.wav"), step="max_upload_mb: 0.5", fmt="srt"))
    df = out(tmp_path)
    assert df["tr__status"].to_list() == ["ok"] and "tr__segments" not in df.columns
    blocks = df["tr"][0].strip().split("\n\n")
    assert [int(b.splitlines()[0]) for b in blocks] == list(range(1, len(blocks) + 1))

    def seconds(stamp: str) -> float:
        h, m, rest = stamp.split(":")
        s, ms = rest.split(",")
        return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000

    cues = [tuple(seconds(t.strip()) for t in b.splitlines()[1].split("-->")) for b in blocks]
    durations = [r.body["duration_s"] for r in audio_records(sim)]
    assert len(durations) == 3 and len(cues) == sum(math.ceil(d / 5 - 1e-9) for d in durations)
    assert cues[0][0] == 0 and cues[-1][1] == pytest.approx(153.0, abs=0.1)
    starts = [c[0] for c in cues]
    assert starts == sorted(starts)
    # a piece's first cue starts where the piece starts, at a silence, not 5 s after the cue before
    offsets = [c[0] for prev, c in zip(cues, cues[1:], strict=False) if abs(c[0] - prev[0] - 5) > 0.01]
    assert len(offsets) == 2
    assert all(any(a <= o <= b for a, b in LONG_SILENCES) for o in offsets), offsets


def test_job_checks_before_any_request(tmp_path: Path, sim: Any) -> None:
    write_wav(tmp_path / "in" / "a.wav", [(1.0, 300.0)])
    glob = str(tmp_path / "in" / "*.wav")
    bad = [
        (
            dict(step="timestamp_granularities: [word]", fmt="json"),
            "timestamp_granularities needs response_format: verbose_json",
        ),
        (dict(model="gpt-4o-transcribe", fmt="srt"), "answers response_format json only"),
        (dict(step='language: "{{ row.lang }}"'), "unknown column `lang` in step `tr`, language"),
        (dict(step="params: {file: x}"), "params may not set file"),
        (dict(step="max_upload_mb: 0"), "max_upload_mb"),
    ]
    for kw, message in bad:
        with pytest.raises(JobError) as e:
            build_plan(write_job(tmp_path, sim.url, glob, **kw))  # type: ignore[arg-type]
        assert message in str(e.value), str(e.value)
    with pytest.raises(JobError, match="no files match the input glob"):
        build_plan(write_job(tmp_path, sim.url, str(tmp_path / "nothing" / "*.mp3")))
    assert sim.records == []


def _spawn(job: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, SIM_KEY_ENV: "test-key"}
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "run", str(job), "--quiet"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow
def test_rerun_after_kill_sends_only_unfinished_files(tmp_path: Path, sim_factory: Any) -> None:
    sim = sim_factory(latency_s=0.25, max_upload_bytes=500_000)
    d = tmp_path / "in"
    write_wav(d / "a_long.wav", LONG_LAYOUT, seed=7)  # first in order: its pieces are among the first sent
    for i in range(36):
        write_wav(d / f"f{i:02d}.wav", [(1.0 + (i % 3) * 0.5, 200.0 + 10 * i)], seed=100 + i)
    job = write_job(tmp_path, sim.url, str(d / "*.wav"), step="max_upload_mb: 0.5", limits="{concurrency: 4}")
    proc = _spawn(job)
    deadline = time.monotonic() + 60
    while sum(1 for r in audio_records(sim) if r.status == 200) < 12:
        assert time.monotonic() < deadline and proc.poll() is None, "the run did not get going"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    # Answers the server sent in the last moments before the kill may never have reached the client:
    # those are unfinished. Every answer the client stored (read from its cache, not guessed from the
    # time) must not be sent again.
    stored = stored_answers(tmp_path / "cache")
    answered = {
        r.body["file_sha256"] for r in audio_records(sim) if r.status == 200 and r.body.get("answer_sha256") in stored
    }
    assert 6 <= len(answered) < 39
    before = max(r.seq for r in sim.records)
    proc = _spawn(job)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr.decode()
    resent = [r.body["file_sha256"] for r in audio_records(sim) if r.seq > before and r.body["file_sha256"] in answered]
    assert resent == [], f"{len(resent)} answered files or pieces were sent again"
    df = out(tmp_path)
    assert df.height == 37 and set(df["tr__status"]) == {"ok"}
    assert len({r.body["file_sha256"] for r in audio_records(sim) if r.status == 200}) == 36 + 3


def test_failed_attempts_resend_the_whole_file(tmp_path: Path, sim: Any) -> None:
    sim.set_faults(
        [
            FaultRule(kind="hang", path="/audio/transcriptions", first=1, hang_s=30),
            FaultRule(kind="status", status=502, path="/audio/transcriptions", every=3, times=3),
            FaultRule(kind="reset", path="/audio/transcriptions", every=4, times=2),
        ]
    )
    d = tmp_path / "in"
    files = [write_wav(d / f"f{i}.wav", [(1.0 + i * 0.25, 300.0 + 30 * i)], seed=i) for i in range(8)]
    run(write_job(tmp_path, sim.url, str(d / "*.wav"), step="timeout_s: 1", limits="{concurrency: 2}", attempts=8))
    df = out(tmp_path)
    assert set(df["tr__status"]) == {"ok"}, df["tr__error"].to_list()
    assert df["tr__attempts"].max() >= 2
    sizes = {sha(f): f.stat().st_size for f in files}
    recs = audio_records(sim)
    # (the hung request is recorded only when the simulator gives up on it: the client timed out after 1 s)
    assert len(recs) > 8 and {r.fault for r in recs} >= {"status", "reset"}
    # every attempt carried the whole file: the multipart body was built afresh each time
    assert all(r.body["file_size"] == sizes[r.body["file_sha256"]] for r in recs)


@pytest.mark.slow
def stopped_with_two_pieces_on_the_wire(tmp_path: Path, sim_factory: Any, then: Any = None) -> tuple[Any, Path, Any]:
    """A long file cut into 3 pieces under a concurrency of 2, its run stopped (Ctrl-C) once two pieces are
    on the wire (an event, not a time: load-proof), and `then(executor)` called right after: the summary,
    the job and the simulator."""
    sim = sim_factory(max_upload_bytes=500_000, latency_s=2.0)
    write_wav(tmp_path / "in" / "long.wav", LONG_LAYOUT, seed=7)
    job = write_job(
        tmp_path, sim.url, str(tmp_path / "in" / "*.wav"), step="max_upload_mb: 0.5", limits="{concurrency: 2}"
    )

    async def interrupted() -> Any:
        ex = Executor(build_plan(job), RunOptions())

        async def stop_once_two_pieces_are_on_the_wire() -> None:
            while sim.in_flight("/audio/transcriptions") < 2:  # noqa: ASYNC110 (the server is in a thread)
                await asyncio.sleep(0.02)
            ex.request_stop()
            if then is not None:
                await then(ex)

        stopper = asyncio.create_task(stop_once_two_pieces_are_on_the_wire())
        try:
            return await ex.run()
        finally:
            stopper.cancel()

    return asyncio.run(interrupted()), job, sim


def test_ctrl_c_lets_pieces_on_the_wire_finish(tmp_path: Path, sim_factory: Any) -> None:
    summary, job, sim = stopped_with_two_pieces_on_the_wire(tmp_path, sim_factory)
    assert summary.interrupted and summary.rows_processed == 0
    first = audio_records(sim)
    assert len(first) == 2 and all(r.status == 200 for r in first), "the pieces on the wire were let finish"
    summary = run(job)
    again = audio_records(sim)[2:]
    assert len(again) == 1, "only the piece never sent is sent now"
    assert again[0].body["file_sha256"] not in {r.body["file_sha256"] for r in first}
    row = out(tmp_path).row(0, named=True)
    assert row["tr__status"] == "ok" and row["tr__attempts"] == 1 and not row["tr__cached"]


def test_an_abort_during_the_stop_does_not_drop_pieces_on_the_wire(tmp_path: Path, sim_factory: Any) -> None:
    """The run aborts while its first Ctrl-C lets two pieces finish (here: called directly, as another
    row's refused key or a streak of identical failures would): the pieces are still let finish and
    cached, so the re-run does not pay for them again. (It halted the engine a second time, which
    cancelled the row's task again and with it the pieces it waited for.)"""

    async def abort(ex: Executor) -> None:
        await asyncio.sleep(0)  # the row's task takes the stop: it waits for its two pieces
        assert ex._engine is not None
        ex._engine.set_abort(RunAborted("provider `other` refused step `x`: invalid_api_key"))

    summary, job, sim = stopped_with_two_pieces_on_the_wire(tmp_path, sim_factory, then=abort)
    assert summary.interrupted and summary.rows_processed == 0
    first = audio_records(sim)
    assert len(first) == 2 and all(r.status == 200 for r in first), "the pieces on the wire were let finish"
    assert summary.stats.requests == 2
    summary = run(job)
    again = audio_records(sim)[2:]
    sent_before = {r.body["file_sha256"] for r in first}
    assert [r.body["file_sha256"] in sent_before for r in again] == [False], "only the piece never sent"


@pytest.mark.parametrize("fmt", ["json", "verbose_json"])
def test_whisper_style_leading_space_is_trimmed_as_in_a_joined_answer(
    tmp_path: Path, sim_factory: Any, fmt: str
) -> None:
    """faster-whisper-server (and whisper.cpp) answer `text` as the segments joined, each starting with a
    space: the column holds it trimmed, as OpenAI's answers and the joined answer of a split file are."""
    sim = sim_factory(transcript_style="whisper", max_upload_bytes=500_000)
    short = write_wav(tmp_path / "in" / "short.wav", [(7.0, 440.0)], seed=3)
    write_wav(tmp_path / "in" / "long.wav", LONG_LAYOUT, seed=7)
    run(write_job(tmp_path, sim.url, str(tmp_path / "in" / "*.wav"), fmt=fmt, step="max_upload_mb: 0.5"))
    df = out(tmp_path)
    assert set(df["tr__status"]) == {"ok"}, df["tr__error"].to_list()
    recs = audio_records(sim)
    assert len(recs) == 4  # the short file and the long one's three pieces
    text, segments = sim_transcript(short.read_bytes(), 7.0)
    assert len(segments) == 2  # the server's text was " A. B." (segments joined as they are)
    row = df.filter(pl.col("path") == "short.wav").row(0, named=True)
    assert row["tr"] == text  # "A. B.": no leading space
    long = df.filter(pl.col("path") == "long.wav").row(0, named=True)["tr"]
    assert long == long.strip() and "  " not in long and "  " not in row["tr"]
    if fmt == "verbose_json":  # segments stay as the server sent them
        assert [s["text"] for s in row["tr__segments"]] == [" " + s["text"] for s in segments]
