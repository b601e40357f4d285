"""Structured labeling end to end against the simulator: typed columns, re-asks, invalid rows, labels,
tools, streams, multi-step jobs; asserting on what the simulator recorded and on the Parquet file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import JobError
from pipeline.plan import build_plan
from pipeline.sim import FaultRule
from pipeline.sim.answers import sentiment_label

from .conftest import SIM_KEY_ENV, output, reviews, run_job

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "stars": {"type": "integer", "minimum": 1, "maximum": 5},
        "spam": {"type": "boolean"},
        "topics": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        "aspect": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "polarity": {"type": "string", "enum": ["positive", "negative", "neutral"]},
            },
            "required": ["name", "polarity"],
            "additionalProperties": False,
        },
        "note": {"type": ["string", "null"]},
    },
    "required": ["sentiment", "score", "stars", "spam", "topics", "aspect", "note"],
    "additionalProperties": False,
}
DTYPES = {
    "review_sentiment": pl.String,
    "review_score": pl.Float64,
    "review_stars": pl.Int64,
    "review_spam": pl.Boolean,
    "review_topics": pl.List(pl.String),
    "review_aspect": pl.Struct({"name": pl.String, "polarity": pl.String}),
    "review_note": pl.String,
    "review__raw": pl.String,
    "review__repairs": pl.Int32,
    "review__status": pl.String,
}
LABELS = ["positive", "negative", "neutral"]
SYSTEM = {"role": "system", "content": "Give the sentiment of the review."}
USER = {"role": "user", "content": "Review: {{ row.text }}"}


def schema_step(**over: Any) -> dict[str, Any]:
    return {
        "name": "review",
        "messages": [SYSTEM, USER],
        "params": {"temperature": 0, "max_tokens": 300},
        "response_schema": SCHEMA,
        **over,
    }


def job_file(
    tmp_path: Path,
    url: str,
    steps: list[dict[str, Any]],
    *,
    rows: int = 12,
    data: pl.DataFrame | None = None,
    **over: Any,
) -> Path:
    (data if data is not None else reviews(rows)).write_csv(tmp_path / "reviews.csv")
    job = {
        "version": 1,
        "name": "label-test",
        "providers": {
            "local": {
                "base_url": url,
                "api_key_env": SIM_KEY_ENV,
                "timeout_s": 10,
                "limits": {"rpm": 100000, "tpm": 100000000, "concurrency": 20},
            }
        },
        "input": {"path": str(tmp_path / "reviews.csv"), "id": "review_id"},
        "steps": [{"kind": "chat", "provider": "local", "model": "gpt-4o-mini", **s} for s in steps],
        "output": {"path": str(tmp_path / "out" / "labeled.parquet")},
        "cache": {"dir": str(tmp_path / "cache")},
        "retry": {"max_attempts": 4, "backoff_base_s": 0.01, "backoff_cap_s": 0.05},
        **over,
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, allow_unicode=True, sort_keys=False))
    return path


def chat(sim: Any) -> list[Any]:
    return [r for r in sim.records if r.path.endswith("/chat/completions")]


def for_row(sim: Any, n: int) -> list[Any]:
    """The chat requests of input row `n` (its text ends with "(#n)"), in order."""
    return [r for r in chat(sim) if f"(#{n})" in json.dumps(r.body["messages"][1], ensure_ascii=False)]


def row(df: pl.DataFrame, n: int) -> dict[str, Any]:
    return df.filter(pl.col("review_id") == f"r{n:05d}").row(0, named=True)


# ----- typed columns


def test_valid_answers_land_typed_in_their_columns(tmp_path: Path, sim: Any) -> None:
    job = job_file(tmp_path, sim.url, [schema_step(keep_raw=True)])
    summary = run_job(job)
    df = pl.read_parquet(tmp_path / "out" / "labeled.parquet")  # opens in polars with the schema's types
    for col, dtype in DTYPES.items():
        assert df.schema[col] == dtype, (col, df.schema[col])
    assert summary.failed_rows == 0 and set(df["review__status"]) == {"ok"}
    assert (df["review__repairs"] == 0).all()
    texts = reviews(12)["text"].to_list()
    for i, r in enumerate(df.iter_rows(named=True)):
        raw = json.loads(r["review__raw"])  # the answer as sent, kept because keep_raw: true
        assert r["review_sentiment"] == raw["sentiment"] == sentiment_label("Review: " + texts[i])
        assert r["review_stars"] == raw["stars"] and 1 <= r["review_stars"] <= 5
        assert r["review_score"] == pytest.approx(raw["score"])
        assert r["review_topics"] == raw["topics"] and r["review_aspect"] == raw["aspect"]
    body = chat(sim)[0].body
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "review", "schema": SCHEMA, "strict": True},
    }


def test_struct_layout_and_collisions(tmp_path: Path, sim: Any) -> None:
    later = {"name": "echo", "messages": [{"role": "user", "content": "Echo {{ row.review.sentiment }}"}]}
    job = job_file(tmp_path, sim.url, [schema_step(output_layout="struct"), later], rows=4)
    run_job(job)
    df = output(tmp_path)
    assert isinstance(df.schema["review"], pl.Struct)
    assert df.schema["review"].fields[2] == pl.Field("stars", pl.Int64)
    sentiments = df["review"].struct.field("sentiment").to_list()
    assert set(sentiments) <= set(LABELS) and set(df["echo__status"]) == {"ok"}
    echoed = [r.body["messages"][0]["content"] for r in chat(sim) if r.body["messages"][0]["role"] == "user"]
    assert set(echoed) == {f"Echo {s}" for s in sentiments}  # a later step reads a struct field (the same
    # request twice is asked once: the cache answers the second)
    # a field column that would overwrite an input column is refused before any request
    data = reviews(3).with_columns(pl.lit("x").alias("review_note"))
    n = len(sim.records)
    job = job_file(tmp_path, sim.url, [schema_step()], data=data)
    with pytest.raises(JobError, match=r"step `review` writes column\(s\) `review_note`, which already exist"):
        build_plan(job)
    assert len(sim.records) == n


# ----- invalid answers: re-asked, or kept as invalid


def test_invalid_answer_is_reasked_with_the_validators_message(tmp_path: Path, sim: Any) -> None:
    sim.set_faults(
        [
            FaultRule("schema_violation", when_contains="(#3)", times=1),
            FaultRule("invalid_json_answer", when_contains="(#5)", times=1),
        ]
    )
    job = job_file(tmp_path, sim.url, [schema_step()])
    summary = run_job(job)
    df = output(tmp_path)
    assert set(df["review__status"]) == {"ok"} and summary.stats.repairs == 2
    for n, expected in ((3, "'sentiment' is a required property"), (5, "Your answer is not valid JSON")):
        first, second = for_row(sim, n)
        assert second.body["messages"][:2] == first.body["messages"]
        answer, complaint = second.body["messages"][2:]
        assert answer["role"] == "assistant" and answer["content"]  # its own answer, as it was
        assert complaint["role"] == "user" and expected in complaint["content"]
        assert "Reply with only the corrected JSON object" in complaint["content"]
        r = row(df, n)
        assert r["review__repairs"] == 1 and r["review__attempts"] == 2 and r["review_sentiment"] in LABELS
        assert r["review__raw"] is None  # only invalid rows keep the raw answer by default
    # every answer of the dialogue is cached: starting over sends nothing and gives the same rows
    n_sent = len(sim.records)
    again = run_job(job, fresh=True)
    assert len(sim.records) == n_sent and again.stats.repairs == 2
    assert (
        output(tmp_path)
        .drop("review__cached", "review__attempts")
        .equals(df.drop("review__cached", "review__attempts"))
    )


def test_answer_that_stays_invalid_ends_invalid_with_raw_kept(tmp_path: Path, sim: Any) -> None:
    sim.set_faults([FaultRule("schema_violation", when_contains="(#4)")])
    job = job_file(tmp_path, sim.url, [schema_step()], rows=8)
    res = CliRunner().invoke(app, ["run", str(job)], catch_exceptions=False)
    assert res.exit_code == 1, res.output
    assert "re-asks 2" in " ".join(res.output.split())
    df = output(tmp_path)
    bad = row(df, 4)
    assert bad["review__status"] == "invalid" and bad["review__repairs"] == 2
    assert bad["review_sentiment"] is None and bad["review_stars"] is None
    raw = json.loads(bad["review__raw"])  # the last answer, as the model gave it
    assert "sentiment" not in raw and set(raw) == set(SCHEMA["required"]) - {"sentiment"}
    assert bad["review__error"].startswith("schema violation: at /: 'sentiment' is a required property")
    assert bad["review__error"].endswith("(after 2 re-asks)")
    assert len(for_row(sim, 4)) == 3
    res = CliRunner().invoke(app, ["inspect", str(tmp_path / "out" / "labeled.parquet")], catch_exceptions=False)
    assert "'r00004': invalid: schema violation" in res.output and f"answer: {bad['review__raw'][:40]}" in res.output
    assert set(df.filter(pl.col("review_id") != "r00004")["review__status"]) == {"ok"}
    # the invalid answers are not kept for replay: --retry-failed asks again
    sim.set_faults([])
    res = CliRunner().invoke(app, ["run", str(job), "--retry-failed", "--quiet"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert len(for_row(sim, 4)) == 4
    assert row(output(tmp_path), 4)["review__status"] == "ok"


def test_refusal_and_truncated_answers(tmp_path: Path, sim: Any) -> None:
    sim.set_faults([FaultRule("refusal", when_contains="(#1)", times=1)])
    job = job_file(tmp_path, sim.url, [schema_step(repair_attempts=1)], rows=3)
    run_job(job)
    first, second = for_row(sim, 1)
    assert first.fault == "refusal" and second.body["messages"][2] == {
        "role": "assistant",
        "content": "I can't help with that.",
    }
    assert row(output(tmp_path), 1)["review__status"] == "ok"
    # max_tokens too small for the JSON: finish_reason length, re-asked, still cut: invalid
    job = job_file(
        tmp_path,
        sim.url,
        [schema_step(params={"max_tokens": 8}, repair_attempts=1)],
        rows=2,
        output={"path": str(tmp_path / "out" / "labeled.parquet")},
    )
    summary = run_job(job, fresh=True)
    df = output(tmp_path)
    assert summary.failed_rows == 2 and set(df["review__status"]) == {"invalid"}
    assert set(df["review__finish_reason"]) == {"length"}
    assert df["review__error"][0].startswith("cut off at the token limit (finish_reason: length)")
    assert "cut off at the token limit" in chat(sim)[-1].body["messages"][-1]["content"]


# ----- labels


def test_labels_normalise_case_and_whitespace(tmp_path: Path, sim: Any) -> None:
    sim.set_faults([FaultRule("label_variant")])  # every answer: " Positive\n", "NEGATIVE", "  neutral  " ...
    step = {
        "name": "sentiment",
        "messages": [SYSTEM, USER],
        "params": {"max_tokens": 20},
        "labels": LABELS,
        "keep_raw": True,
    }
    job = job_file(tmp_path, sim.url, [step], rows=16)
    summary = run_job(job)
    df = output(tmp_path)
    assert df.schema["sentiment"] == pl.String and set(df["sentiment__status"]) == {"ok"}
    assert summary.stats.repairs == 0 and len(chat(sim)) == 16  # folded, not re-asked
    assert all(r.fault == "label_variant" for r in chat(sim))
    assert chat(sim)[0].body["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"] == LABELS
    written = [json.loads(raw)["label"] for raw in df["sentiment__raw"]]
    assert all(
        w != label and w.strip().strip(".").lower() == label for w, label in zip(written, df["sentiment"], strict=True)
    )
    assert {w != w.strip() for w in written} == {True, False} and any(w.isupper() for w in written)
    assert df["sentiment"].to_list() == [sentiment_label("Review: " + t) for t in df["text"]]


def test_bare_labels_from_a_server_without_structured_outputs(tmp_path: Path, sim_factory: Any) -> None:
    sim = sim_factory(structured_outputs=False, faults=[{"kind": "label_variant", "every": 2}])
    step = {"name": "sentiment", "messages": [SYSTEM, USER], "params": {"max_tokens": 20}, "labels": LABELS}
    job = job_file(tmp_path, sim.url, [step], rows=12)
    run_job(job)
    df = output(tmp_path)
    assert set(df["sentiment__status"]) == {"ok"} and (df["sentiment__repairs"] == 0).all()
    assert df["sentiment"].to_list() == [sentiment_label("Review: " + t) for t in df["text"]]


def test_label_confidence_and_n_choices(tmp_path: Path, sim: Any) -> None:
    step = {
        "name": "sentiment",
        "messages": [SYSTEM, USER],
        "labels": LABELS,
        "params": {"max_tokens": 20, "n": 3, "logprobs": True, "top_logprobs": 2},
    }
    job = job_file(tmp_path, sim.url, [step], rows=4)
    run_job(job)
    df = output(tmp_path)
    assert df.schema["sentiment"] == pl.List(pl.String)
    assert df.schema["sentiment__confidence"] == pl.List(pl.Float64)
    assert df.schema["sentiment__finish_reason"] == pl.List(pl.String)
    tok = pl.Struct({"token": pl.String, "logprob": pl.Float64})
    assert df.schema["sentiment__logprobs"] == pl.List(
        pl.List(pl.Struct({**dict(tok.to_schema()), "top_logprobs": pl.List(tok)}))
    )
    for r in df.iter_rows(named=True):
        assert len(r["sentiment"]) == 3 and set(r["sentiment"]) <= set(LABELS)
        assert all(0 < p <= 1 for p in r["sentiment__confidence"])
        assert all(len(t["top_logprobs"]) == 2 for t in r["sentiment__logprobs"][0])


# ----- tools


def test_tool_arguments_become_typed_columns(tmp_path: Path, sim: Any) -> None:
    sim.set_faults([FaultRule("schema_violation", when_contains="(#2)", times=1)])
    step = {
        "name": "review",
        "messages": [SYSTEM, USER],
        "params": {"max_tokens": 300},
        "tools": [{"type": "function", "function": {"name": "save_review", "parameters": SCHEMA}}],
    }
    job = job_file(tmp_path, sim.url, [step], rows=6)
    run_job(job)
    df = output(tmp_path)
    for col, dtype in DTYPES.items():
        assert df.schema[col] == dtype, col
    assert set(df["review__status"]) == {"ok"} and set(df["review__finish_reason"]) == {"tool_calls"}
    first = chat(sim)[0].body
    assert first["tool_choice"] == {"type": "function", "function": {"name": "save_review"}}
    assert first["tools"][0]["function"]["strict"] is True and "response_format" not in first
    call, retry = for_row(sim, 2)
    echo, reply = retry.body["messages"][2:]
    assert echo["role"] == "assistant" and echo["tool_calls"][0]["function"]["name"] == "save_review"
    assert reply["role"] == "tool" and reply["tool_call_id"] == echo["tool_calls"][0]["id"]
    assert "'sentiment' is a required property" in reply["content"]
    assert row(df, 2)["review__repairs"] == 1


# ----- streams


def test_truncated_stream_is_retried_and_the_answer_cached(tmp_path: Path, sim: Any) -> None:
    sim.set_faults([FaultRule("truncated_stream", every=2, times=4)])
    job = job_file(tmp_path, sim.url, [schema_step(params={"max_tokens": 300, "stream": True})], rows=8)
    summary = run_job(job)
    df = output(tmp_path)
    assert set(df["review__status"]) == {"ok"}, df["review__error"].to_list()
    assert summary.stats.retries == 4 and df["review__attempts"].max() == 2
    assert all(r.body["stream"] is True and r.body["stream_options"] == {"include_usage": True} for r in chat(sim))
    assert (df["review__prompt_tokens"] > 0).all() and not df["review__tokens_estimated"].any()
    n = len(sim.records)
    run_job(job, fresh=True)  # the assembled answers were cached as plain completions
    assert len(sim.records) == n
    assert output(tmp_path)["review_stars"].to_list() == df["review_stars"].to_list()


# ----- multi-step jobs


def test_two_step_job_skips_step_2_where_step_1_failed(tmp_path: Path, sim: Any) -> None:
    sim.set_faults(
        [
            FaultRule("status", status=400, error_type="invalid_request_error", when_contains="(#2)"),
            FaultRule("schema_violation", when_contains="(#5)"),
        ]
    )
    first = {
        "name": "extract",
        "messages": [USER],
        "params": {"max_tokens": 200},
        "repair_attempts": 1,
        "response_schema": {
            "type": "object",
            "properties": {"summary": {"type": "string"}, "sentiment": {"type": "string", "enum": LABELS}},
            "required": ["summary", "sentiment"],
            "additionalProperties": False,
        },
    }
    second = {
        "name": "topic",
        "labels": ["quality", "price", "other"],
        "params": {"max_tokens": 20},
        "messages": [{"role": "user", "content": "Classify: {{ row.extract_summary }}"}],
    }
    job = job_file(tmp_path, sim.url, [first, second], rows=8)
    summary = run_job(job)
    df = output(tmp_path)
    r2, r5 = row(df, 2), row(df, 5)
    assert (r2["extract__status"], r5["extract__status"]) == ("error", "invalid")
    assert (r2["topic__status"], r5["topic__status"]) == ("skipped", "skipped")
    assert r2["topic__error"].startswith("step `extract` did not succeed (error: HTTP 400")
    assert r5["topic__error"].startswith("step `extract` did not succeed (invalid: schema violation")
    ok = df.filter(~pl.col("review_id").is_in(["r00002", "r00005"]))
    assert set(ok["topic__status"]) == {"ok"} and set(ok["topic"]) <= {"quality", "price", "other"}
    sent = [r.body["messages"][0]["content"] for r in chat(sim) if r.body["messages"][0]["content"].startswith("Cl")]
    assert sorted(sent) == sorted("Classify: " + s for s in ok["extract_summary"])
    assert summary.failed_rows == 2 and summary.status_counts["topic"]["skipped"] == 2


def test_later_steps_see_field_columns_and_validate_checks_them(tmp_path: Path, sim: Any) -> None:
    second = {
        "name": "topic",
        "labels": ["a", "b"],
        "messages": [{"role": "user", "content": "{{ row.review_sentimnt }}"}],
    }
    job = job_file(tmp_path, sim.url, [schema_step(), second], rows=2)
    res = CliRunner().invoke(app, ["validate", str(job)], catch_exceptions=False)
    assert res.exit_code == 2
    assert "unknown column `review_sentimnt`" in res.output and "did you mean `review_sentiment`" in res.output
    assert sim.records == []


# ----- strict mode


LOOSE = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": LABELS},
        "reason": {"type": "string", "minLength": 3},
    },
    "required": ["sentiment"],
}


def test_validate_names_what_strict_mode_cannot_take(tmp_path: Path, sim: Any) -> None:
    job = job_file(tmp_path, sim.url, [schema_step(response_schema=LOOSE)], rows=2)
    res = CliRunner().invoke(app, ["validate", str(job)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "sent with strict: false" in text
    assert "/properties/reason: `minLength`: not supported in strict mode" in text
    assert '/: `additionalProperties`: every object needs "additionalProperties": false' in text
    assert "'reason' not in `required`" in text
    assert [r.path for r in sim.records] == ["/v1/models"]  # no request sent, one GET checks the model
    # the run sends it with strict: false (the simulator, like OpenAI, refuses it strict) and still checks it
    sim.set_faults([FaultRule("schema_violation", when_contains="(#1)", times=1)])
    run_job(job)
    df = output(tmp_path)
    assert set(df["review__status"]) == {"ok"} and row(df, 1)["review__repairs"] == 1
    assert all(r.body["response_format"]["json_schema"]["strict"] is False for r in chat(sim))
    # strict: true on such a schema is a job error naming the keyword
    job = job_file(tmp_path, sim.url, [schema_step(response_schema=LOOSE, strict=True)], rows=2)
    res = CliRunner().invoke(app, ["validate", str(job)], catch_exceptions=False)
    assert res.exit_code == 2 and "minLength" in res.output and "strict: true, but" in res.output


def test_tool_call_streamed_and_a_failed_reask_keeps_the_answer(tmp_path: Path, sim: Any) -> None:
    sim.set_faults(
        [
            # every re-ask (a body with the model's answer in it) is refused, as a too-long context would be
            FaultRule("status", status=400, error_type="invalid_request_error", when_contains='"role":"tool"'),
            FaultRule("schema_violation", when_contains="(#1)"),
        ]
    )
    step = {
        "name": "review",
        "messages": [SYSTEM, USER],
        "params": {"max_tokens": 300, "stream": True},
        "tools": [{"type": "function", "function": {"name": "save_review", "parameters": SCHEMA}}],
    }
    job = job_file(tmp_path, sim.url, [step], rows=4)
    summary = run_job(job)
    df = output(tmp_path)
    assert df.schema["review_aspect"] == DTYPES["review_aspect"]
    ok = df.filter(pl.col("review_id") != "r00001")
    assert set(ok["review__status"]) == {"ok"} and ok["review_stars"].null_count() == 0
    bad = row(df, 1)
    assert bad["review__status"] == "error" and bad["review__error"].startswith("re-ask 1: HTTP 400")
    assert bad["review__repairs"] == 1 and "sentiment" not in json.loads(bad["review__raw"])
    assert summary.failed_rows == 1


@pytest.mark.parametrize("name", ["label_reviews", "extract_entities", "summarize_classify"])
def test_sample_jobs_run_with_every_row_ok(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    root = Path(__file__).resolve().parents[1]
    for d in ("sample_data", "schemas"):
        (tmp_path / d).symlink_to(root / d)
    spec = yaml.safe_load((root / "jobs" / f"{name}.yaml").read_text())
    spec["input"]["limit"] = 30  # a trial of the sample, paths as written (relative to the working directory)
    spec["cache"] = {"dir": str(tmp_path / "cache")}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True))
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["run", "job.yaml", "--sim", "--sim-latency", "0", "--quiet"])
    assert res.exit_code == 0, res.output
    df = pl.read_parquet(tmp_path / spec["output"]["path"])
    assert df.height == 30
    for step in spec["steps"]:
        assert set(df[f"{step['name']}__status"]) == {"ok"}
