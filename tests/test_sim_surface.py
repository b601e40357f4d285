"""The simulator's Responses API, legacy completions and image generations: answers, 400s, streams, ipm."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jsonschema
import pytest

from pipeline.sim import FaultRule, KeyLimits, SimConfig, Simulator, sim_chat_text
from pipeline.sim.tokens import count_tokens

from .test_sim import AUTH, Factory, post


@pytest.fixture
async def make_sim() -> AsyncIterator[Factory]:
    sims: list[Simulator] = []

    async def make(**kw: Any) -> tuple[Simulator, str]:
        sim = Simulator(SimConfig(**kw))
        sims.append(sim)
        return sim, await sim.start()

    yield make
    for sim in sims:
        await sim.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=AUTH) as session:
        yield session


LABEL_SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "reason": {"type": "string"},
    },
    "required": ["sentiment", "reason"],
    "additionalProperties": False,
}
REVIEW = "Classify the sentiment of this review: I loved it, the best purchase this year."
_VOLATILE = ("id", "created_at", "created")


def _stable(data: dict[str, Any]) -> dict[str, Any]:
    """An answer without its ids and timestamps (what differs between two equal requests)."""
    out = {k: v for k, v in data.items() if k not in _VOLATILE}
    if isinstance(out.get("output"), list):
        out["output"] = [{k: v for k, v in item.items() if k != "id"} for item in out["output"]]
    return out


def _assert_400(status: int, data: Any, param: str) -> None:
    assert status == 400, data
    assert set(data) == {"error"} and set(data["error"]) == {"message", "type", "param", "code"}
    assert data["error"]["type"] == "invalid_request_error" and data["error"]["param"] == param, data


async def _events(resp: aiohttp.ClientResponse) -> list[tuple[str | None, Any]]:
    """(event name, data) pairs of an SSE body."""
    out: list[tuple[str | None, Any]] = []
    name: str | None = None
    async for raw in resp.content:
        line = raw.decode().rstrip("\r\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            payload = line[6:]
            out.append((name, payload if payload == "[DONE]" else json.loads(payload)))
            name = None
    return out


# ----- /v1/responses


LONG = "Tell me something about rivers 35."  # its answer is 20 tokens: cut by a max of 16


def resp_body(**kw: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "input": LONG, **kw}


async def test_responses_text_is_deterministic_and_shaped(make_sim: Factory, http: aiohttp.ClientSession) -> None:
    _, url = await make_sim()
    body = resp_body(instructions="Be brief.", metadata={"k": "v"}, store=False, user="u1", temperature=0.5)
    s1, a, _ = await post(http, url + "/responses", body)
    s2, b, _ = await post(http, url + "/responses", body)
    assert s1 == s2 == 200 and _stable(a) == _stable(b)
    assert a["object"] == "response" and a["status"] == "completed" and a["incomplete_details"] is None
    assert a["id"].startswith("resp_") and a["metadata"] == {"k": "v"} and a["store"] is False
    [item] = a["output"]
    assert item["type"] == "message" and item["role"] == "assistant" and item["status"] == "completed"
    [part] = item["content"]
    expected = sim_chat_text([{"role": "system", "content": "Be brief."}, {"role": "user", "content": LONG}])
    assert part["type"] == "output_text" and part["text"] == expected
    u = a["usage"]
    assert u["output_tokens"] == count_tokens(expected) and u["total_tokens"] == u["input_tokens"] + u["output_tokens"]
    assert u["input_tokens_details"] == {"cached_tokens": 0} and u["output_tokens_details"] == {"reasoning_tokens": 0}
    # input as message items with input_text parts: answered as chat answers the same parts
    parts = [{"type": "input_text", "text": LONG}]
    _, c, _ = await post(http, url + "/responses", resp_body(input=[{"role": "user", "content": parts}]))
    assert c["output"][0]["content"][0]["text"] == sim_chat_text([{"role": "user", "content": parts}])


async def test_responses_json_schema_matches_chat(make_sim: Factory, http: aiohttp.ClientSession) -> None:
    _, url = await make_sim()
    fmt = {"type": "json_schema", "name": "label", "schema": LABEL_SCHEMA, "strict": True}
    s, data, _ = await post(http, url + "/responses", resp_body(input=REVIEW, text={"format": fmt}))
    assert s == 200
    value = json.loads(data["output"][0]["content"][0]["text"])
    jsonschema.validate(value, LABEL_SCHEMA)
    assert value["sentiment"] == "positive" and data["text"]["format"] == fmt
    # the same task through chat completions gets the same structured answer
    rf = {"type": "json_schema", "json_schema": {"name": "label", "schema": LABEL_SCHEMA, "strict": True}}
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": REVIEW}], "response_format": rf}
    _, cdata, _ = await post(http, url + "/chat/completions", chat)
    assert json.loads(cdata["choices"][0]["message"]["content"]) == value


async def test_responses_incomplete_at_max_output_tokens(make_sim: Factory, http: aiohttp.ClientSession) -> None:
    _, url = await make_sim()
    full = (await post(http, url + "/responses", resp_body()))[1]["output"][0]["content"][0]["text"]
    assert count_tokens(full) > 16
    s, data, _ = await post(http, url + "/responses", resp_body(max_output_tokens=16))
    assert s == 200 and data["status"] == "incomplete"
    assert data["incomplete_details"] == {"reason": "max_output_tokens"} and data["usage"]["output_tokens"] == 16
    text = data["output"][0]["content"][0]["text"]
    assert data["output"][0]["status"] == "incomplete" and full.startswith(text) and text != full


async def test_responses_function_call(make_sim: Factory, http: aiohttp.ClientSession) -> None:
    _, url = await make_sim()
    tool = {"type": "function", "name": "record", "parameters": LABEL_SCHEMA, "strict": True}
    body = resp_body(input=REVIEW, tools=[tool], tool_choice={"type": "function", "name": "record"})
    s, data, _ = await post(http, url + "/responses", body)
    assert s == 200 and data["status"] == "completed"
    [call] = data["output"]
    assert call["type"] == "function_call" and call["name"] == "record" and call["call_id"].startswith("call_")
    jsonschema.validate(json.loads(call["arguments"]), LABEL_SCHEMA)
    # without a forced choice the model answers in text; a function_call_output item is accepted back
    items = [
        {"role": "user", "content": REVIEW},
        {"type": "function_call", "call_id": call["call_id"], "name": "record", "arguments": call["arguments"]},
        {"type": "function_call_output", "call_id": call["call_id"], "output": "saved"},
    ]
    s, data, _ = await post(http, url + "/responses", resp_body(input=items, tools=[tool]))
    assert s == 200 and data["output"][0]["type"] == "message"


async def test_responses_stream_events(make_sim: Factory, http: aiohttp.ClientSession) -> None:
    _, url = await make_sim()
    _, whole, _ = await post(http, url + "/responses", resp_body())
    async with http.post(url + "/responses", json=resp_body(stream=True)) as r:
        assert r.status == 200 and r.content_type == "text/event-stream"
        events = await _events(r)
    assert all(name == data["type"] for name, data in events)  # `event:` names its data's type; no [DONE]
    kinds = [data["type"] for _, data in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    deltas = "".join(d["delta"] for _, d in events if d["type"] == "response.output_text.delta")
    [done] = [d for _, d in events if d["type"] == "response.output_text.done"]
    assert deltas == done["text"] == whole["output"][0]["content"][0]["text"]
    assert kinds.count("response.output_text.delta") > 1
    assert _stable(events[-1][1]["response"]) == _stable(whole)
    # a function call streams its arguments
    tool = {"type": "function", "name": "record", "parameters": LABEL_SCHEMA, "strict": True}
    body = resp_body(input=REVIEW, tools=[tool], tool_choice="required", stream=True)
    async with http.post(url + "/responses", json=body) as r:
        events = await _events(r)
    args = "".join(d["delta"] for _, d in events if d["type"] == "response.function_call_arguments.delta")
    [done] = [d for _, d in events if d["type"] == "response.function_call_arguments.done"]
    assert args == done["arguments"] and json.loads(args)["sentiment"] == "positive"
    # cut at max_output_tokens: the stream ends with response.incomplete
    async with http.post(url + "/responses", json=resp_body(stream=True, max_output_tokens=16)) as r:
        events = await _events(r)
    assert events[-1][1]["type"] == "response.incomplete"
    assert events[-1][1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


async def test_responses_content_faults(make_sim: Factory, http: aiohttp.ClientSession) -> None:
    """The chat content faults alter Responses answers too (what re-asks and stream checks are tested with)."""
    sim, url = await make_sim()
    fmt = {"type": "json_schema", "name": "label", "schema": LABEL_SCHEMA, "strict": True}
    body = resp_body(input=REVIEW, text={"format": fmt})
    sim.set_faults([FaultRule("schema_violation", path="/responses", times=1)])
    bad = json.loads((await post(http, url + "/responses", body))[1]["output"][0]["content"][0]["text"])
    good = json.loads((await post(http, url + "/responses", body))[1]["output"][0]["content"][0]["text"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, LABEL_SCHEMA)
    jsonschema.validate(good, LABEL_SCHEMA)
    sim.set_faults([FaultRule("refusal", path="/responses", times=1)])
    _, data, _ = await post(http, url + "/responses", body)
    assert data["output"][0]["content"][0]["type"] == "refusal"
    sim.set_faults([FaultRule("truncated_stream", path="/responses", times=1)])
    async with http.post(url + "/responses", json=resp_body(stream=True)) as r:
        kinds = [d["type"] for _, d in await _events(r)]
    assert "response.output_text.delta" in kinds and "response.completed" not in kinds
    assert "response.output_text.done" not in kinds
    assert [r.fault for r in sim.records] == ["schema_violation", None, "refusal", "truncated_stream"]


_STRICT_BAD = {"type": "object", "properties": {"a": {"type": "string"}}}  # no additionalProperties: false
_FN = {"type": "function", "name": "f", "parameters": LABEL_SCHEMA}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"foo": 1}, "foo"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"max_tokens": 10}, "max_tokens"),
        ({"max_output_tokens": 8}, "max_output_tokens"),
        ({"temperature": 3}, "temperature"),
        ({"top_p": "high"}, "top_p"),
        ({"input": None}, "input"),
        ({"input": [{"role": "robot", "content": "hi"}]}, "input[0].role"),
        ({"input": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}, "input[0].content[0].type"),
        ({"input": [{"role": "user", "content": 5}]}, "input[0].content"),
        ({"text": {"format": {"type": "json_schema", "schema": LABEL_SCHEMA}}}, "text.format.name"),
        ({"text": {"format": {"type": "yaml"}}}, "text.format.type"),
        (
            {"text": {"format": {"type": "json_schema", "name": "x", "schema": _STRICT_BAD, "strict": True}}},
            "text.format.schema",
        ),
        ({"text": {"format": {"type": "json_object"}}}, "input"),  # the input must say "json"
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": LABEL_SCHEMA}}]}, "tools[0].name"),
        ({"tools": [{"type": "function", "name": "f", "parameters": _STRICT_BAD}]}, "tools[0].parameters"),
        ({"tools": [_FN], "tool_choice": {"type": "function", "name": "g"}}, "tool_choice"),
        ({"tools": [_FN], "tool_choice": "always"}, "tool_choice"),
        ({"stream": "yes"}, "stream"),
        ({"metadata": []}, "metadata"),
    ],
)
async def test_responses_bad_params(
    make_sim: Factory, http: aiohttp.ClientSession, extra: dict[str, Any], param: str
) -> None:
    sim, url = await make_sim()
    status, data, _ = await post(http, url + "/responses", resp_body(**extra))
    _assert_400(status, data, param)
    assert sim.records[-1].status == 400


# ----- /v1/completions (legacy)


def cmpl_body(**kw: Any) -> dict[str, Any]:
    return {"model": "gpt-3.5-turbo-instruct", "prompt": LONG, **kw}


async def test_completions_defaults_stop_echo(make_sim: Factory, http: aiohttp.ClientSession) -> None:
    _, url = await make_sim()
    full = sim_chat_text([{"role": "user", "content": LONG}])
    assert count_tokens(full) > 16
    s, a, _ = await post(http, url + "/completions", cmpl_body())
    _, b, _ = await post(http, url + "/completions", cmpl_body())
    assert s == 200 and a["object"] == "text_completion" and _stable(a) == _stable(b)
    [c] = a["choices"]
    assert c["finish_reason"] == "length" and a["usage"]["completion_tokens"] == 16  # max_tokens defaults to 16
    assert full.startswith(c["text"]) and c["logprobs"] is None and c["index"] == 0
    _, data, _ = await post(http, url + "/completions", cmpl_body(max_tokens=200, stop=[":", "zzz"]))
    assert data["choices"][0] == {
        "text": full[: full.index(":")],
        "index": 0,
        "logprobs": None,
        "finish_reason": "stop",
    }
    _, data, _ = await post(http, url + "/completions", cmpl_body(max_tokens=200, echo=True, suffix=" end"))
    assert data["choices"][0]["text"] == LONG + full
    # prompts x n, in order, each choice its own answer
    _, data, _ = await post(http, url + "/completions", cmpl_body(prompt=["a", "b"], n=2, best_of=3, max_tokens=200))
    texts = [c["text"] for c in data["choices"]]
    assert [c["index"] for c in data["choices"]] == [0, 1, 2, 3]
    assert texts == [sim_chat_text([{"role": "user", "content": p}], choice=j) for p in "ab" for j in range(2)]
    assert data["usage"]["prompt_tokens"] == 2


async def test_completions_logprobs(make_sim: Factory, http: aiohttp.ClientSession) -> None:
    _, url = await make_sim()
    _, data, _ = await post(http, url + "/completions", cmpl_body(logprobs=3, max_tokens=10))
    c = data["choices"][0]
    lp = c["logprobs"]
    assert set(lp) == {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == len(lp["text_offset"]) == 10
    assert "".join(lp["tokens"]) == c["text"]
    assert all(len(t) == 3 and max(t.values()) <= 0 for t in lp["top_logprobs"])
    assert lp["text_offset"][0] == 0 and lp["text_offset"][1] == len(lp["tokens"][0])
    _, data, _ = await post(http, url + "/completions", cmpl_body(logprobs=0, echo=True, max_tokens=5))
    lp = data["choices"][0]["logprobs"]
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None  # the first echoed token
    assert "".join(lp["tokens"]) == data["choices"][0]["text"]


async def test_completions_stream(make_sim: Factory, http: aiohttp.ClientSession) -> None:
    _, url = await make_sim()
    body = cmpl_body(max_tokens=200, n=2)
    _, whole, _ = await post(http, url + "/completions", body)
    async with http.post(
        url + "/completions", json={**body, "stream": True, "stream_options": {"include_usage": True}}
    ) as r:
        events = [d for _, d in await _events(r)]
    assert events[-1] == "[DONE]" and events[-2]["usage"] == whole["usage"]
    for i in range(2):
        chunks = [e["choices"][0] for e in events[:-2] if e["choices"][0]["index"] == i]
        assert "".join(ch["text"] for ch in chunks) == whole["choices"][i]["text"]
        assert chunks[-1]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"logprobs": 6}, "logprobs"),
        ({"logprobs": True}, "logprobs"),
        ({"n": 3, "best_of": 2}, "best_of"),
        ({"best_of": 2, "stream": True}, "best_of"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": 5}, "stop"),
        ({"prompt": None}, "prompt"),
        ({"prompt": [1, 2]}, "prompt"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"messages": []}, "messages"),
    ],
)
async def test_completions_bad_params(
    make_sim: Factory, http: aiohttp.ClientSession, extra: dict[str, Any], param: str
) -> None:
    _, url = await make_sim()
    status, data, _ = await post(http, url + "/completions", cmpl_body(**extra))
    _assert_400(status, data, param)


async def test_completions_refuses_chat_models_when_strict(make_sim: Factory, http: aiohttp.ClientSession) -> None:
    _, url = await make_sim(strict_models=True)
    status, data, _ = await post(http, url + "/completions", cmpl_body(model="gpt-4o-mini"))
    assert status == 404 and data["error"]["param"] == "model" and "chat model" in data["error"]["message"]
    assert (await post(http, url + "/completions", cmpl_body()))[0] == 200


# ----- /v1/images/generations


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG, after checking its signature, chunk CRCs and that its data inflates."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, size, idat = 8, (0, 0), b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        tag, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])[0] == zlib.crc32(tag + body)
        if tag == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif tag == b"IDAT":
            idat += body
        pos += 12 + length
    w, h = size
    assert len(zlib.decompress(idat)) == h * (1 + 3 * w)
    return w, h


async def test_images_per_model(make_sim: Factory, http: aiohttp.ClientSession) -> None:
    _, url = await make_sim()
    body = {"model": "dall-e-2", "prompt": "a red bicycle", "n": 2, "size": "256x256"}
    s, a, _ = await post(http, url + "/images/generations", body)
    _, b, _ = await post(http, url + "/images/generations", body)
    assert s == 200 and a["data"] == b["data"] and set(a) == {"created", "data"}
    urls = [d["url"] for d in a["data"]]
    assert len(set(urls)) == 2 and all("revised_prompt" not in d for d in a["data"])
    async with aiohttp.ClientSession() as anon, anon.get(urls[0]) as r:  # image URLs need no key
        assert r.status == 200 and r.content_type == "image/png"
        from_url = await r.read()
    assert png_size(from_url) == (8, 8)
    # the same request as base64: the same bytes
    _, c, _ = await post(http, url + "/images/generations", {**body, "response_format": "b64_json"})
    assert base64.b64decode(c["data"][0]["b64_json"]) == from_url
    s, d3, _ = await post(
        http,
        url + "/images/generations",
        {"model": "dall-e-3", "prompt": "a red bicycle", "size": "1792x1024", "quality": "hd", "style": "natural"},
    )
    assert s == 200 and "a red bicycle" in d3["data"][0]["revised_prompt"] and "url" in d3["data"][0]
    s, g, _ = await post(
        http,
        url + "/images/generations",
        {
            "model": "gpt-image-1",
            "prompt": "a red bicycle",
            "n": 3,
            "quality": "low",
            "background": "transparent",
            "output_format": "png",
        },
    )
    assert s == 200 and len(g["data"]) == 3 and all(set(d) == {"b64_json"} for d in g["data"])
    assert g["usage"]["output_tokens"] == 3 * 272 and g["background"] == "transparent"
    assert len({d["b64_json"] for d in g["data"]}) == 3


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "dall-e-3", "prompt": "x", "n": 2}, "n"),
        ({"model": "dall-e-2", "prompt": "x", "n": 11}, "n"),
        ({"model": "dall-e-2", "prompt": "x", "size": "1792x1024"}, "size"),
        ({"model": "dall-e-3", "prompt": "x", "size": "512x512"}, "size"),
        ({"model": "gpt-image-1", "prompt": "x", "size": "1792x1024"}, "size"),
        ({"model": "dall-e-3", "prompt": "x", "quality": "high"}, "quality"),
        ({"model": "gpt-image-1", "prompt": "x", "quality": "hd"}, "quality"),
        ({"model": "dall-e-2", "prompt": "x", "style": "vivid"}, "style"),
        ({"model": "dall-e-3", "prompt": "x", "style": "pop"}, "style"),
        ({"model": "gpt-image-1", "prompt": "x", "response_format": "url"}, "response_format"),
        ({"model": "dall-e-3", "prompt": "x", "response_format": "png"}, "response_format"),
        ({"model": "dall-e-3", "prompt": "x", "background": "transparent"}, "background"),
        ({"model": "gpt-image-1", "prompt": "x", "output_format": "gif"}, "output_format"),
        ({"model": "dall-e-2", "prompt": "x" * 1001}, "prompt"),
        ({"model": "dall-e-3", "prompt": "x" * 4001}, "prompt"),
        ({"model": "dall-e-3"}, "prompt"),
        ({"model": "dall-e-3", "prompt": ""}, "prompt"),
        ({"model": "midjourney", "prompt": "x"}, "model"),
        ({"model": "dall-e-2", "prompt": "x", "seed": 1}, "seed"),
    ],
)
async def test_images_bad_params(
    make_sim: Factory, http: aiohttp.ClientSession, body: dict[str, Any], param: str
) -> None:
    _, url = await make_sim()
    status, data, _ = await post(http, url + "/images/generations", body)
    _assert_400(status, data, param)


async def test_images_per_minute_limit(make_sim: Factory, http: aiohttp.ClientSession) -> None:
    sim, url = await make_sim(default_limits=KeyLimits(ipm=5, rpm=100), window_s=3600)
    statuses = []
    for n in (2, 2, 2, 1):
        s, data, _ = await post(http, url + "/images/generations", {"prompt": f"cat {n}", "n": n})
        statuses.append(s)
        if s == 429:
            refused = data
    assert statuses == [200, 200, 429, 200]  # 4 used + 2 > 5; then 4 + 1 fits
    assert (
        refused["error"]["code"] == "rate_limit_exceeded"
        and "images per min (IPM): Limit 5, Used 4" in (refused["error"]["message"])
    )
    assert (await post(http, url + "/images/generations", {"prompt": "one more"}))[0] == 429
    # chat is not counted in images, and the refused image requests consumed no request of the rpm
    assert (
        await post(
            http, url + "/chat/completions", {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        )
    )[0] == 200
    assert [r.status for r in sim.records] == [200, 200, 429, 200, 429, 200]


async def test_image_downloads_fail_transiently(make_sim: Factory, http: aiohttp.ClientSession) -> None:
    _, url = await make_sim(image_download_failures=2)
    _, data, _ = await post(http, url + "/images/generations", {"prompt": "a boat", "n": 2})
    first, second = (d["url"] for d in data["data"])
    statuses = []
    for u in (first, first, first, second):
        async with http.get(u) as r:
            statuses.append(r.status)
            body = await r.read()
    assert statuses == [503, 503, 200, 503]  # counted per image
    async with http.get(first) as r:
        assert r.status == 200 and png_size(await r.read()) == (8, 8)
    assert body == b"simulated download failure"


async def test_models_lists_the_new_endpoints_models(make_sim: Factory, http: aiohttp.ClientSession) -> None:
    _, url = await make_sim()
    async with http.get(url + "/models") as r:
        data = await r.json()
    ids = {m["id"] for m in data["data"]}
    assert {"gpt-4o-mini", "gpt-3.5-turbo-instruct", "dall-e-2", "dall-e-3", "gpt-image-1"} <= ids
    assert all(set(m) == {"id", "object", "created", "owned_by"} and m["object"] == "model" for m in data["data"])
