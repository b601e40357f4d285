"""Tests of the OpenAI-compatible simulator (pipeline.sim) over real sockets."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import urllib.request
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import jsonschema
import numpy as np
import pytest

from pipeline.sim import (
    FaultRule,
    KeyLimits,
    SimConfig,
    Simulator,
    SimulatorThread,
    chat_prompt_tokens,
    count_tokens,
    serve,
    sim_chat_text,
    sim_embedding,
    sim_transcript,
)

KEY = "sk-test-key-0001"
AUTH = {"Authorization": f"Bearer {KEY}"}
MSGS = [{"role": "user", "content": "Tell me something about rivers."}]

Factory = Callable[..., Awaitable[tuple[Simulator, str]]]


@pytest.fixture
async def make_sim() -> AsyncIterator[Factory]:
    sims: list[Simulator] = []

    async def make(**kw: Any) -> tuple[Simulator, str]:
        sim = Simulator(SimConfig(**kw))
        url = await sim.start()
        sims.append(sim)
        return sim, url

    yield make
    for sim in sims:
        await sim.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=AUTH) as session:
        yield session


async def post(http: aiohttp.ClientSession, url: str, body: Any, **kw: Any) -> tuple[int, Any, Any]:
    # Bodies over 1 MiB go as a stream: aiohttp warns (ResourceWarning) about large raw bodies.
    raw = io.BytesIO(json.dumps(body).encode())
    kw.setdefault("headers", {})["Content-Type"] = "application/json"
    async with http.post(url, data=raw, **kw) as r:
        text = await r.text()
        try:
            data = json.loads(text)
        except ValueError:
            data = text
        return r.status, data, r.headers


def chat_body(**kw: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": MSGS, **kw}


def make_wav(seconds: float, rate: int = 8000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x01" * int(seconds * rate))
    return buf.getvalue()


def audio_form(data: bytes, filename: str = "clip.wav", **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=filename, content_type="application/octet-stream")
    for k, v in {"model": "whisper-1", **fields}.items():
        form.add_field(k, v)
    return form


# ----- tokens, config, auth, models


def test_count_tokens_and_config_roundtrip() -> None:
    assert count_tokens("") == 0
    assert count_tokens("hello world") == 2
    cfg = SimConfig(keys={"a": KeyLimits(rpm=5)}, faults=[FaultRule("status", status=503, first=1)])
    again = SimConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    with pytest.raises(ValueError):
        FaultRule("nope")
    with pytest.raises(ValueError):
        SimConfig.from_dict({"bogus": 1})


async def test_auth_and_models(make_sim: Factory) -> None:
    sim, url = await make_sim(keys={KEY: KeyLimits()}, strict_models=True)
    async with aiohttp.ClientSession() as anon:
        for headers in ({}, {"Authorization": "Bearer sk-wrong"}):
            status, data, _ = await post(anon, url + "/chat/completions", chat_body(), headers=headers)
            assert status == 401
            assert data["error"]["type"] == "invalid_request_error"
            assert data["error"]["code"] == "invalid_api_key"
        async with anon.get(url + "/models", headers=AUTH) as r:
            models = await r.json()
    assert models["object"] == "list"
    ids = [m["id"] for m in models["data"]]
    assert "gpt-4o-mini" in ids and "whisper-1" in ids and "text-embedding-3-large" in ids
    assert set(models["data"][0]) == {"id", "object", "created", "owned_by"}
    async with aiohttp.ClientSession(headers=AUTH) as http:
        status, data, _ = await post(http, url + "/chat/completions", chat_body(model="gpt-9"))
    assert status == 404 and data["error"]["code"] == "model_not_found"
    assert [r.status for r in sim.records] == [401, 401, 200, 404]
    assert sim.records[1].key == "sk-wrong" or sim.records[1].key is None


# ----- chat


async def test_chat_answer_usage_and_records(make_sim: Factory, http: aiohttp.ClientSession) -> None:
    sim, url = await make_sim()
    status, data, headers = await post(http, url + "/chat/completions", chat_body())
    assert status == 200
    answer = data["choices"][0]["message"]["content"]
    assert answer == sim_chat_text(MSGS) and answer.startswith("Simulated answer ")
    assert data["choices"][0]["finish_reason"] == "stop"
    prompt = count_tokens(MSGS[0]["content"]) + 4 + 3
    assert data["usage"]["prompt_tokens"] == prompt
    assert data["usage"]["completion_tokens"] == count_tokens(answer)
    assert data["usage"]["total_tokens"] == prompt + count_tokens(answer)
    _, again, _ = await post(http, url + "/chat/completions", chat_body())
    assert again["choices"][0]["message"]["content"] == answer

    parts = [
        {"role": "system", "content": "Classify the sentiment."},
        {"role": "user", "content": [{"type": "text", "text": "I love it, excellent!"}]},
    ]
    _, data, _ = await post(http, url + "/chat/completions", chat_body(messages=parts))
    assert data["choices"][0]["message"]["content"] == "positive"
    assert (
        data["usage"]["prompt_tokens"]
        == count_tokens("Classify the sentiment.") + count_tokens("I love it, excellent!") + 8 + 3
    )
    for text, label in [
        ("sentiment? the box arrived broken, terrible", "negative"),
        ("情感：这个产品很好，我很喜欢", "positive"),
        ("sentiment: it is a chair", "neutral"),
    ]:
        assert sim_chat_text([{"role": "user", "content": text}]) == label

    rec = sim.records[0]
    assert (rec.method, rec.path, rec.key, rec.model, rec.status, rec.fault) == (
        "POST",
        "/v1/chat/completions",
        KEY,
        "gpt-4o-mini",
        200,
        None,
    )
    assert rec.body == chat_body() and rec.prompt_tokens == prompt
    assert rec.completion_tokens == count_tokens(answer) and rec.t_end >= rec.t_start
    async with http.get(url.removesuffix("/v1") + "/_sim/records") as r:
        remote = await r.json()
    assert len(remote) == 3 and remote[0]["seq"] == rec.seq and remote[0]["status"] == 200


async def test_chat_max_tokens_n_logprobs(make_sim: Factory, http: aiohttp.ClientSession) -> None:
    _, url = await make_sim()
    _, data, _ = await post(
        http, url + "/chat/completions", chat_body(max_tokens=3, n=3, logprobs=True, top_logprobs=2)
    )
    assert len(data["choices"]) == 3
    assert [c["index"] for c in data["choices"]] == [0, 1, 2]
    for c in data["choices"]:
        assert c["finish_reason"] == "length"
        lp = c["logprobs"]["content"]
        assert len(lp) == 3 and all(len(t["top_logprobs"]) == 2 and t["logprob"] <= 0 for t in lp)
        assert "".join(t["token"] for t in lp) == c["message"]["content"]
    assert data["usage"]["completion_tokens"] == 9


SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "stars": {"type": "integer", "minimum": 1, "maximum": 5},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "flag": {"type": "boolean"},
        "note": {"anyOf": [{"type": "string", "maxLength": 8}, {"type": "null"}]},
        "owner": {"$ref": "#/$defs/Person"},
    },
    "required": ["sentiment", "score", "stars", "tags", "flag", "note", "owner"],
    "additionalProperties": False,
    "$defs": {
        "Person": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "email": {"type": "string", "format": "email"}},
            "required": ["name", "email"],
            "additionalProperties": False,
        }
    },
}


async def test_chat_json_schema_and_tools(make_sim: Factory, http: aiohttp.ClientSession) -> None:
    _, url = await make_sim()
    msgs = [{"role": "user", "content": "Give the sentiment of: the screen is broken and I am disappointed"}]
    rf = {"type": "json_schema", "json_schema": {"name": "r", "schema": SCHEMA, "strict": True}}
    _, data, _ = await post(http, url + "/chat/completions", chat_body(messages=msgs, response_format=rf))
    answer = json.loads(data["choices"][0]["message"]["content"])
    jsonschema.validate(answer, SCHEMA)
    assert answer["sentiment"] == "negative"

    _, data, _ = await post(http, url + "/chat/completions", chat_body(response_format={"type": "json_object"}))
    assert isinstance(json.loads(data["choices"][0]["message"]["content"]), dict)

    tool = {"type": "function", "function": {"name": "save", "parameters": SCHEMA}}
    body = chat_body(messages=msgs, tools=[tool], tool_choice={"type": "function", "function": {"name": "save"}})
    _, data, _ = await post(http, url + "/chat/completions", body)
    choice = data["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    call = choice["message"]["tool_calls"][0]
    assert call["type"] == "function" and call["function"]["name"] == "save"
    jsonschema.validate(json.loads(call["function"]["arguments"]), SCHEMA)


async def read_sse(resp: aiohttp.ClientResponse) -> list[Any]:
    events = []
    async for line in resp.content:
        line = line.strip()
        if line.startswith(b"data: "):
            payload = line[6:].decode()
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


async def test_chat_stream_shape(make_sim: Factory, http: aiohttp.ClientSession) -> None:
    _, url = await make_sim()
    body = chat_body(stream=True, stream_options={"include_usage": True})
    async with http.post(url + "/chat/completions", json=body) as r:
        assert r.status == 200 and r.content_type == "text/event-stream"
        events = await read_sse(r)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    content_chunks = chunks[:-1]
    assert content_chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert content_chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["choices"][0]["finish_reason"] is None for c in content_chunks[:-1])
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in content_chunks)
    assert text == sim_chat_text(MSGS) and len(content_chunks) > 3
    assert usage_chunk["usage"]["completion_tokens"] == count_tokens(text)

    async with http.post(url + "/chat/completions", json=chat_body(stream=True)) as r:
        events = await read_sse(r)
    assert events[-1] == "[DONE]" and "usage" not in events[-2]


async def test_legacy_completions(make_sim: Factory, http: aiohttp.ClientSession) -> None:
    _, url = await make_sim()
    body = {"model": "gpt-4o-mini", "prompt": ["a", "b"], "max_tokens": 64}  # the default is 16, as the API
    status, data, _ = await post(http, url + "/completions", body)
    assert status == 200 and len(data["choices"]) == 2
    assert data["choices"][1]["text"] == sim_chat_text([{"role": "user", "content": "b"}])
    assert data["usage"]["prompt_tokens"] == 2


# ----- limits


async def test_rpm_limit_rolling_window(make_sim: Factory, http: aiohttp.ClientSession) -> None:
    sim, url = await make_sim(default_limits=KeyLimits(rpm=3), window_s=0.4)
    statuses = []
    for _ in range(5):
        status, data, headers = await post(http, url + "/chat/completions", chat_body())
        statuses.append(status)
    assert statuses == [200, 200, 200, 429, 429]
    assert data["error"]["type"] == "rate_limit_exceeded" and data["error"]["code"] == "rate_limit_exceeded"
    assert data["error"]["message"].startswith("Rate limit reached for requests")
    assert "Retry-After" not in headers
    assert [r.fault for r in sim.records] == [None] * 5
    await asyncio.sleep(0.45)
    status, _, _ = await post(http, url + "/chat/completions", chat_body())
    assert status == 200


async def test_tpm_limit_charges_max_tokens(make_sim: Factory, http: aiohttp.ClientSession) -> None:
    prompt = count_tokens(MSGS[0]["content"]) + 7
    _, url = await make_sim(default_limits=KeyLimits(tpm=2 * (prompt + 50)), window_s=30)
    results = [(await post(http, url + "/chat/completions", chat_body(max_tokens=50)))[0] for _ in range(3)]
    assert results == [200, 200, 429]


async def test_concurrency_limit(make_sim: Factory, http: aiohttp.ClientSession) -> None:
    sim, url = await make_sim(keys={KEY: KeyLimits(concurrency=2)}, latency_s=0.2)
    results = await asyncio.gather(*(post(http, url + "/chat/completions", chat_body()) for _ in range(4)))
    assert sorted(r[0] for r in results) == [200, 200, 429, 429]
    ok = [r for r in sim.records if r.status == 200]
    assert all(r.t_end - r.t_start >= 0.19 for r in ok)


# ----- faults


async def test_fault_status_rate_limit_empty_error_in_200(make_sim: Factory, http: aiohttp.ClientSession) -> None:
    sim, url = await make_sim(
        faults=[
            FaultRule("status", first=1, status=503, error_type="server_error", error_code="overloaded"),
            FaultRule("rate_limit", first=1, retry_after=0.5),
            FaultRule("rate_limit", first=1),
            FaultRule("empty_429", first=1),
            FaultRule("error_in_200", first=1, error_type="new_api_error", error_code="quota"),
            FaultRule("malformed_json", first=1),
        ]
    )
    s, data, _ = await post(http, url + "/chat/completions", chat_body())
    assert s == 503 and data["error"]["code"] == "overloaded" and data["error"]["type"] == "server_error"
    assert data["error"]["message"].endswith("(request id: sim-1)")
    s, data, h = await post(http, url + "/chat/completions", chat_body())
    assert s == 429 and h["Retry-After"] == "0.5" and data["error"]["code"] == "rate_limit_exceeded"
    s, data, h = await post(http, url + "/chat/completions", chat_body())
    assert s == 429 and "Retry-After" not in h
    s, data, _ = await post(http, url + "/chat/completions", chat_body())
    assert s == 429 and data == ""
    s, data, _ = await post(http, url + "/chat/completions", chat_body())
    assert s == 200 and data["error"]["type"] == "new_api_error" and data["error"]["code"] == "quota"
    s, data, _ = await post(http, url + "/chat/completions", chat_body())
    assert s == 200 and data == '{"id": "x", "choices": ['
    s, data, _ = await post(http, url + "/chat/completions", chat_body())
    assert s == 200 and "choices" in data
    faults = [r.fault for r in sim.records]
    assert faults == [
        "status",
        "rate_limit",
        "rate_limit",
        "empty_429",
        "error_in_200",
        "malformed_json",
        None,
    ]


async def test_fault_reset_and_hang(make_sim: Factory, http: aiohttp.ClientSession) -> None:
    sim, url = await make_sim(faults=[FaultRule("reset", first=1), FaultRule("hang", first=2, hang_s=30)])
    with pytest.raises(aiohttp.ClientConnectionError):
        await post(http, url + "/chat/completions", chat_body())
    with pytest.raises(asyncio.TimeoutError):
        await post(http, url + "/chat/completions", chat_body(), timeout=aiohttp.ClientTimeout(total=0.2))
    sim.set_faults([FaultRule("hang", hang_s=0.05)])
    s, _, _ = await post(http, url + "/chat/completions", chat_body())
    assert s == 200
    await sim.stop()  # cuts the request still hanging
    assert [(r.status, r.fault) for r in sim.records] == [(0, "reset"), (200, "hang"), (0, "hang")]


async def test_content_faults(make_sim: Factory, http: aiohttp.ClientSession) -> None:
    sim, url = await make_sim(
        faults=[
            FaultRule("truncated_stream", first=1),
            FaultRule("invalid_json_answer", first=1),
            FaultRule("schema_violation", first=1),
            FaultRule("refusal", first=1),
        ]
    )
    async with http.post(url + "/chat/completions", json=chat_body(stream=True)) as r:
        events = await read_sse(r)
    assert events[-1] == "[DONE]" and len(events) >= 3
    assert all(e["choices"][0]["finish_reason"] is None for e in events[:-1])
    rf = {"type": "json_schema", "json_schema": {"name": "r", "schema": SCHEMA, "strict": True}}
    _, data, _ = await post(http, url + "/chat/completions", chat_body(response_format=rf))
    with pytest.raises(ValueError):
        json.loads(data["choices"][0]["message"]["content"])
    _, data, _ = await post(http, url + "/chat/completions", chat_body(response_format=rf))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(json.loads(data["choices"][0]["message"]["content"]), SCHEMA)
    _, data, _ = await post(http, url + "/chat/completions", chat_body())
    msg = data["choices"][0]["message"]
    assert msg["content"] is None and msg["refusal"] == "I can't help with that."
    _, data, _ = await post(http, url + "/chat/completions", chat_body(response_format=rf))
    jsonschema.validate(json.loads(data["choices"][0]["message"]["content"]), SCHEMA)
    assert [r.fault for r in sim.records] == [
        "truncated_stream",
        "invalid_json_answer",
        "schema_violation",
        "refusal",
        None,
    ]


async def test_fault_selection_every_times_path_contains(make_sim: Factory, http: aiohttp.ClientSession) -> None:
    sim, url = await make_sim(
        faults=[
            FaultRule(
                "status",
                path="/embeddings",
                when_contains="POISON",
                status=400,
                error_type="invalid_request_error",
            ),
            FaultRule("status", path="/chat/completions", every=3, times=2),
        ]
    )
    statuses = [(await post(http, url + "/chat/completions", chat_body()))[0] for _ in range(9)]
    assert statuses == [200, 200, 500, 200, 200, 500, 200, 200, 200]
    emb = {"model": "text-embedding-3-small", "input": ["ok", "fine"]}
    assert (await post(http, url + "/embeddings", emb))[0] == 200
    emb["input"] = ["ok", "POISON pill", "fine"]
    s, data, _ = await post(http, url + "/embeddings", emb)
    assert s == 400 and data["error"]["type"] == "invalid_request_error"

    sim.set_faults([FaultRule("status", probability=0.5)])
    statuses = [(await post(http, url + "/chat/completions", chat_body()))[0] for _ in range(40)]
    assert 5 < statuses.count(500) < 35


# ----- embeddings


async def test_embeddings(make_sim: Factory, http: aiohttp.ClientSession) -> None:
    sim, url = await make_sim()
    texts = [f"text number {i}" for i in range(8)]
    body = {"model": "text-embedding-3-small", "input": texts}
    s, data, _ = await post(http, url + "/embeddings", body)
    assert s == 200
    indices = [d["index"] for d in data["data"]]
    assert sorted(indices) == list(range(8)) and indices != list(range(8))
    for d in data["data"]:
        v = np.asarray(d["embedding"], dtype=np.float32)
        assert v.shape == (1536,)
        assert np.array_equal(v, sim_embedding(texts[d["index"]], "text-embedding-3-small"))
        assert abs(float(np.linalg.norm(v)) - 1) < 1e-5
    assert data["usage"]["prompt_tokens"] == sum(count_tokens(t, "cl100k_base") for t in texts)
    assert sim.records[-1].n_inputs == 8

    body.update(encoding_format="base64", dimensions=256)
    _, data2, _ = await post(http, url + "/embeddings", body)
    assert [d["index"] for d in data2["data"]] == indices
    for d in data2["data"]:
        v = np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4")
        assert np.array_equal(v, sim_embedding(texts[d["index"]], "text-embedding-3-small", 256))

    s, data, _ = await post(http, url + "/embeddings", {"model": "text-embedding-3-large", "input": "x"})
    assert s == 200 and len(data["data"][0]["embedding"]) == 3072 and data["data"][0]["index"] == 0


@pytest.mark.parametrize(
    "body",
    [
        {"model": "text-embedding-3-small", "input": ""},
        {"model": "text-embedding-3-small", "input": ["a", ""]},
        {"model": "text-embedding-3-small", "input": ["a", 3]},
        {"model": "text-embedding-3-small", "input": ["a"] * 2049},
        {"model": "text-embedding-3-small", "input": "word " * 9000},
        {"model": "text-embedding-3-small", "input": ["word " * 8000] * 40},
        {"model": "text-embedding-ada-002", "input": "a", "dimensions": 256},
        {"model": "text-embedding-3-small", "input": "a", "encoding_format": "hex"},
    ],
)
async def test_embeddings_validation(make_sim: Factory, http: aiohttp.ClientSession, body: Any) -> None:
    _, url = await make_sim()
    s, data, _ = await post(http, url + "/embeddings", body)
    assert s == 400 and data["error"]["type"] == "invalid_request_error"
    if "dimensions" in body:
        assert "dimensions" in data["error"]["message"]


# ----- transcription, images


async def test_transcription_formats(make_sim: Factory, http: aiohttp.ClientSession) -> None:
    sim, url = await make_sim()
    wav = make_wav(12.0)
    text, segments = sim_transcript(wav, 12.0)
    assert [(s["start"], s["end"]) for s in segments] == [(0, 5), (5, 10), (10, 12)]
    assert text == " ".join(s["text"] for s in segments)

    async with http.post(url + "/audio/transcriptions", data=audio_form(wav)) as r:
        assert r.status == 200
        data = await r.json()
    assert data["text"] == text and data["usage"] == {"type": "duration", "seconds": 12}
    rec = sim.records[-1]
    assert rec.body is not None and rec.body["file_name"] == "clip.wav" and rec.body["file_size"] == len(wav)
    assert rec.body["model"] == "whisper-1" and len(rec.body["file_sha256"]) == 64

    form = audio_form(wav, response_format="verbose_json", language="en")
    form.add_field("timestamp_granularities[]", "word")
    form.add_field("timestamp_granularities[]", "segment")
    async with http.post(url + "/audio/transcriptions", data=form) as r:
        data = await r.json()
    assert data["task"] == "transcribe" and math.isclose(data["duration"], 12.0)
    assert [s["id"] for s in data["segments"]] == [0, 1, 2] and data["words"]

    async with http.post(url + "/audio/transcriptions", data=audio_form(wav, response_format="srt")) as r:
        srt = await r.text()
    assert srt.startswith("1\n00:00:00,000 --> 00:00:05,000\n")
    async with http.post(url + "/audio/transcriptions", data=audio_form(wav, response_format="text")) as r:
        assert await r.text() == text


async def test_transcription_errors(make_sim: Factory, http: aiohttp.ClientSession) -> None:
    _, url = await make_sim(max_upload_bytes=20_000)
    cases = [
        (audio_form(make_wav(0.5), filename="clip.txt"), 400, "Invalid file format"),
        (audio_form(make_wav(2.0)), 413, "Maximum content size"),
        (audio_form(b"", filename="x.wav"), 400, "corrupted"),
        (audio_form(b"not audio at all", filename="x.wav"), 400, "corrupted"),
        (audio_form(make_wav(0.5), model="gpt-4o-transcribe", response_format="srt"), 400, "json"),
    ]
    for form, status, fragment in cases:
        async with http.post(url + "/audio/transcriptions", data=form) as r:
            assert r.status == status
            assert fragment in (await r.json())["error"]["message"]
    form = aiohttp.FormData()
    form.add_field("model", "whisper-1")
    async with http.post(url + "/audio/transcriptions", data=form) as r:
        assert r.status == 400


async def test_images(make_sim: Factory, http: aiohttp.ClientSession) -> None:
    _, url = await make_sim()
    body = {"model": "dall-e-3", "prompt": "a cat", "response_format": "b64_json"}
    s, data, _ = await post(http, url + "/images/generations", body)
    assert s == 200 and base64.b64decode(data["data"][0]["b64_json"]).startswith(b"\x89PNG")
    s, data, _ = await post(http, url + "/images/generations", {"prompt": "a dog"})
    async with http.get(data["data"][0]["url"]) as r:
        assert r.status == 200 and (await r.read()).startswith(b"\x89PNG")


# ----- control endpoints and the thread runner


async def test_control_endpoints(make_sim: Factory, http: aiohttp.ClientSession) -> None:
    sim, url = await make_sim()
    root = url.removesuffix("/v1")
    async with http.post(root + "/_sim/faults", json=[{"kind": "status", "status": 502, "times": 1}]) as r:
        assert r.status == 200
    assert (await post(http, url + "/chat/completions", chat_body()))[0] == 502
    assert (await post(http, url + "/chat/completions", chat_body()))[0] == 200
    async with http.post(root + "/_sim/reset") as r:
        assert r.status == 200
    assert sim.records == []


def test_simulator_thread() -> None:
    with SimulatorThread(SimConfig(faults=[FaultRule("status", first=1, status=500)])) as st:
        assert st.url is not None
        req = urllib.request.Request(
            st.url + "/chat/completions", data=json.dumps(chat_body()).encode(), headers=AUTH, method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=5)
        err.value.close()
        with urllib.request.urlopen(req, timeout=5) as r:
            assert json.load(r)["choices"][0]["message"]["content"] == sim_chat_text(MSGS)
        assert [r.status for r in st.records] == [500, 200]
        st.reset_records()
        st.set_faults([])
        assert st.records == []


async def test_serve_until_cancelled(http: aiohttp.ClientSession) -> None:
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(SimConfig(), on_ready=ready.set_result))
    url = await asyncio.wait_for(ready, 5)
    async with http.get(url + "/models") as r:
        assert r.status == 200
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# ----- structured answers: label variants, servers without structured outputs, strict schemas

LABEL_RF = {
    "type": "json_schema",
    "json_schema": {
        "name": "label",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"label": {"type": "string", "enum": ["positive", "negative", "neutral"]}},
            "required": ["label"],
            "additionalProperties": False,
        },
    },
}
LOVE = [{"role": "user", "content": "Label the sentiment: I love it, great value"}]


async def test_label_variants_and_plain_servers(make_sim: Factory, http: aiohttp.ClientSession) -> None:
    sim, url = await make_sim(faults=[FaultRule("label_variant")])
    seen = set()
    for i in range(6):
        msgs = [{"role": "user", "content": f"Label the sentiment: I love it, great value (#{i})"}]
        _, data, _ = await post(http, url + "/chat/completions", chat_body(messages=msgs, response_format=LABEL_RF))
        label = json.loads(data["choices"][0]["message"]["content"])["label"]
        assert label != "positive" and label.strip().rstrip(".").lower() == "positive"
        seen.add(label)
    assert len(seen) > 1 and all(r.fault == "label_variant" for r in sim.records)
    _, data, _ = await post(http, url + "/chat/completions", chat_body(messages=LOVE))
    assert data["choices"][0]["message"]["content"] != "positive"  # plain text answers vary too
    _, plain = await make_sim(structured_outputs=False)
    _, data, _ = await post(http, plain + "/chat/completions", chat_body(messages=LOVE, response_format=LABEL_RF))
    assert data["choices"][0]["message"]["content"] == "positive"  # the schema was ignored


async def test_strict_schemas_are_checked(make_sim: Factory, http: aiohttp.ClientSession) -> None:
    _, url = await make_sim()
    loose = {
        "type": "object",
        "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
        "required": ["a"],
    }
    rf = {"type": "json_schema", "json_schema": {"name": "x", "strict": True, "schema": loose}}
    status, data, _ = await post(http, url + "/chat/completions", chat_body(response_format=rf))
    assert status == 400 and data["error"]["param"] == "response_format"
    assert "'additionalProperties' is required to be supplied and to be false" in data["error"]["message"]
    closed = {**loose, "additionalProperties": False}
    rf["json_schema"]["schema"] = closed
    status, data, _ = await post(http, url + "/chat/completions", chat_body(response_format=rf))
    assert status == 400 and "Missing 'b'" in data["error"]["message"]
    rf["json_schema"]["strict"] = False
    status, data, _ = await post(http, url + "/chat/completions", chat_body(response_format=rf))
    assert status == 200 and "a" in json.loads(data["choices"][0]["message"]["content"])
    tool = {"type": "function", "function": {"name": "f", "strict": True, "parameters": loose}}
    status, data, _ = await post(http, url + "/chat/completions", chat_body(tools=[tool], tool_choice="required"))
    assert status == 400 and data["error"]["param"] == "tools[0].function.parameters"
    nameless = {"type": "json_schema", "json_schema": {"schema": closed}}
    status, _, _ = await post(http, url + "/chat/completions", chat_body(response_format=nameless))
    assert status == 400


async def test_reask_answers_follow_the_task(make_sim: Factory, http: aiohttp.ClientSession) -> None:
    _, url = await make_sim()
    msgs = [
        {"role": "user", "content": "Label the sentiment: terrible, it broke in a day"},
        {"role": "assistant", "content": '{"label": "bad"}'},
        {"role": "user", "content": "'bad' is not one of the allowed labels (positive, negative, neutral)."},
    ]
    _, data, _ = await post(http, url + "/chat/completions", chat_body(messages=msgs, response_format=LABEL_RF))
    assert json.loads(data["choices"][0]["message"]["content"]) == {"label": "negative"}
    _, data, _ = await post(http, url + "/chat/completions", chat_body(messages=msgs))
    assert data["choices"][0]["message"]["content"] == "negative"


async def test_content_faults_on_tool_calls(make_sim: Factory, http: aiohttp.ClientSession) -> None:
    _, url = await make_sim(faults=[FaultRule("schema_violation", first=1), FaultRule("invalid_json_answer", first=1)])
    tool = {"type": "function", "function": {"name": "save", "parameters": SCHEMA}}
    body = chat_body(tools=[tool], tool_choice={"type": "function", "function": {"name": "save"}})
    args = []
    for _ in range(3):
        _, data, _ = await post(http, url + "/chat/completions", body)
        args.append(data["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(json.loads(args[0]), SCHEMA)
    with pytest.raises(ValueError):
        json.loads(args[1])
    jsonschema.validate(json.loads(args[2]), SCHEMA)


async def test_limits_are_per_key_and_a_key_can_be_revoked_mid_run(
    make_sim: Factory, http: aiohttp.ClientSession
) -> None:
    other = "sk-test-key-0002"
    sim, url = await make_sim(keys={KEY: KeyLimits(rpm=2), other: KeyLimits(rpm=2)}, revoke_after={other: 1})

    async def send(key: str) -> int:
        return (await post(http, url + "/chat/completions", chat_body(), headers={"Authorization": f"Bearer {key}"}))[0]

    assert [await send(KEY) for _ in range(3)] == [200, 200, 429]  # each key has its own 2 per window
    status, data, _ = await post(
        http, url + "/chat/completions", chat_body(), headers={"Authorization": f"Bearer {other}"}
    )
    assert status == 200
    status, data, _ = await post(
        http, url + "/chat/completions", chat_body(), headers={"Authorization": f"Bearer {other}"}
    )
    assert status == 401 and data["error"]["code"] == "invalid_api_key" and "revoked" in data["error"]["message"]
    assert other not in data["error"]["message"]


@pytest.mark.parametrize(("api", "via"), [("chat", "json_schema"), ("chat", "tools"), ("responses", "json_schema")])
def test_prompt_tokens_count_tool_definitions_and_schemas(tmp_path: Any, sim: Any, api: str, via: str) -> None:
    """Like the real API, the simulator bills a request's response_format schema and tool definitions as
    prompt tokens: with the exact vocabulary, the client's own count of a request is what it is billed."""
    import yaml

    from pipeline.plan import build_plan

    from .test_responses_api import label_job

    job = label_job(tmp_path, sim.url, api, structured_via=via)
    spec = yaml.safe_load(job.read_text())
    spec["providers"]["apiyi"]["tokenizer"] = "o200k_base"
    job.write_text(yaml.safe_dump(spec, allow_unicode=True))
    prep = build_plan(job).steps[0].prepare({"product": "kettle", "text": "Boils fast, 但是很吵。"})
    req = urllib.request.Request(
        sim.url + prep.request.endpoint,
        data=prep.request.data,
        headers={"Authorization": "Bearer test-key", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        usage = json.loads(r.read())["usage"]
    billed = usage["prompt_tokens" if api == "chat" else "input_tokens"]
    assert billed == prep.prompt_estimate
    messages = prep.request.json_body["messages" if api == "chat" else "input"]  # type: ignore[index]
    assert billed - chat_prompt_tokens(messages) > 100  # the schema's tokens (it has ~10 properties)


def test_prompt_tokens_are_counted_in_the_models_vocabulary(sim: Any) -> None:
    """gpt-3.5-turbo-instruct bills its prompt in cl100k_base, as the real API does (the client's estimate
    counts it so); current models in o200k_base."""

    def billed(path: str, body: dict[str, Any]) -> int:
        req = urllib.request.Request(
            sim.url + path,
            data=json.dumps(body).encode(),
            headers={"Authorization": "Bearer test-key", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return int(json.loads(r.read())["usage"]["prompt_tokens"])

    prompt = "这个产品很好，我很喜欢。 Tagline:"
    assert count_tokens(prompt, "cl100k_base") != count_tokens(prompt)
    body = {"model": "gpt-3.5-turbo-instruct", "prompt": prompt, "max_tokens": 5}
    assert billed("/completions", body) == count_tokens(prompt, "cl100k_base")
    chat = {"messages": [{"role": "user", "content": prompt}], "max_tokens": 5}
    assert billed("/chat/completions", {"model": "gpt-4o-mini", **chat}) == count_tokens(prompt) + 4 + 3
    assert billed("/chat/completions", {"model": "gpt-4-turbo", **chat}) == count_tokens(prompt, "cl100k_base") + 7


def test_embeddings_are_counted_in_cl100k_as_openai_bills_them(sim: Any) -> None:
    """text-embedding-3-small/-large and text-embedding-ada-002 bill their input in cl100k_base, as the
    real API does (and as the client's exact count and reservation do); other models in o200k_base."""

    def billed(model: str, texts: list[str]) -> int:
        req = urllib.request.Request(
            sim.url + "/embeddings",
            data=json.dumps({"model": model, "input": texts}).encode(),
            headers={"Authorization": "Bearer test-key", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return int(json.loads(r.read())["usage"]["prompt_tokens"])

    texts = ["这个产品很好，我很喜欢。", "Boils fast, 但是很吵。", "alpha beta gamma #1000"]
    cl100k = sum(count_tokens(t, "cl100k_base") for t in texts)
    assert cl100k != sum(count_tokens(t) for t in texts)
    for model in ("text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002"):
        assert billed(model, texts) == cl100k, model
    assert billed("bge-m3", texts) == sum(count_tokens(t) for t in texts)
