"""Local audio files: checks, content hash, duration probe, and silence-aware splitting with ffmpeg."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import functools
import hashlib
import re
import shutil
import stat
import wave
from dataclasses import dataclass
from pathlib import Path

from .errors import PipelineError

# What /audio/transcriptions accepts (API_FACTS.md); anything else fails its row before any request.
AUDIO_EXTENSIONS = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "ogg", "wav", "webm")
CONTENT_TYPES = {
    "flac": "audio/flac",
    "m4a": "audio/mp4",
    "mp3": "audio/mpeg",
    "mp4": "audio/mp4",
    "mpeg": "audio/mpeg",
    "mpga": "audio/mpeg",
    "ogg": "audio/ogg",
    "wav": "audio/wav",
    "webm": "audio/webm",
}

# Pieces of a split file are re-encoded to mono 16 kHz MP3 at a constant 64 kbit/s: what the models
# resample to anyway, so nothing they use is lost, and constant-rate bytes make a piece's size a known
# function of its length (8000 bytes per second plus a frame header) - every piece fits by construction.
PIECE_EXT = "mp3"
PIECE_BITRATE = 64_000
PIECE_BYTES_PER_S = PIECE_BITRATE / 8
PIECE_SIZE_MARGIN = 0.9  # aim below the limit: frames end up to 36 ms past a cut, plus headers
PIECE_HEADER_BYTES = 4096
MIN_PIECE_S = 1.0  # no sliver at the end (servers refuse audio under 0.1 s)
MIN_MAX_PIECE_S = 5.0
# Silence: below -35 dBFS for at least 0.3 s. Cuts go at the middle of the latest silence in the second
# half of the allowed length; with no silence there, the piece is cut at its maximum length.
SILENCE_NOISE_DB = -35
SILENCE_MIN_S = 0.3

_HASH_CHUNK = 1 << 20


class AudioFileError(PipelineError):
    """This row's audio file cannot be transcribed (missing, empty, unsupported, unreadable): fail the row."""


@dataclass(frozen=True)
class AudioFile:
    """A checked, hashed audio file."""

    path: Path
    size: int
    sha256: str
    ext: str


@dataclass(frozen=True)
class Piece:
    """One upload-sized piece of a split file: where it starts in the original and how long it is."""

    path: Path
    offset_s: float
    duration_s: float
    size: int


def extension(path: Path) -> str:
    return path.suffix.lower().lstrip(".")


def inspect_file(path: Path) -> AudioFile:
    """Check that `path` is a non-empty, readable file with a supported extension; hash it streaming.

    Blocking (it reads the whole file): call it in a thread.
    """
    ext = extension(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise AudioFileError(f"audio file not found: {path}") from None
    except OSError as exc:
        raise AudioFileError(f"cannot read audio file {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise AudioFileError(f"{path} is a folder, not an audio file")
    if ext not in AUDIO_EXTENSIONS:
        shown = f"`.{ext}`" if ext else "no extension"
        raise AudioFileError(f"unsupported audio format ({shown}) for {path}; supported: {', '.join(AUDIO_EXTENSIONS)}")
    if st.st_size == 0:
        raise AudioFileError(f"audio file is empty (0 bytes): {path}")
    h = hashlib.sha256()
    size = 0
    try:
        with path.open("rb") as f:
            while chunk := f.read(_HASH_CHUNK):
                h.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise AudioFileError(f"cannot read audio file {path}: {exc.strerror or exc}") from None
    if size == 0:
        raise AudioFileError(f"audio file is empty (0 bytes): {path}")
    return AudioFile(path, size, h.hexdigest(), ext)


@functools.cache
def ffmpeg_exe() -> str | None:
    """The ffmpeg binary shipped by imageio-ffmpeg, else one on PATH, else None."""
    try:
        import imageio_ffmpeg

        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except Exception:  # not installed, or no binary for this platform
        return shutil.which("ffmpeg")


async def run_ffmpeg(args: list[str], timeout_s: float) -> tuple[int, str]:
    """Run ffmpeg without blocking the loop; (exit code, stderr). Killed on timeout or cancellation."""
    exe = ffmpeg_exe()
    if exe is None:
        raise AudioFileError("ffmpeg is not available (install the imageio-ffmpeg package)")
    proc = await asyncio.create_subprocess_exec(
        exe,
        "-hide_banner",
        "-nostdin",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout_s):
            _, err = await proc.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await asyncio.shield(proc.wait())
        raise
    return proc.returncode or 0, err.decode("utf-8", "replace")


_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
_TIME = re.compile(r"time=(\d+):(\d+):(\d+(?:\.\d+)?)")


def _hms(m: tuple[str, str, str]) -> float:
    return int(m[0]) * 3600 + int(m[1]) * 60 + float(m[2])


def _ffmpeg_reason(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "Error opening input" in ln or "Invalid data" in ln or "matches no streams" in ln:
            return re.sub(r"^\[[^]]*\]\s*", "", ln)
    return re.sub(r"^\[[^]]*\]\s*", "", lines[-1]) if lines else "no output"


def wav_duration(path: Path) -> float | None:
    """Length of a PCM WAV from its header (no ffmpeg needed), or None when `wave` cannot read it."""
    try:
        with wave.open(str(path)) as w:
            rate = w.getframerate()
            return w.getnframes() / rate if rate else None
    except (wave.Error, EOFError, OSError, ValueError):
        return None


async def probe_duration(path: Path, ext: str) -> float | None:
    """Length of the audio in seconds; AudioFileError when it holds no readable audio.

    WAV headers are read directly; other formats ask ffmpeg (the container's header, or a full decode
    when the header has no duration). None when ffmpeg is not installed (the server then decides).
    """
    if ext == "wav":
        seconds = await asyncio.to_thread(wav_duration, path)
        if seconds is not None and seconds > 0:
            return seconds
    if ffmpeg_exe() is None:
        return None
    _, err = await run_ffmpeg(["-i", str(path)], timeout_s=120)
    if "Input #0" not in err:
        raise AudioFileError(f"cannot read audio from {path}: {_ffmpeg_reason(err)}")
    if not re.search(r"Stream #\S+.*: Audio:", err):
        raise AudioFileError(f"{path} has no audio stream")
    m = _DURATION.search(err)
    if m:
        seconds = _hms((m.group(1), m.group(2), m.group(3)))
    else:  # e.g. live-recorded WebM: no duration in the header, decode it all
        rc, err = await run_ffmpeg(["-i", str(path), "-map", "0:a:0", "-f", "null", "-"], timeout_s=1800)
        times = _TIME.findall(err)
        if rc != 0 or not times:
            raise AudioFileError(f"cannot decode audio from {path}: {_ffmpeg_reason(err)}")
        seconds = _hms(times[-1])
    if seconds <= 0:
        raise AudioFileError(f"{path} holds no audio (duration 0)")
    return seconds


def parse_silences(stderr: str, duration: float) -> list[tuple[float, float]]:
    """(start, end) of each silence silencedetect reported; one still open at the end closes there."""
    out: list[tuple[float, float]] = []
    start: float | None = None
    for m in re.finditer(r"silence_(start|end): (-?\d+(?:\.\d+)?)", stderr):
        t = max(0.0, float(m.group(2)))
        if m.group(1) == "start":
            start = t
        elif start is not None:
            out.append((start, t))
            start = None
    if start is not None and start < duration:
        out.append((start, duration))
    return out


def plan_cuts(
    duration: float, silences: list[tuple[float, float]], max_piece_s: float, min_piece_s: float = MIN_PIECE_S
) -> list[float]:
    """Cut times so that every piece is at most `max_piece_s` long and the last at least `min_piece_s`.

    Each cut goes in the middle of the latest silence (its part inside the allowed range) in the second
    half of the piece's allowed length; without one, at the longest allowed point.
    """
    if max_piece_s < 2 * min_piece_s:
        raise ValueError(f"max_piece_s {max_piece_s} must be at least twice min_piece_s {min_piece_s}")
    cuts: list[float] = []
    pos = 0.0
    while duration - pos > max_piece_s:
        hi = min(pos + max_piece_s, duration - min_piece_s)
        lo = pos + max_piece_s / 2
        best: float | None = None
        for s, e in silences:
            a, b = max(s, lo), min(e, hi)
            if a <= b:
                mid = (a + b) / 2
                best = mid if best is None else max(best, mid)
        cut = round(best if best is not None else hi, 3)
        cuts.append(cut)
        pos = cut
    return cuts


def max_piece_seconds(max_bytes: int, max_duration_s: float | None) -> float:
    """The longest piece that fits `max_bytes` at the piece bitrate (and `max_duration_s`)."""
    seconds = (max_bytes * PIECE_SIZE_MARGIN - PIECE_HEADER_BYTES) / PIECE_BYTES_PER_S
    if max_duration_s is not None:
        seconds = min(seconds, max_duration_s * 0.98)
    return seconds


async def split(src: Path, out_dir: Path, *, max_bytes: int, max_duration_s: float | None) -> list[Piece]:
    """Cut `src` at silences into MP3 pieces that each fit `max_bytes` (and `max_duration_s`).

    Two ffmpeg passes, each a subprocess: a decode that reports silences and the exact length, then
    one encode that writes every piece (segment muxer) and lists where each starts. A recording that
    fits once re-encoded becomes a single piece.
    """
    max_piece_s = max_piece_seconds(max_bytes, max_duration_s)
    if max_piece_s < MIN_MAX_PIECE_S:
        raise AudioFileError(
            f"max_upload_mb is too small to split {src}: pieces would be under "
            f"{MIN_MAX_PIECE_S:g} s at {PIECE_BITRATE // 1000} kbit/s"
        )
    rc, err = await run_ffmpeg(
        [
            "-i",
            str(src),
            "-map",
            "0:a:0",
            "-af",
            f"silencedetect=noise={SILENCE_NOISE_DB}dB:duration={SILENCE_MIN_S}",
            "-f",
            "null",
            "-",
        ],
        timeout_s=3600,
    )
    times = _TIME.findall(err)
    if rc != 0 or not times:
        raise AudioFileError(f"cannot decode audio from {src} to split it: {_ffmpeg_reason(err)}")
    duration = _hms(times[-1])
    cuts = plan_cuts(duration, parse_silences(err, duration), max_piece_s)
    listing = out_dir / "pieces.csv"
    args = [
        "-i",
        str(src),
        "-map",
        "0:a:0",
        "-ac",
        "1",
        "-ar",
        "16000",
        # no bit reservoir: every frame decodes on its own, so each piece starts clean
        "-c:a",
        "libmp3lame",
        "-b:a",
        str(PIECE_BITRATE),
        "-reservoir",
        "0",
        "-map_metadata",
        "-1",
        "-fflags",
        "+bitexact",
        "-flags:a",
        "+bitexact",
        "-f",
        "segment",
        "-reset_timestamps",
        "1",
        "-segment_list",
        str(listing),
        "-segment_list_type",
        "csv",
    ]
    if cuts:
        args += ["-segment_times", ",".join(f"{c:.3f}" for c in cuts)]
    else:
        args += ["-segment_time", f"{duration + 3600:.0f}"]  # one piece: the whole file re-encoded
    args.append(str(out_dir / f"piece%04d.{PIECE_EXT}"))
    rc, err = await run_ffmpeg(args, timeout_s=3600 + duration / 5)
    if rc != 0 or not listing.exists():
        raise AudioFileError(f"ffmpeg could not split {src}: {_ffmpeg_reason(err)}")
    pieces: list[Piece] = []
    with listing.open(newline="") as f:
        for name, start, end in csv.reader(f):
            p = out_dir / name
            pieces.append(Piece(p, float(start), round(float(end) - float(start), 6), p.stat().st_size))
    if not pieces:
        raise AudioFileError(f"ffmpeg wrote no pieces for {src}")
    too_big = [p for p in pieces if p.size > max_bytes]
    if too_big:
        raise AudioFileError(
            f"could not split {src} under {max_bytes:,} bytes: piece {too_big[0].path.name} has {too_big[0].size:,}"
        )
    return pieces
