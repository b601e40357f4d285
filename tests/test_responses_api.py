"""`api: responses` on chat steps: the same dialogue sent to /v1/responses gives the same typed columns."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import diskcache
import polars as pl
import pytest
import yaml

from pipeline.errors import JobError
from pipeline.job.load import load_job
from pipeline.plan import build_plan
from pipeline.sim import FaultRule

from .conftest import SIM_KEY_ENV, output, run_job, take_over_logs, write_job

ROOT = Path(__file__).resolve().parents[1]


def label_job(tmp_path: Path, url: str, api: str, *, rows: int = 12, **step: Any) -> Path:
    """jobs/label_reviews.yaml's step against the simulator, with `api` (own output and cache)."""
    for name in ("sample_data", "schemas"):
        if not (tmp_path / name).exists():
            (tmp_path / name).symlink_to(ROOT / name)
    spec = yaml.safe_load((ROOT / "jobs" / "label_reviews.yaml").read_text())
    spec["providers"] = {
        "apiyi": {"base_url": url, "api_key_env": SIM_KEY_ENV, "limits": {"rpm": 100000, "concurrency": 20}}
    }
    spec["input"]["path"] = str(tmp_path / "sample_data" / "reviews.csv")
    spec["input"]["limit"] = rows
    spec["steps"][0]["response_schema"] = str(tmp_path / "schemas" / "sentiment.schema.json")
    spec["steps"][0]["api"] = api
    spec["steps"][0].update(step)
    spec["steps"][0] = {k: v for k, v in spec["steps"][0].items() if v is not None}
    spec["output"] = {"path": str(tmp_path / f"out_{api}.parquet")}
    spec["cache"] = {"dir": str(tmp_path / f"cache_{api}")}
    spec["retry"] = {"max_attempts": 2, "backoff_base_s": 0.01, "backoff_cap_s": 0.02}
    job = tmp_path / f"job_{api}.yaml"
    job.write_text(yaml.safe_dump(spec, allow_unicode=True))
    return job


def sent(sim: Any, path: str) -> list[Any]:
    return [r for r in sim.records if r.path.endswith(path)]


def test_responses_and_chat_give_the_same_typed_columns(tmp_path: Path, sim: Any) -> None:
    run_job(label_job(tmp_path, sim.url, "chat"))
    chat_calls = len(sent(sim, "/chat/completions"))
    summary = run_job(label_job(tmp_path, sim.url, "responses"))
    assert len(sent(sim, "/chat/completions")) == chat_calls, "api: responses sends nothing to chat"
    answered = sent(sim, "/responses")
    assert len(answered) == summary.stats.requests >= 12
    chat = pl.read_parquet(tmp_path / "out_chat.parquet")
    resp = pl.read_parquet(tmp_path / "out_responses.parquet")
    values = [c for c in chat.columns if c.startswith("analysis_") and not c.startswith("analysis__")]
    values += ["analysis__finish_reason", "analysis__status"]
    assert len(values) >= 6
    assert resp.select(values).schema == chat.select(values).schema
    assert resp.select(values).equals(chat.select(values))
    assert set(resp["analysis__status"]) == {"ok"}
    assert resp["analysis_sentiment"].null_count() == 0
    # usage input_tokens/output_tokens land in the same accounting columns
    assert (resp["analysis__prompt_tokens"] > 0).all() and (resp["analysis__completion_tokens"] > 0).all()
    body = answered[0].body
    assert body is not None
    assert "messages" not in body and "max_tokens" not in body and body["max_output_tokens"] == 400
    assert body["text"]["format"]["type"] == "json_schema" and body["input"][0]["role"] == "system"

    again = run_job(label_job(tmp_path, sim.url, "responses"), fresh=True)
    assert again.stats.requests == 0 and len(sent(sim, "/responses")) == len(answered)
    assert pl.read_parquet(tmp_path / "out_responses.parquet").select(values).equals(resp.select(values))


def test_failures_stay_per_row(tmp_path: Path, sim: Any) -> None:
    df = pl.read_csv(ROOT / "sample_data" / "reviews.csv").head(12)
    target = df.filter(pl.col("product") == df["product"][2])["review_id"].to_list()
    sim.set_faults(
        [
            FaultRule(
                kind="status",
                status=400,
                error_type="invalid_request_error",
                when_contains=f"Product: {df['product'][2]}",
            )
        ]
    )
    summary = run_job(label_job(tmp_path, sim.url, "responses"))
    out = pl.read_parquet(tmp_path / "out_responses.parquet")
    bad = out.filter(pl.col("review_id").is_in(target))
    assert set(bad["analysis__status"]) == {"error"} and bad["analysis_sentiment"].null_count() == bad.height
    assert all("HTTP 400" in e for e in bad["analysis__error"])
    good = out.filter(~pl.col("review_id").is_in(target))
    assert good.height == 12 - len(target) and set(good["analysis__status"]) == {"ok"}
    assert summary.failed_rows == len(target)


def test_incomplete_is_finish_reason_length(tmp_path: Path, sim: Any) -> None:
    run_job(label_job(tmp_path, sim.url, "responses", rows=3, params={"max_tokens": 16}, repair_attempts=0))
    out = pl.read_parquet(tmp_path / "out_responses.parquet")
    assert set(out["analysis__finish_reason"]) == {"length"}
    assert set(out["analysis__status"]) == {"invalid"}
    assert all("length" in e or "max" in e or "cut" in e for e in out["analysis__error"]), out["analysis__error"]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"params": {"stop": ["x"]}}, "params stop are chat completions parameters"),
        ({"params": {"n": 2}}, "params n are chat completions parameters"),
        ({"structured_via": "tools"}, "text.format json_schema only"),
    ],
)
def test_chat_only_settings_are_refused_before_any_request(tmp_path: Path, extra: dict[str, Any], needle: str) -> None:
    job = label_job(tmp_path, "http://127.0.0.1:9", "responses", **extra)
    with pytest.raises(JobError) as exc:
        load_job(job)
    assert needle in str(exc.value) and "analysis" in str(exc.value)


def test_unknown_param_names_the_responses_api(tmp_path: Path) -> None:
    job = label_job(tmp_path, "http://127.0.0.1:9", "responses", params={"max_tokens": 400, "temprature": 0})
    with pytest.raises(JobError) as exc:
        build_plan(job)
    assert "not a parameter of the Responses API (/responses)" in str(exc.value)
    assert "temperature" in str(exc.value)


def test_invalid_answer_is_reasked_through_responses(tmp_path: Path, sim: Any) -> None:
    df = pl.read_csv(ROOT / "sample_data" / "reviews.csv").head(6)
    target = df["review_id"][1]
    fault = FaultRule("schema_violation", when_contains=f"Product: {df['product'][1]}\\n", times=1)
    for api in ("responses", "chat"):  # the same invalid first answer through both APIs
        sim.set_faults([fault])
        run_job(label_job(tmp_path, sim.url, api, rows=6))
    resp = pl.read_parquet(tmp_path / "out_responses.parquet")
    chat = pl.read_parquet(tmp_path / "out_chat.parquet")
    assert set(resp["analysis__status"]) == {"ok"}
    row = resp.filter(pl.col("review_id") == target).row(0, named=True)
    assert row["analysis__repairs"] == 1
    reask = [r.body for r in sent(sim, "/responses") if r.body and len(r.body["input"]) > 2]
    assert len(reask) == 1
    assert [i["role"] for i in reask[0]["input"]] == ["system", "user", "assistant", "user"]
    values = [c for c in chat.columns if c.startswith("analysis_") and not c.startswith("analysis__")]
    assert resp.select(values).equals(chat.select(values)), "the re-asked answer is the one chat gets"
    assert chat.filter(pl.col("review_id") == target)["analysis__repairs"].to_list() == [1]


def test_tools_are_sent_in_the_responses_shape(tmp_path: Path, sim: Any) -> None:
    (tmp_path / "sample_data").symlink_to(ROOT / "sample_data")
    (tmp_path / "schemas").symlink_to(ROOT / "schemas")
    outs = {}
    for api in ("chat", "responses"):
        spec = yaml.safe_load((ROOT / "jobs" / "extract_entities.yaml").read_text())
        spec["providers"] = {
            "apiyi": {"base_url": sim.url, "api_key_env": SIM_KEY_ENV, "limits": {"rpm": 100000, "concurrency": 20}}
        }
        spec["input"]["path"] = str(tmp_path / "sample_data" / "corpus.jsonl")
        spec["input"]["limit"] = 5
        step = spec["steps"][0]
        step["api"] = api
        step["tools"][0]["function"]["parameters"] = str(tmp_path / "schemas" / "entities.schema.json")
        spec["output"] = {"path": str(tmp_path / f"ent_{api}.parquet")}
        spec["cache"] = {"dir": str(tmp_path / f"cache_{api}")}
        job = tmp_path / f"ent_{api}.yaml"
        job.write_text(yaml.safe_dump(spec, allow_unicode=True))
        run_job(job)
        outs[api] = pl.read_parquet(tmp_path / f"ent_{api}.parquet")
    body = sent(sim, "/responses")[0].body
    assert body is not None
    assert body["tools"][0]["type"] == "function" and body["tools"][0]["name"] == "record_entities"
    assert body["tool_choice"] == {"type": "function", "name": "record_entities"}
    values = [c for c in outs["chat"].columns if c.startswith("entities_") and not c.startswith("entities__")]
    assert values and set(outs["responses"]["entities__status"]) == {"ok"}
    assert outs["responses"].select(values).equals(outs["chat"].select(values))
    assert set(outs["responses"]["entities__finish_reason"]) == set(outs["chat"]["entities__finish_reason"])


def test_streamed_events_are_assembled_cached_and_cuts_retried(tmp_path: Path, sim: Any) -> None:
    run_job(label_job(tmp_path, sim.url, "chat", rows=6))
    df = pl.read_csv(ROOT / "sample_data" / "reviews.csv").head(6)
    sim.set_faults([FaultRule("truncated_stream", when_contains=f"Product: {df['product'][2]}\\n", times=1)])
    params = {"temperature": 0, "max_tokens": 400, "stream": True}
    summary = run_job(label_job(tmp_path, sim.url, "responses", rows=6, params=params))
    streamed = [r for r in sent(sim, "/responses") if r.body and r.body.get("stream")]
    assert len(streamed) == summary.stats.requests == 7, "6 rows, one cut stream sent again"
    resp = pl.read_parquet(tmp_path / "out_responses.parquet")
    chat = pl.read_parquet(tmp_path / "out_chat.parquet")
    values = [c for c in chat.columns if c.startswith("analysis_") and not c.startswith("analysis__")]
    assert set(resp["analysis__status"]) == {"ok"}
    assert resp.select(values).equals(chat.select(values))
    assert (resp["analysis__completion_tokens"] > 0).all()
    # cached as the unstreamed Response: the same step without stream is answered from the cache
    params.pop("stream")
    again = run_job(label_job(tmp_path, sim.url, "responses", rows=6, params=params), fresh=True)
    assert again.stats.requests == 0 and again.stats.cache_hits == 6


@pytest.mark.slow
def test_kill_9_resume_resends_nothing_answered(tmp_path: Path, sim_factory: Any) -> None:
    sim = sim_factory(latency_s=0.05)
    job = write_job(tmp_path, sim.url, rows=300, limits="{rpm: 100000, concurrency: 8}")
    text = job.read_text()
    assert "    kind: chat\n" in text and "max_tokens: 5" in text
    job.write_text(
        text.replace("    kind: chat\n", "    kind: chat\n    api: responses\n").replace(
            "max_tokens: 5", "max_tokens: 16"
        )
    )
    env = {**os.environ, SIM_KEY_ENV: "test-key"}

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "run", str(job), "--quiet"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    proc = spawn()
    deadline = time.monotonic() + 30
    while sum(1 for r in sim.records if r.status == 200) < 40:
        assert time.monotonic() < deadline and proc.poll() is None, "the run did not get going"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    # the answers the client stored (read from its cache: Response ids "resp_sim" + a hash of the seq)
    take_over_logs(tmp_path / "cache")
    with diskcache.Cache(str(tmp_path / "cache")) as dc:
        stored = {json.loads(b)["id"] for b in (dc.get(k) for k in dc.iterkeys()) if isinstance(b, bytes)}
    by_id = {f"resp_sim{hashlib.sha256(str(r.seq).encode()).hexdigest()[:24]}": r for r in sim.records}
    assert stored <= by_id.keys()

    def review(r: Any) -> str:
        return str(r.body["input"][1]["content"])

    answered = {review(by_id[i]) for i in stored}
    assert 0 < len(answered) < 300
    before = len(sim.records)
    proc = spawn()
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr.decode()
    resent = [r for r in sim.records[before:] if review(r) in answered]
    assert resent == [], f"{len(resent)} answered requests were sent again"
    df = output(tmp_path)
    assert df.height == 300 and set(df["label__status"]) == {"ok"}
    assert {review(r) for r in sim.records if r.status == 200} == {f"Review: {t}" for t in df["text"]}


def test_labels_give_the_same_label_column(tmp_path: Path, sim: Any) -> None:
    step = {"response_schema": None, "labels": ["positive", "negative", "mixed"]}
    for api in ("chat", "responses"):
        run_job(label_job(tmp_path, sim.url, api, rows=8, **step))
    chat = pl.read_parquet(tmp_path / "out_chat.parquet")
    resp = pl.read_parquet(tmp_path / "out_responses.parquet")
    assert set(resp["analysis__status"]) == {"ok"} and resp["analysis"].null_count() == 0
    assert resp.select("analysis", "analysis__finish_reason").equals(chat.select("analysis", "analysis__finish_reason"))
