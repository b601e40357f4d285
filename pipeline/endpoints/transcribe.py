"""The `transcribe` step: one audio file per row, streamed as multipart; oversized files split and joined.

The kind sends nothing: a row's exchange asks the engine to inspect the file (local work), to look its
content's answer up in the cache, to probe its duration, to prove the key, and to send the file, or its
pieces (split by ffmpeg, local work) all at once; the joined answer is handed back for the cache."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import tempfile
from collections.abc import Awaitable, Generator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa

from .. import audiofiles
from ..audiofiles import AudioFile, AudioFileError, Piece
from ..budget import Charge
from ..cache import canonical_json, request_key
from ..calls import CallError, Reply
from ..job.model import TranscribeStep
from ..pricing import Price
from ..records import Parsed, StepResult
from ..requests import FilePart, HttpRequest, Multipart
from ..templating import RenderError, Template, compile_template
from .base import Done, Exchange, Local, Lookup, Need, Outcome, Prepared, ProveKey, StepRuntime
from .transcripts import Answer, answer_body, join_answers, parse_answer

ENDPOINT = "/audio/transcriptions"
# Per-request timeout when the step sets none: a base, plus time for the model to listen (generous: the
# models run many times faster than real time) and for the upload on a slow (~1 Mbit/s) uplink.
TIMEOUT_BASE_S = 60.0
TIMEOUT_PER_AUDIO_MIN_S = 12.0
TIMEOUT_PER_MB_S = 8.0
# Without a duration (no ffmpeg), assume the lowest common speech bitrate: 32 kbit/s = 4 kB per second.
_ASSUMED_BYTES_PER_S = 4000

T = TypeVar("T")

SEGMENT = pa.struct([("start", pa.float64()), ("end", pa.float64()), ("text", pa.string())])
WORD = pa.struct([("start", pa.float64()), ("end", pa.float64()), ("word", pa.string())])


def _safe_filename(path: Path, ext: str) -> str:
    """An ASCII file name with the real extension: servers only need the extension, and some choke on
    non-ASCII names in multipart headers."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem).strip("._") or "audio"
    return f"{stem[:80]}.{ext}"


def _form_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict | list):
        return json.dumps(v, ensure_ascii=False, separators=(",", ":"))
    return str(v)


def _form_fields(fields: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The form fields of a request (a list under a `name[]` key is one field per item)."""
    out = []
    for k, v in fields.items():
        for item in v if isinstance(v, list) and k.endswith("[]") else [v]:
            out.append((k, _form_value(item)))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class AudioPrepared(Prepared):
    """A transcribe row before its file is read: the resolved audio path and the request's fields."""

    path: Path = Path()
    fields: dict[str, Any] | None = None


class TranscribeRuntime(StepRuntime):
    counters = ("audio_s", "audio_rows")  # audio transcribed, and the rows it came from

    def __init__(self, spec: TranscribeStep, cache_ns: str, input_dir: Path) -> None:
        super().__init__(spec.name, spec.output_column, spec.provider, cache_ns)
        self.spec = spec
        self.input_dir = input_dir
        where = f"step `{spec.name}`"
        self._audio = compile_template(spec.audio, f"{where}, audio")
        self._language = compile_template(spec.language, f"{where}, language") if spec.language else None
        self._prompt = compile_template(spec.prompt, f"{where}, prompt") if spec.prompt else None
        self._format = spec.response_format
        self._max_bytes = int(spec.max_upload_mb * 1_000_000)
        verbose = self._format == "verbose_json"
        grains = spec.timestamp_granularities or []
        self._segments = verbose and (not grains or "segment" in grains)
        self._words = verbose and "word" in grains
        self._fresh()

    def _fresh(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None  # the semaphores below belong to it
        self._probe_slots: asyncio.Semaphore
        self._split_slots: asyncio.Semaphore

    # ----------------------------------------------------------------- the StepRuntime surface
    def templates(self) -> list[Template]:
        return [t for t in (self._audio, self._language, self._prompt) if t is not None]

    def output_fields(self) -> list[pa.Field]:
        fields = [pa.field(self.output_column, pa.string())]
        if self._format == "verbose_json":
            fields += [
                pa.field(f"{self.name}__language", pa.string()),
                pa.field(f"{self.name}__duration", pa.float64()),
            ]
        if self._segments:
            fields.append(pa.field(f"{self.name}__segments", pa.list_(SEGMENT)))
        if self._words:
            fields.append(pa.field(f"{self.name}__words", pa.list_(WORD)))
        return fields

    def prepare(self, row: Mapping[str, Any]) -> AudioPrepared:
        """The row's form fields and resolved audio path; the file itself is read in `exchange`."""
        raw = self._audio.render(row).strip()
        if not raw:
            raise RenderError(f"step `{self.name}`, audio: the path is empty")
        path = Path(raw).expanduser()
        if not path.is_absolute():
            path = self.input_dir / path
        body: dict[str, Any] = {"model": self.spec.model, "response_format": self._format}
        if self._language is not None:
            lang = self._language.render(row).strip()
            if lang:
                body["language"] = lang
        if self._prompt is not None:
            body["prompt"] = self._prompt.render(row)
        if self.spec.temperature is not None:
            body["temperature"] = self.spec.temperature
        if self.spec.timestamp_granularities:
            body["timestamp_granularities[]"] = list(self.spec.timestamp_granularities)
        body.update(self.spec.params)
        # Nothing is reserved against tokens/min: providers bill transcription by audio length.
        request = HttpRequest(ENDPOINT, multipart=Multipart(_form_fields(body), (FilePart(path, path.name),)))
        return AudioPrepared(request, tokens=0, cache_key=None, path=path, fields=body)

    def parse(self, body: bytes) -> Parsed:
        answer = parse_answer(body, self._format)
        return Parsed({"answer": answer}, answer.usage)

    def _values(self, a: Answer) -> dict[str, Any]:
        v: dict[str, Any] = {self.output_column: a.text}
        if self._format == "verbose_json":
            v[f"{self.name}__language"] = a.language
            v[f"{self.name}__duration"] = a.duration
        if self._segments:
            segs = a.segments
            v[f"{self.name}__segments"] = (
                None if segs is None else [{k: s[k] for k in ("start", "end", "text")} for s in segs]
            )
        if self._words:
            v[f"{self.name}__words"] = (
                None if a.words is None else [{k: w[k] for k in ("start", "end", "word")} for w in a.words]
            )
        return v

    # ----------------------------------------------------------------- running a row
    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # semaphores belong to one loop; a runtime may be reused in tests
            self._loop = loop
            cpus = os.cpu_count() or 2
            self._probe_slots = asyncio.Semaphore(2 * cpus)
            self._split_slots = asyncio.Semaphore(cpus)  # each split keeps an ffmpeg busy on one core

    # The pieces of a split file go at once (each waits for its own slot).
    sends_at_once = True

    def exchange(self, first: Prepared) -> Exchange:
        """Check and hash the file, answer from the cache, or upload it (split first when too big)."""
        assert isinstance(first, AudioPrepared) and first.fields is not None
        path, fields = first.path, dict(first.fields)
        info = yield Local(lambda: _or_error(asyncio.to_thread(audiofiles.inspect_file, path)))
        if isinstance(info, AudioFileError):
            return _audio_error(info)
        assert isinstance(info, AudioFile)
        blob = canonical_json(fields)
        # The content hash, not the path, keys the answer: a renamed or copied file is not paid twice.
        key = request_key(self.cache_ns, ENDPOINT, blob, extra=f"audio-sha256:{info.sha256}")
        hit = yield Lookup(key)
        if hit is not None:
            answer: Answer = hit.parsed.values["answer"]
            return Done(self._ok(answer, answer.duration, attempts=0, cached=True))
        seconds = yield Local(lambda: _or_error(self._probe(path, info.ext)))
        if isinstance(seconds, AudioFileError):
            return _audio_error(seconds)
        yield ProveKey()
        max_s = self.spec.max_duration_s
        too_long = max_s is not None and seconds is not None and seconds > max_s
        if info.size <= self._max_bytes and not too_long:
            name = _safe_filename(path, info.ext)
            req = self._request(path, info.ext, name, fields, seconds, info.size)
            ((_, outcome),) = yield [Prepared(req, 0, key, priced=self._charge(seconds, info.size))]
            if isinstance(outcome, CallError):
                return Done(StepResult("error", error=outcome.error.short(), attempts=outcome.attempts))
            answer = outcome.parsed.values["answer"]
            return Done(self._ok(answer, seconds, attempts=outcome.attempts, cached=outcome.cached))
        return (yield from self._split(info, fields, blob, key, seconds))

    async def _probe(self, path: Path, ext: str) -> float | None:
        self._bind_loop()
        async with self._probe_slots:
            return await audiofiles.probe_duration(path, ext)

    def _split(
        self, info: AudioFile, fields: dict[str, Any], blob: bytes, key: str, seconds: float | None
    ) -> Generator[list[Prepared] | Need, Any, Done]:
        if audiofiles.ffmpeg_exe() is None:
            return _audio_error(
                AudioFileError(
                    f"{info.path} is over max_upload_mb ({info.size:,} bytes) and splitting it needs ffmpeg: "
                    "install the imageio-ffmpeg package"
                )
            )
        made: list[Path] = []

        async def split() -> list[Piece] | AudioFileError:
            tmp = Path(tempfile.mkdtemp(prefix="pipeline-split-"))
            made.append(tmp)
            self._bind_loop()
            async with self._split_slots:
                return await _or_error(
                    audiofiles.split(info.path, tmp, max_bytes=self._max_bytes, max_duration_s=self.spec.max_duration_s)
                )

        async def remove() -> None:
            for tmp in made:
                await asyncio.to_thread(shutil.rmtree, tmp, True)

        pieces = yield Local(split, remove)
        if isinstance(pieces, AudioFileError):
            return _audio_error(pieces)
        replies: list[tuple[Prepared, Outcome]] = yield self._pieces(info, pieces, fields, blob)
        n = len(pieces)
        for i, (_, r) in enumerate(replies):
            if isinstance(r, CallError):
                p = pieces[i]
                return Done(
                    StepResult(
                        "error",
                        attempts=r.attempts,
                        error=f"piece {i + 1}/{n} ({p.offset_s:.1f}-{p.offset_s + p.duration_s:.1f} s) of "
                        f"{info.path.name}: {r.error.short()}",
                    )
                )
        done = [r for _, r in replies if isinstance(r, Reply)]
        answers = [r.parsed.values["answer"] for r in done]
        answer = join_answers([(p.offset_s, a) for p, a in zip(pieces, answers, strict=True)], self._format)
        total = seconds if seconds is not None else pieces[-1].offset_s + pieces[-1].duration_s
        # The joined answer is this file's answer: a later run (or a renamed copy) needs no ffmpeg at all.
        return Done(
            self._ok(answer, total, attempts=sum(r.attempts for r in done), cached=all(r.cached for r in done)),
            store=((key, answer_body(answer, self._format)),),
        )

    def _pieces(self, info: AudioFile, pieces: list[Piece], fields: dict[str, Any], blob: bytes) -> list[Prepared]:
        """One request per piece, in piece order (each keyed by the file's content and its place)."""
        n = len(pieces)
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", info.path.stem).strip("._")[:60] or "audio"
        asks = []
        for i, piece in enumerate(pieces):
            extra = f"audio-sha256:{info.sha256}|piece:{piece.offset_s:.3f}+{piece.duration_s:.3f}"
            name = f"{stem}.part{i + 1:03d}of{n:03d}.{audiofiles.PIECE_EXT}"
            req = self._request(piece.path, audiofiles.PIECE_EXT, name, fields, piece.duration_s, piece.size)
            asks.append(
                Prepared(
                    req,
                    0,
                    request_key(self.cache_ns, ENDPOINT, blob, extra=extra),
                    priced=self._charge(piece.duration_s, piece.size),
                )
            )
        return asks

    def row_cost(self, r: StepResult, price: Price) -> float | None:
        """Transcription is billed by the minute: the answer's duration (verbose_json), else unknown."""
        seconds = r.values.get(f"{self.name}__duration")
        return price.audio(seconds) if isinstance(seconds, int | float) else None

    def _charge(self, seconds: float | None, size: int) -> Charge | None:
        """Transcription is billed by the minute: the file's length, or (unknown) the longest it can be."""
        if self.charge is None:
            return None
        return replace(self.charge, audio_s=seconds if seconds is not None else size / _ASSUMED_BYTES_PER_S)

    def _timeout(self, seconds: float | None, size: int) -> float:
        if self.spec.timeout_s is not None:
            return self.spec.timeout_s
        if seconds is None:
            seconds = size / _ASSUMED_BYTES_PER_S
        return TIMEOUT_BASE_S + TIMEOUT_PER_AUDIO_MIN_S * seconds / 60 + TIMEOUT_PER_MB_S * size / 1e6

    def _request(
        self, path: Path, ext: str, name: str, fields: dict[str, Any], seconds: float | None, size: int
    ) -> HttpRequest:
        content_type = audiofiles.CONTENT_TYPES.get(ext, "application/octet-stream")
        body = Multipart(_form_fields(fields), (FilePart(path, name, content_type),))
        # Longest audio first: the run ends when its last request does, so that one should be short.
        priority = seconds if seconds is not None else size / _ASSUMED_BYTES_PER_S
        timeout = self._timeout(seconds, size)
        return HttpRequest(ENDPOINT, multipart=body, timeout_s=timeout, priority=priority)

    def _ok(self, answer: Answer, seconds: float | None, *, attempts: int, cached: bool) -> StepResult:
        u = answer.usage
        return StepResult(
            "ok",
            self._values(answer),
            attempts=attempts,
            prompt_tokens=u.prompt_tokens if u else None,
            completion_tokens=u.completion_tokens if u else None,
            cached=cached,
            metrics={"audio_s": seconds, "audio_rows": 1} if seconds is not None else {},
        )


async def _or_error(work: Awaitable[T]) -> T | AudioFileError:
    """What `work` gives, or the AudioFileError it raised (the row then fails, naming the problem)."""
    try:
        return await work
    except AudioFileError as exc:
        return exc


def _audio_error(exc: AudioFileError) -> Done:
    return Done(StepResult("error", error=f"audio: {exc}"))
