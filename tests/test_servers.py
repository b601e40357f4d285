"""The same job on servers that differ from OpenAI (issue 14), each played by the simulator: llama.cpp
refusing json_schema with a 500 and cutting streams, LiteLLM/vLLM/Ollama unknown-model errors, keyless
local servers, servers without a model list; and the built-in profiles of those servers."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import polars as pl
import pytest
import yaml

from pipeline.endpoints.negotiate import FORMS_FILE, refuses_form
from pipeline.endpoints.sse import ChatStream
from pipeline.errors import RowError, StreamCut, TransientError
from pipeline.job.model import Provider
from pipeline.job.profiles import BUILTIN, resolve_provider
from pipeline.plan import build_plan
from pipeline.retry import classify
from pipeline.sim import SimConfig, Simulator

from .conftest import SIM_KEY_ENV, output, run_job
from .test_label import LABELS, SCHEMA, chat, job_file, schema_step

LLAMA_CPP = {"response_formats": ["text", "json_object"], "refuse_status": 500}


def forms(sim: Any) -> list[str]:
    """The structured-output form of every chat request the simulator saw, in arrival order."""
    out = []
    for r in chat(sim):
        rf = r.body.get("response_format")
        if isinstance(rf, dict):
            out.append(rf["type"] + ("+schema" if "schema" in rf else ""))
        elif r.body.get("tools"):
            out.append("tools")
        else:
            out.append("prompt")
    return out


def fallbacks(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == event]


# ----- 1. structured-output negotiation


def test_llamacpp_refusing_json_schema_with_a_500_falls_back_to_json_object_once(
    tmp_path: Path, sim_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sim = sim_factory(**LLAMA_CPP)
    job = job_file(tmp_path, sim.url, [schema_step()], rows=24)
    summary = run_job(job)
    df = output(tmp_path)
    assert set(df["review__status"]) == {"ok"}, df["review__error"].to_list()
    # one refused request for the whole run, although 20 rows could be in flight at once; never retried
    assert forms(sim) == ["json_schema"] + ["json_object+schema"] * 24
    assert [r.status for r in chat(sim)][:1] == [500] and summary.stats.retries == 0
    assert df["review__attempts"].to_list() == [1] * 24  # the refused attempt does not count
    assert df["review_stars"].is_between(1, 5).all() and df["review_aspect"].null_count() == 0
    # the schema travels inside json_object; said once
    first_ok = chat(sim)[1].body
    assert first_ok["response_format"]["schema"] == SCHEMA
    (warning,) = fallbacks(caplog, "structured_form_fallback")
    assert "json_schema" in warning.getMessage() and "HTTP 500" in warning.getMessage()
    assert "structured_via" in warning.getMessage()
    # remembered in the cache folder for next runs, keyed by base URL + model
    remembered = json.loads((tmp_path / "cache" / FORMS_FILE).read_text())
    assert remembered == {f"{sim.url}|gpt-4o-mini": "json_object"}
    # the cache keys are those of the json_object requests: a fresh run is answered by the cache
    n = len(sim.records)
    run_job(job, fresh=True)
    assert len(sim.records) == n
    # another job on the same server and model starts from the remembered form
    other = tmp_path / "other"
    other.mkdir()
    fresh_rows = pl.DataFrame({"review_id": ["a", "b", "c"], "text": ["new one", "another", "a third"]})
    job2 = job_file(
        other, sim.url, [schema_step(name="again")], data=fresh_rows, cache={"dir": str(tmp_path / "cache")}
    )
    caplog.clear()
    run_job(job2)
    assert forms(sim)[-3:] == ["json_object+schema"] * 3 and len(chat(sim)) == n + 3
    assert not fallbacks(caplog, "structured_form_fallback")


def test_only_the_refused_attempt_goes_uncounted(tmp_path: Path, sim_factory: Any) -> None:
    sim = sim_factory(**LLAMA_CPP, faults=[{"kind": "status", "status": 503, "first": 1}])
    run_job(job_file(tmp_path, sim.url, [schema_step()], rows=1))
    df = output(tmp_path)
    # refused (not counted), then the json_object request: a 503 (counted) and its retry
    assert [r.status for r in chat(sim)] == [500, 503, 200]
    assert forms(sim) == ["json_schema", "json_object+schema", "json_object+schema"]
    assert df["review__status"].to_list() == ["ok"] and df["review__attempts"].to_list() == [2]


def test_the_ladder_goes_down_to_tools_then_the_prompt(tmp_path: Path, sim_factory: Any) -> None:
    sim = sim_factory(response_formats=["text"])  # no response_format at all: 400 naming it
    job = job_file(tmp_path, sim.url, [schema_step()], rows=6)
    run_job(job)
    df = output(tmp_path)
    assert set(df["review__status"]) == {"ok"}, df["review__error"].to_list()
    assert forms(sim) == ["json_schema", "json_object+schema"] + ["tools"] * 6
    call = chat(sim)[2].body
    assert call["tool_choice"]["function"]["name"] == call["tools"][0]["function"]["name"]
    assert call["tools"][0]["function"]["parameters"] == SCHEMA

    tmp2 = tmp_path / "noforms"
    tmp2.mkdir()
    sim2 = sim_factory(response_formats=["text"], tools=False)
    run_job(job_file(tmp2, sim2.url, [schema_step()], rows=6))
    df2 = output(tmp2)
    assert set(df2["review__status"]) == {"ok"}, df2["review__error"].to_list()
    assert forms(sim2) == ["json_schema", "json_object+schema", "tools"] + ["prompt"] * 6
    system = chat(sim2)[3].body["messages"][0]["content"]
    assert system.startswith(SCHEMA_STEP_SYSTEM) and "JSON Schema" in system
    # the same typed values whatever the form
    assert df2["review_stars"].dtype == pl.Int64 and df2["review_topics"].dtype == pl.List(pl.String)


SCHEMA_STEP_SYSTEM = "Give the sentiment of the review."


def test_labels_in_the_prompt_form_and_pinned_forms(tmp_path: Path, sim_factory: Any) -> None:
    sim = sim_factory()
    job = job_file(
        tmp_path,
        sim.url,
        [
            {
                "name": "review",
                "messages": [{"role": "user", "content": "Classify: {{ row.text }}"}],
                "labels": LABELS,
                "structured_via": "prompt",
            }
        ],
        rows=8,
    )
    run_job(job)
    df = output(tmp_path)
    assert set(df["review__status"]) == {"ok"} and set(df["review"]) <= set(LABELS)
    assert forms(sim) == ["prompt"] * 8
    assert chat(sim)[0].body["messages"][0] == {
        "role": "system",
        "content": 'Reply with only {"label": "<label>"}, where <label> is exactly one of: '
        "positive, negative, neutral.",
    }
    # a pinned form the server refuses fails the rows at once: no retry, no other form
    tmp2 = tmp_path / "pinned"
    tmp2.mkdir()
    sim2 = sim_factory(**LLAMA_CPP)
    summary = run_job(job_file(tmp2, sim2.url, [schema_step(structured_via="json_schema")], rows=4))
    df2 = output(tmp2)
    assert set(df2["review__status"]) == {"error"} and df2["review__attempts"].to_list() == [1] * 4
    assert forms(sim2) == ["json_schema"] * 4 and summary.stats.retries == 0
    assert "pinned by structured_via" in df2["review__error"][0] and "HTTP 500" in df2["review__error"][0]


def test_the_llamacpp_profile_starts_from_json_object(tmp_path: Path, sim_factory: Any) -> None:
    sim = sim_factory(**LLAMA_CPP, require_key=False)
    job = job_file(tmp_path, sim.url, [schema_step()], rows=3)
    spec = yaml.safe_load(job.read_text())
    spec["providers"] = {"llamacpp": {"base_url": sim.url}}
    spec["steps"][0]["provider"] = "llamacpp"
    job.write_text(yaml.safe_dump(spec))
    run_job(job)
    assert set(output(tmp_path)["review__status"]) == {"ok"}
    assert forms(sim) == ["json_object+schema"] * 3
    assert all(r.key == "" for r in chat(sim))  # the profile has no key: no Authorization header


def test_refusal_recognition() -> None:
    llama = classify(
        500,
        b"{\"error\": {\"message\": \"[{'loc': ('body', 'response_format', 'type'), "
        b"'msg': \\\"Input should be 'text' or 'json_object'\\\"}]\"}}",
        {},
    )
    assert refuses_form(llama, "json_schema") and refuses_form(llama, "json_object")
    assert not refuses_form(llama, "tools") and not refuses_form(llama, "prompt")
    # our own schema refused in strict mode is a job problem, not a refused form; nor are 429s or 5xx
    # that name nothing
    strict = RowError("Invalid schema for response_format 'x': ...", status=400, code="invalid_json_schema")
    assert not refuses_form(strict, "json_schema")
    assert not refuses_form(classify(429, b'{"error": {"message": "response_format"}}', {}), "json_schema")
    assert not refuses_form(TransientError("Internal Server Error", status=500), "json_schema")
    assert refuses_form(RowError("'tools' is not supported", status=400, param="tools"), "tools")


# ----- 2. streams cut short


def test_streams_cut_again_and_again_turn_streaming_off(
    tmp_path: Path, sim_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sim = sim_factory(faults=[{"kind": "truncated_stream", "first": 3}])
    job = job_file(tmp_path, sim.url, [schema_step(params={"max_tokens": 300, "stream": True})], rows=5)
    spec = yaml.safe_load(job.read_text())
    spec["providers"]["local"]["limits"]["concurrency"] = 1
    job.write_text(yaml.safe_dump(spec))
    summary = run_job(job)
    df = output(tmp_path)
    assert set(df["review__status"]) == {"ok"}, df["review__error"].to_list()
    streamed = [bool(r.body.get("stream")) for r in chat(sim)]
    assert streamed == [True, True, True] + [False] * 5  # the 4th attempt of row 0 went unstreamed
    assert df["review__attempts"].to_list() == [4, 1, 1, 1, 1]
    assert summary.stats.retries == 2
    (warning,) = fallbacks(caplog, "streaming_off")
    assert "without streaming" in warning.getMessage()
    n = len(sim.records)
    run_job(job, fresh=True)  # streamed or not, the answers share cache keys
    assert len(sim.records) == n


def test_a_stream_ending_with_done_and_no_finish_reason_is_never_complete(tmp_path: Path, sim_factory: Any) -> None:
    sim = sim_factory(faults=[{"kind": "truncated_stream", "first": 2}])
    job = job_file(
        tmp_path,
        sim.url,
        [
            {
                "name": "review",
                "messages": [{"role": "user", "content": "Say something about {{ row.text }}"}],
                "params": {"stream": True},
            }
        ],
        rows=1,
    )
    run_job(job)
    df = output(tmp_path)
    assert df["review__status"].to_list() == ["ok"] and df["review__attempts"].to_list() == [3]
    assert df["review__finish_reason"].to_list() == ["stop"]
    assert [r.fault for r in chat(sim)] == ["truncated_stream", "truncated_stream", None]


async def test_sim_interrupts_a_running_stream_when_another_request_arrives() -> None:
    sim = Simulator(SimConfig(interrupt_streams=True, latency_per_token_s=30.0))
    url = await sim.start()
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "tell me a story"}], "stream": True}
    headers = {"Authorization": "Bearer k"}
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(url + "/chat/completions", json=body, headers=headers) as resp,
        ):
            first = await resp.content.readline()  # the stream runs (role chunk sent)
            assert first.startswith(b"data: ")
            other = {"model": "text-embedding-3-small", "input": "another request"}
            async with session.post(url + "/embeddings", json=other, headers=headers) as r2:
                assert r2.status == 200
            rest = (await resp.read()).decode()
        events = [line[6:] for line in rest.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert all(c["choices"][0]["finish_reason"] is None for c in chunks if c["choices"])
        assert [r.fault for r in sim.records if r.path.endswith("/chat/completions")] == ["interrupted"]
    finally:
        await sim.stop()


def test_a_llamacpp_like_server_interrupting_streams_loses_no_row(tmp_path: Path, sim_factory: Any) -> None:
    sim = sim_factory(interrupt_streams=True, latency_per_token_s=0.01)
    job = job_file(tmp_path, sim.url, [schema_step(params={"max_tokens": 300, "stream": True})], rows=12)
    spec = yaml.safe_load(job.read_text())
    spec["providers"]["local"]["limits"]["concurrency"] = 3
    spec["retry"]["max_attempts"] = 6
    job.write_text(yaml.safe_dump(spec))
    run_job(job)
    df = output(tmp_path)
    assert set(df["review__status"]) == {"ok"}, df["review__error"].to_list()


def test_a_gateway_error_event_mid_stream_is_a_cut_stream() -> None:
    # LiteLLM losing llama.cpp mid-answer sends an error event with the status in `code`
    stream = ChatStream()
    stream.feed(b'{"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]}')
    event = b'{"error": {"message": "litellm.APIConnectionError: Connection error.", "code": "500"}}'
    with pytest.raises(StreamCut, match="error event: litellm.APIConnectionError") as cut:
        stream.feed(event)
    assert cut.value.status == 500 and cut.value.short().startswith("HTTP 500: the answer stream")
    # other errors inside a stream or a 200 keep their class, with the status they carry
    with pytest.raises(RowError):
        ChatStream().feed(b'{"error": {"message": "bad request", "code": "400"}}')
    assert classify(200, b'{"error": {"message": "m", "code": "503"}}', {}).short() == "HTTP 503: m"
    # LiteLLM closing a cut stream with a made-up finish_reason "stop" and nothing before it
    stream = ChatStream()
    stream.feed(b'{"choices": [{"index": 0, "delta": {"role": "assistant"}}]}')
    stream.feed(b'{"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}')
    with pytest.raises(StreamCut, match="no answer before it"):
        stream.finish()


# ----- 3. unknown models, whatever the server's words


@pytest.mark.parametrize("style", ["litellm", "vllm", "ollama", "openai"])
def test_an_unknown_model_stops_the_run_after_one_request(tmp_path: Path, sim_factory: Any, style: str) -> None:
    sim = sim_factory(strict_models=True, error_style=style)
    job = job_file(tmp_path, sim.url, [schema_step(model="no-such-model")], rows=30)
    summary = run_job(job)
    assert len(chat(sim)) == 1
    assert summary.aborted is not None
    assert "model `no-such-model` of step `review` is not served by provider `local`" in summary.aborted
    assert sim.url in summary.aborted and "pipeline models --provider local" in summary.aborted
    if style == "litellm":  # the CLI: exit 3, the model and the provider named
        res = cli("run", str(job), "--quiet", env={SIM_KEY_ENV: "test-key"})
        said = " ".join(res.stderr.split())  # rich wraps long lines
        assert res.returncode == 3 and "model `no-such-model`" in said and "provider `local`" in said
        assert len(chat(sim)) == 2


def test_litellm_error_bodies_do_not_repeat_the_status(tmp_path: Path, sim_factory: Any) -> None:
    sim = sim_factory(error_style="litellm", faults=[{"kind": "status", "status": 400, "first": 1}])
    job = job_file(
        tmp_path, sim.url, [{"name": "review", "messages": [{"role": "user", "content": "{{ row.text }}"}]}], rows=2
    )
    run_job(job)
    errors = [e for e in output(tmp_path)["review__error"].to_list() if e]
    assert errors and errors[0].startswith("HTTP 400: Simulated error 400")
    assert classify(429, b'{"error": {"message": "slow", "code": "429"}}', {}).short() == "HTTP 429: slow"
    assert classify(400, b'{"error": {"message": "m", "code": "bad_param"}}', {}).short() == "HTTP 400 bad_param: m"


# ----- 5, 6. keyless local servers; servers without a model list


def keyless_job(tmp_path: Path, url: str) -> Path:
    job = job_file(
        tmp_path, url, [{"name": "review", "messages": [{"role": "user", "content": "{{ row.text }}"}]}], rows=3
    )
    spec = yaml.safe_load(job.read_text())
    del spec["providers"]["local"]["api_key_env"]
    job.write_text(yaml.safe_dump(spec))
    return job


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess, without the test key variable unless `env` gives it."""
    full = {**{k: v for k, v in os.environ.items() if k != SIM_KEY_ENV}, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], env=full, capture_output=True, text=True, timeout=120
    )


def test_a_keyless_provider_sends_no_authorization_and_needs_no_variable(tmp_path: Path, sim_factory: Any) -> None:
    sim = sim_factory(require_key=False, models_list=False)
    job = keyless_job(tmp_path, sim.url)
    res = cli("run", str(job), "--quiet")
    assert res.returncode == 0, res.stderr
    assert "None" not in res.stderr
    assert [r.key for r in chat(sim)] == ["", "", ""]
    # `models` keyless, on a server that lists no models: said so, not an error
    res = cli("models", "--job", str(job), "--provider", "local")
    assert res.returncode == 0, res.stderr
    assert "does not list its models" in res.stderr and "HTTP 404" in res.stderr and "None" not in res.stderr
    models = [r for r in sim.records if r.path.endswith("/models")]
    assert models and all(r.key == "" for r in models)


def test_models_keyless_on_a_server_that_lists_them(tmp_path: Path, sim_factory: Any) -> None:
    sim = sim_factory(require_key=False, models=["smollm2-135m"])
    res = cli("models", "--job", str(keyless_job(tmp_path, sim.url)), "--provider", "local", "--json")
    assert res.returncode == 0 and [m["id"] for m in json.loads(res.stdout)] == ["smollm2-135m"], res.stderr


def test_a_missing_key_variable_is_named(tmp_path: Path, sim_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    sim = sim_factory()
    monkeypatch.delenv(SIM_KEY_ENV)
    with pytest.raises(Exception, match=f"environment variable {SIM_KEY_ENV}, which is not set") as exc:
        build_plan(job_file(tmp_path, sim.url, [schema_step()]))
    assert "None" not in str(exc.value)


# ----- profiles


def test_local_server_profiles() -> None:
    for name in ("llamacpp", "vllm", "infinity", "litellm", "ollama"):
        p = resolve_provider(name, {})
        assert p.key_optional and p.base_urls[0].startswith("http://127.0.0.1:")
        assert p.limits.concurrency and p.limits.rpm is None
    assert resolve_provider("llamacpp", {}).structured_via == "json_object"
    assert resolve_provider("llamacpp", {}).limits.concurrency == 1
    assert resolve_provider("litellm", {}).api_key_env == "LITELLM_API_KEY"
    assert resolve_provider("infinity", {}).base_urls == ("http://127.0.0.1:7997",)
    # overriding keeps the rest of the profile
    p = resolve_provider("llamacpp", {"llamacpp": Provider(limits={"concurrency": 4})})  # type: ignore[arg-type]
    assert p.limits.concurrency == 4 and p.structured_via == "json_object" and p.base_urls[0].endswith(":8080/v1")
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for name in BUILTIN:
        assert f"| `{name}` |" in readme, f"profile {name} missing from README's profile table"


def test_structured_via_is_checked(tmp_path: Path, sim: Any) -> None:
    from pipeline.errors import JobError

    with pytest.raises(JobError, match="structured_via"):
        build_plan(job_file(tmp_path, sim.url, [schema_step(structured_via="xml")]))
    with pytest.raises(JobError, match="structured_via with tools"):
        build_plan(
            job_file(
                tmp_path,
                sim.url,
                [
                    {
                        "name": "t",
                        "messages": [{"role": "user", "content": "x"}],
                        "structured_via": "tools",
                        "tools": [{"function": {"name": "f", "parameters": SCHEMA}}],
                    }
                ],
            )
        )


def test_sim_switches_come_from_config_files() -> None:
    cfg = SimConfig.from_dict({**LLAMA_CPP, "interrupt_streams": True, "error_style": "litellm"})
    assert cfg.to_dict()["refuse_status"] == 500 and cfg.interrupt_streams
    with pytest.raises(ValueError, match="error_style"):
        SimConfig(error_style="nope")
