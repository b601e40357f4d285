"""Transcription: audio duration probing, deterministic transcripts and their output formats."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import math
import os
import re
import shutil
import tempfile
import wave
from typing import Any

from .faults import SimError

AUDIO_EXTENSIONS = ["flac", "mp3", "mp4", "mpeg", "mpga", "m4a", "ogg", "wav", "webm"]
RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
SEGMENT_S = 5.0
MIN_DURATION_S = 0.1
CORRUPT = "Audio file might be corrupted or unsupported"
_WORDS = (  # noqa: SIM905
    "today we talk about rivers mountains data models weather markets music history science "
    "travel cooking gardens cities trains ocean light energy water stories people work time "
    "simple clear"
).split()
_LANGUAGES = {
    "en": "english",
    "zh": "chinese",
    "es": "spanish",
    "fr": "french",
    "de": "german",
    "ja": "japanese",
    "ko": "korean",
    "ru": "russian",
    "pt": "portuguese",
    "it": "italian",
}


def sim_transcript(data: bytes, duration_s: float) -> tuple[str, list[dict[str, Any]]]:
    """Deterministic transcript of audio bytes: (text, segments of ~5 s covering [0, duration])."""
    digest = hashlib.sha256(data).digest()
    n = max(1, math.ceil(duration_s / SEGMENT_S - 1e-9))
    segments = []
    for i in range(n):
        h = hashlib.sha256(digest + i.to_bytes(4, "big")).digest()
        words = [_WORDS[b % len(_WORDS)] for b in h[1 : 1 + 6 + h[0] % 6]]
        text = " ".join(words).capitalize() + "."
        start = round(i * SEGMENT_S, 3)
        end = round(min((i + 1) * SEGMENT_S, duration_s), 3) if i == n - 1 else round((i + 1) * SEGMENT_S, 3)
        segments.append({"id": i, "start": start, "end": end, "text": text})
    return " ".join(str(s["text"]) for s in segments), segments


def _wav_duration(data: bytes) -> float | None:
    try:
        with wave.open(io.BytesIO(data)) as w:
            rate = w.getframerate()
            return w.getnframes() / rate if rate else None
    except (wave.Error, EOFError, ValueError):
        return None


def _ffmpeg_exe() -> str | None:
    try:
        import imageio_ffmpeg

        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except Exception:
        return shutil.which("ffmpeg")


async def _ffmpeg_duration(data: bytes, ext: str) -> float | None:
    exe = _ffmpeg_exe()
    if exe is None:
        return None
    fd, path = tempfile.mkstemp(suffix="." + ext)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        proc = await asyncio.create_subprocess_exec(
            exe,
            "-hide_banner",
            "-nostdin",
            "-i",
            path,
            "-f",
            "null",
            "-",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
    text = err.decode("utf-8", "replace")
    times = re.findall(r"time=(\d+):(\d+):(\d+(?:\.\d+)?)", text)
    if not times:
        times = re.findall(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", text)
    if proc.returncode != 0 or not times:
        return None
    h, m, s = times[-1]
    return int(h) * 3600 + int(m) * 60 + float(s)


async def audio_duration(data: bytes, ext: str) -> float:
    """Duration in seconds, or SimError 400 when the audio cannot be decoded."""
    if not data:
        raise SimError(400, CORRUPT, param="file")
    duration = _wav_duration(data) if ext == "wav" else None
    if duration is None:
        duration = await _ffmpeg_duration(data, ext)
    if duration is None:
        raise SimError(400, CORRUPT, param="file")
    if duration < MIN_DURATION_S:
        raise SimError(
            400,
            f"Audio file is too short. Minimum audio length is {MIN_DURATION_S} seconds.",
            param="file",
            code="audio_too_short",
        )
    return duration


def check_format(model: str, response_format: str) -> None:
    if response_format not in RESPONSE_FORMATS:
        raise SimError(
            400,
            f"Invalid 'response_format': {response_format!r}; expected one of {list(RESPONSE_FORMATS)}.",
            param="response_format",
        )
    if model.startswith("gpt-4o") and response_format != "json":
        raise SimError(
            400,
            f"response_format '{response_format}' is not compatible with model '{model}'. Use 'json'.",
            param="response_format",
            code="unsupported_value",
        )


def _stamp(t: float, sep: str) -> str:
    ms = round(t * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _words(segments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for seg in segments:
        ws = seg["text"].split()
        step = (seg["end"] - seg["start"]) / max(1, len(ws))
        for k, w in enumerate(ws):
            out.append(
                {
                    "word": w.strip("."),
                    "start": round(seg["start"] + k * step, 3),
                    "end": round(seg["start"] + (k + 1) * step, 3),
                }
            )
    return out


def transcription_body(
    data: bytes,
    duration: float,
    response_format: str,
    language: str | None,
    granularities: list[str],
    temperature: float,
    style: str = "openai",
) -> tuple[str, Any]:
    """(content type, payload) of a transcription answer: a JSON-able dict or plain text.

    `style` "whisper" plays faster-whisper-server in the JSON formats: segment texts start with a space
    and `text` is their plain concatenation (so it starts with a space too).
    """
    text, segments = sim_transcript(data, duration)
    if style == "whisper" and response_format in ("json", "verbose_json"):
        segments = [{**s, "text": " " + s["text"]} for s in segments]
        text = "".join(s["text"] for s in segments)
    if response_format == "text":
        return "text/plain", text
    if response_format == "srt":
        blocks = [
            f"{i + 1}\n{_stamp(s['start'], ',')} --> {_stamp(s['end'], ',')}\n{s['text']}\n"
            for i, s in enumerate(segments)
        ]
        return "text/plain", "\n".join(blocks)
    if response_format == "vtt":
        blocks = [f"{_stamp(s['start'], '.')} --> {_stamp(s['end'], '.')}\n{s['text']}\n" for s in segments]
        return "text/plain", "WEBVTT\n\n" + "\n".join(blocks)
    usage = {"type": "duration", "seconds": math.ceil(duration)}
    if response_format == "json":
        return "application/json", {"text": text, "usage": usage}
    out: dict[str, Any] = {
        "task": "transcribe",
        "language": _LANGUAGES.get(language or "en", language or "english"),
        "duration": round(duration, 3),
        "text": text,
    }
    if not granularities or "segment" in granularities:
        out["segments"] = [
            {
                **s,
                "seek": 0,
                "tokens": [],
                "temperature": temperature,
                "avg_logprob": -0.25,
                "compression_ratio": 1.2,
                "no_speech_prob": 0.01,
            }
            for s in segments
        ]
    if "word" in granularities:
        out["words"] = _words(segments)
    out["usage"] = usage
    return "application/json", out
