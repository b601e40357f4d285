"""Pure parts of transcription: cut planning, silence parsing, answer parsing and joining, globs, timeouts."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.audiofiles import (
    AudioFileError,
    inspect_file,
    max_piece_seconds,
    parse_silences,
    plan_cuts,
)
from pipeline.endpoints.transcripts import Answer, answer_body, join_answers, parse_answer
from pipeline.errors import InputError, RateLimited, TransientError
from pipeline.globsource import GlobSource, expand_braces, glob_root, is_glob
from pipeline.records import Usage
from pipeline.sim.audio import sim_transcript, transcription_body
from pipeline.sources import Source

# ----- cutting


@given(
    duration=st.floats(1, 20_000),
    max_piece=st.floats(5, 3000),
    silences=st.lists(st.tuples(st.floats(0, 20_000), st.floats(0, 5)), max_size=40),
)
def test_cuts_keep_every_piece_within_bounds(
    duration: float, max_piece: float, silences: list[tuple[float, float]]
) -> None:
    sil = sorted((s, s + d) for s, d in silences)
    cuts = plan_cuts(duration, sil, max_piece)
    bounds = [0.0, *cuts, duration]
    lengths = [b - a for a, b in zip(bounds, bounds[1:], strict=False)]
    assert all(x <= max_piece + 1e-3 for x in lengths)
    assert cuts == sorted(cuts) and all(x > 0 for x in lengths)
    if cuts:
        assert lengths[-1] >= 1.0 - 1e-3  # no sliver at the end
        assert all(x >= max_piece / 2 - 1e-3 for x in lengths[:-1])  # never needlessly short


def test_cuts_go_in_the_latest_silence() -> None:
    silences = [(10.0, 11.0), (40.0, 42.0), (55.0, 56.0), (70.0, 71.0)]
    assert plan_cuts(100.0, silences, max_piece_s=60.0) == [55.5]
    assert plan_cuts(100.0, [], max_piece_s=60.0) == [60.0]  # no silence: a hard cut at the maximum
    assert plan_cuts(50.0, silences, max_piece_s=60.0) == []
    # a silence straddling the allowed range: cut in the middle of its allowed part
    assert plan_cuts(100.0, [(50.0, 80.0)], max_piece_s=60.0) == [55.0]


def test_parse_silences_closes_a_trailing_one() -> None:
    err = (
        "[silencedetect @ 0x1] silence_start: 1.5\n"
        "[silencedetect @ 0x1] silence_end: 2.25 | silence_duration: 0.75\n"
        "[silencedetect @ 0x1] silence_start: 9.1\n"
    )
    assert parse_silences(err, 10.0) == [(1.5, 2.25), (9.1, 10.0)]


def test_piece_length_from_the_limit() -> None:
    assert max_piece_seconds(25_000_000, None) == pytest.approx((25e6 * 0.9 - 4096) / 8000)
    assert max_piece_seconds(25_000_000, 1400) == pytest.approx(1372)


def test_inspect_file(tmp_path: Path) -> None:
    (tmp_path / "a.MP3").write_bytes(b"abc")
    info = inspect_file(tmp_path / "a.MP3")
    assert info.ext == "mp3" and info.size == 3
    assert info.sha256 == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    (tmp_path / "noext").write_bytes(b"abc")
    with pytest.raises(AudioFileError, match="unsupported audio format \\(no extension\\)"):
        inspect_file(tmp_path / "noext")


# ----- answers


def _sim(fmt: str, seconds: float, seed: bytes = b"x") -> bytes:
    ctype, payload = transcription_body(seed, seconds, fmt, "en", [], 0.0)
    return payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()


def test_parse_each_format() -> None:
    a = parse_answer(_sim("verbose_json", 12.0), "verbose_json")
    assert a.language == "english" and a.duration == 12.0 and a.seconds == 12
    assert [(s["start"], s["end"]) for s in a.segments or []] == [(0, 5), (5, 10), (10, 12)]
    j = parse_answer(_sim("json", 3.0), "json")
    assert j.text == sim_transcript(b"x", 3.0)[0] and j.seconds == 3 and j.segments is None
    assert parse_answer(b"hello there\n", "text").text == "hello there"
    assert parse_answer(_sim("srt", 7.0), "srt").text.startswith("1\n00:00:00,000 --> 00:00:05,000")
    with pytest.raises(TransientError):
        parse_answer(b'{"task": "transcribe"}', "json")
    with pytest.raises(TransientError):
        parse_answer(b"not webvtt", "vtt")
    with pytest.raises(RateLimited):  # a gateway's error inside a 200, even for a text format
        parse_answer(b'{"error": {"message": "busy", "type": "rate_limit_exceeded"}}', "text")


def test_join_shifts_segments_and_words() -> None:
    a = Answer(
        "Hello there.",
        language="english",
        duration=10.0,
        segments=[{"start": 0.0, "end": 10.0, "text": "Hello there."}],
        words=[{"start": 0.5, "end": 1.0, "word": "Hello"}],
        usage=Usage(10, 3),
    )
    b = Answer(
        " General Kenobi. ",
        language="english",
        duration=4.0,
        segments=[{"start": 0.0, "end": 4.0, "text": "General Kenobi."}],
        words=[{"start": 0.25, "end": 0.75, "word": "General"}],
        usage=Usage(5, 2),
    )
    j = join_answers([(0.0, a), (10.5, b)], "verbose_json")
    assert j.text == "Hello there. General Kenobi."
    assert [(s["start"], s["end"]) for s in j.segments or []] == [(0.0, 10.0), (10.5, 14.5)]
    assert [w["start"] for w in j.words or []] == [0.5, 10.75]
    assert j.duration == 14.5 and j.language == "english" and j.usage == Usage(15, 5)
    # what the cache keeps reads back the same
    assert parse_answer(answer_body(j, "verbose_json"), "verbose_json") == j


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_join_subtitles(fmt: str) -> None:
    first, second = _sim(fmt, 7.0, b"a"), _sim(fmt, 3.0, b"b")
    j = join_answers([(0.0, parse_answer(first, fmt)), (7.25, parse_answer(second, fmt))], fmt)
    sep = "," if fmt == "srt" else "."
    assert f"00:00:07{sep}250 --> 00:00:10{sep}250" in j.text
    assert j.text.count("-->") == 3
    if fmt == "srt":
        assert [ln for ln in j.text.splitlines() if ln.isdigit()] == ["1", "2", "3"]
    else:
        assert j.text.startswith("WEBVTT\n\n") and j.text.count("WEBVTT") == 1
    assert parse_answer(answer_body(j, fmt), fmt).text == j.text


def test_join_plain_text_and_json() -> None:
    pieces = [(0.0, Answer("one two", seconds=30)), (30.0, Answer("three", seconds=5))]
    assert join_answers(pieces, "text").text == "one two three"
    j = join_answers(pieces, "json")
    assert j.seconds == 35 and parse_answer(answer_body(j, "json"), "json") == j


# ----- globs and folders


def test_braces_and_roots() -> None:
    assert expand_braces("a/*.{mp3,wav}") == ["a/*.mp3", "a/*.wav"]
    assert expand_braces("x{a,b{c,d}}y") == ["xay", "xbcy", "xbdy"]
    assert expand_braces("lit{x}/{1,2}") == ["lit{x}/1", "lit{x}/2"]
    assert expand_braces("{unbalanced") == ["{unbalanced"]
    assert is_glob("a/*.mp3") and is_glob("a/{b,c}.mp3") and not is_glob("data{1}.csv")
    assert glob_root("archive/2024/**/*.mp3") == Path("archive/2024")
    assert glob_root("*.wav") == Path(".") and glob_root("/x/{a,b}/*.mp3") == Path("/x")


def test_glob_source_lists_files(tmp_path: Path) -> None:
    for name in ["b/2.wav", "a/1.MP3", "a/deep/3.wav", "a/.hidden.wav", "notes.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x" * len(name))
    os.utime(tmp_path / "b/2.wav", (1_700_000_000, 1_700_000_000))
    src = Source.open(f"{tmp_path}/**/*.{{wav,MP3}}", format=None, id_column=None, limit=None)
    assert isinstance(src, GlobSource) and src.id_column == "path" and src.base_dir == tmp_path.resolve()
    df = next(src.batches(100))
    assert df["path"].to_list() == ["a/1.MP3", "a/deep/3.wav", "b/2.wav"]
    assert df["size_bytes"].to_list() == [7, 12, 7] and df["__row"].to_list() == [0, 1, 2]
    assert df["modified_at"][2].timestamp() == 1_700_000_000
    assert src.check() == 3
    # a folder: its audio files at any depth, any letter case, no hidden files
    folder = Source.open(tmp_path, format=None, id_column=None, limit=2)
    assert folder.check() == 2 and next(folder.batches(10))["path"].to_list() == ["a/1.MP3", "a/deep/3.wav"]

    # the fingerprint follows the files: a touched file moves it
    def fingerprint() -> str:
        pattern = f"{tmp_path}/**/*.{{wav,MP3}}"
        return Source.open(pattern, format=None, id_column=None, limit=None).fingerprint()

    fp = src.fingerprint()
    assert fingerprint() == fp
    os.utime(tmp_path / "b/2.wav", (time.time(), time.time()))
    assert fingerprint() != fp


def test_glob_source_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no files match the input glob"):
        Source.open(f"{tmp_path}/*.mp3", format=None, id_column=None, limit=None)
    with pytest.raises(InputError, match="no audio files"):
        Source.open(tmp_path, format=None, id_column=None, limit=None)
    (tmp_path / "x.wav").write_bytes(b"x")
    with pytest.raises(InputError, match="does not apply"):
        Source.open(f"{tmp_path}/*.wav", format="csv", id_column=None, limit=None)
