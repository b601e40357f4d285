"""Transcription answers: parse each response format, join a split file's pieces with shifted times."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import TransientError
from ..records import Usage
from ..retry import classify
from .base import load_json

FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
SUBTITLES = ("srt", "vtt")
_CUE_TIME = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{2})([,.])(\d{3})")
_CUE_LINE = re.compile(rf"^\s*({_CUE_TIME.pattern})\s*-->\s*({_CUE_TIME.pattern})(.*)$")


@dataclass(frozen=True)
class Answer:
    """One transcription: the text (the subtitle document for srt/vtt) and, for verbose_json, the rest."""

    text: str
    language: str | None = None
    duration: float | None = None
    segments: list[dict[str, Any]] | None = None  # {start, end, text}
    words: list[dict[str, Any]] | None = None  # {start, end, word}
    usage: Usage | None = None
    seconds: float | None = None  # billed audio seconds (usage of type duration)


def _num(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise TransientError(f"transcription answer has a bad {what}: {v!r}")
    return float(v)


def _usage(obj: dict[str, Any]) -> tuple[Usage | None, float | None]:
    u = obj.get("usage")
    if not isinstance(u, dict):
        return None, None
    if u.get("type") == "duration" and isinstance(u.get("seconds"), int | float):
        return None, float(u["seconds"])
    if isinstance(u.get("input_tokens"), int):
        return Usage(int(u["input_tokens"]), int(u.get("output_tokens") or 0)), None
    return None, None


def parse_answer(body: bytes, response_format: str) -> Answer:
    """A 2xx body in `response_format`; TransientError when it is not what that format looks like."""
    if response_format in ("json", "verbose_json"):
        obj = load_json(body)
        text = obj.get("text")
        if not isinstance(text, str):
            raise TransientError(f"transcription answer has no text: {body[:200]!r}")
        # faster-whisper-server and whisper.cpp send the segments joined as they are (" The quick ...");
        # trimmed, as OpenAI's answers, the `text` format and the joined answer of a split file are.
        text = text.strip()
        usage, seconds = _usage(obj)
        if response_format == "json":
            return Answer(text, usage=usage, seconds=seconds)
        segments = None
        if isinstance(obj.get("segments"), list):
            segments = [
                {
                    "start": _num(s.get("start"), "segment start"),
                    "end": _num(s.get("end"), "segment end"),
                    "text": str(s.get("text") or ""),
                }
                for s in obj["segments"]
                if isinstance(s, dict)
            ]
        words = None
        if isinstance(obj.get("words"), list):
            words = [
                {
                    "start": _num(w.get("start"), "word start"),
                    "end": _num(w.get("end"), "word end"),
                    "word": str(w.get("word") or ""),
                }
                for w in obj["words"]
                if isinstance(w, dict)
            ]
        duration = obj.get("duration")
        return Answer(
            text,
            language=obj.get("language") if isinstance(obj.get("language"), str) else None,
            duration=_num(duration, "duration") if duration is not None else None,
            segments=segments,
            words=words,
            usage=usage,
            seconds=seconds,
        )
    text = body.decode("utf-8", "replace")
    stripped = text.lstrip()
    if stripped.startswith("{"):  # a gateway's error inside a 200
        try:
            err: Any = json.loads(stripped)
        except ValueError:
            err = None
        if isinstance(err, dict) and err.get("error"):
            raise classify(200, body, {})
    if response_format == "vtt" and not stripped.startswith("WEBVTT"):
        raise TransientError(f"vtt answer does not start with WEBVTT: {body[:120]!r}")
    return Answer(text.strip() if response_format == "text" else text)


def _parse_time(m: re.Match[str]) -> float:
    h, mi, s, _, ms = m.groups()
    return int(h or 0) * 3600 + int(mi) * 60 + int(s) + int(ms) / 1000


def format_time(t: float, sep: str) -> str:
    """HH:MM:SS,mmm (srt) or HH:MM:SS.mmm (vtt)."""
    ms = max(0, round(t * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _cues(doc: str) -> list[tuple[float, float, str, list[str]]]:
    """(start, end, settings after the end time, text lines) of each cue of an srt or vtt document."""
    cues: list[tuple[float, float, str, list[str]]] = []
    for block in re.split(r"\r?\n\s*\r?\n", doc.strip()):
        lines = block.splitlines()
        for i, line in enumerate(lines):
            m = _CUE_LINE.match(line)
            if m:
                start = _parse_time(_CUE_TIME.match(m.group(1)))  # type: ignore[arg-type]
                end = _parse_time(_CUE_TIME.match(m.group(7)))  # type: ignore[arg-type]
                cues.append((start, end, m.group(13), lines[i + 1 :]))
                break
    return cues


def render_subtitles(cues: Sequence[tuple[float, float, str, list[str]]], fmt: str) -> str:
    """An srt (numbered from 1) or vtt document of `cues`."""
    if fmt == "srt":
        blocks = [
            f"{i}\n{format_time(a, ',')} --> {format_time(b, ',')}{extra}\n" + "\n".join(lines) + "\n"
            for i, (a, b, extra, lines) in enumerate(cues, 1)
        ]
        return "\n".join(blocks)
    blocks = [
        f"{format_time(a, '.')} --> {format_time(b, '.')}{extra}\n" + "\n".join(lines) + "\n"
        for a, b, extra, lines in cues
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def join_answers(pieces: Sequence[tuple[float, Answer]], response_format: str) -> Answer:
    """One answer for a split file: texts joined, times shifted by each piece's offset (in order)."""
    if len(pieces) == 1 and pieces[0][0] == 0:
        return pieces[0][1]
    answers = [a for _, a in pieces]
    usages = [a.usage for a in answers]
    usage = (
        Usage(sum(u.prompt_tokens for u in usages if u), sum(u.completion_tokens for u in usages if u))
        if all(usages)
        else None
    )
    seconds = sum(a.seconds or 0 for a in answers) if all(a.seconds is not None for a in answers) else None
    if response_format in SUBTITLES:
        cues = [(a + off, b + off, extra, lines) for off, ans in pieces for a, b, extra, lines in _cues(ans.text)]
        return Answer(render_subtitles(cues, response_format), usage=usage, seconds=seconds)
    text = " ".join(t for t in (a.text.strip() for a in answers) if t)
    if response_format != "verbose_json":
        return Answer(text, usage=usage, seconds=seconds)
    segments = None
    if any(a.segments is not None for a in answers):
        segments = [
            {**s, "start": s["start"] + off, "end": s["end"] + off} for off, a in pieces for s in (a.segments or [])
        ]
    words = None
    if any(a.words is not None for a in answers):
        words = [{**w, "start": w["start"] + off, "end": w["end"] + off} for off, a in pieces for w in (a.words or [])]
    last_off, last = pieces[-1]
    duration = last_off + last.duration if last.duration is not None else None
    languages = [a.language for a in answers if a.language]
    language = max(set(languages), key=languages.count) if languages else None
    return Answer(
        text, language=language, duration=duration, segments=segments, words=words, usage=usage, seconds=seconds
    )


def answer_body(answer: Answer, response_format: str) -> bytes:
    """The answer as the server would send it (for the cache): `parse_answer` reads it back the same."""
    if response_format not in ("json", "verbose_json"):
        return answer.text.encode()
    obj: dict[str, Any] = {"text": answer.text}
    if response_format == "verbose_json":
        obj.update(task="transcribe", language=answer.language, duration=answer.duration)
        if answer.segments is not None:
            obj["segments"] = [{"id": i, **s} for i, s in enumerate(answer.segments)]
        if answer.words is not None:
            obj["words"] = answer.words
    if answer.usage is not None:
        obj["usage"] = {
            "type": "tokens",
            "input_tokens": answer.usage.prompt_tokens,
            "output_tokens": answer.usage.completion_tokens,
        }
    elif answer.seconds is not None:
        obj["usage"] = {"type": "duration", "seconds": answer.seconds}
    return json.dumps(obj, ensure_ascii=False).encode()
