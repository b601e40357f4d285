"""Answer schemas without a server: loading, strict mode, Arrow types, judging answers, SSE assembly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from pipeline.endpoints.chat import label_probability
from pipeline.endpoints.sse import ChatStream
from pipeline.errors import JobError, RateLimited, TransientError
from pipeline.job.load import load_job
from pipeline.structured import Checker, decode_json, label_schema, load_schema, norm_label, strict_issues
from pipeline.structured.arrow import ConversionError, describe, field_types, to_arrow_value

ROOT = Path(__file__).resolve().parents[1]

SENTIMENT = json.loads((ROOT / "schemas" / "sentiment.schema.json").read_text())


def checker(schema: dict[str, Any], labels: list[str] | None = None) -> Checker:
    fields = field_types(schema)
    assert fields is not None
    return Checker(schema, fields, labels)


# ----- loading and strict mode


def test_load_schema_file_inline_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.json").write_text(json.dumps({"type": "object", "properties": {"a": {"type": "string"}}}))
    assert load_schema("s.json", "step `x`")["properties"]["a"] == {"type": "string"}
    assert load_schema({"type": "object"}, "step `x`") == {"type": "object"}
    with pytest.raises(JobError, match=r"schema file missing.json not found"):
        load_schema("missing.json", "step `x`")
    (tmp_path / "bad.json").write_text('{"type": "object",\n "properties": {,}}')
    with pytest.raises(JobError, match=r"bad.json:2:\d+: invalid JSON"):
        load_schema("bad.json", "step `x`")
    with pytest.raises(JobError, match=r"not a valid JSON Schema: .*at /properties/a"):
        load_schema({"type": "object", "properties": {"a": {"type": "strnig"}}}, "step `x`")


def test_sample_schemas_are_strict() -> None:
    for name in ("sentiment", "entities"):
        schema = json.loads((ROOT / "schemas" / f"{name}.schema.json").read_text())
        assert strict_issues(schema) == [], name
    assert strict_issues(label_schema(["a", "b"])) == []


def test_strict_issues_name_keyword_and_pointer() -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 2},
            "tags": {
                "type": "array",
                "items": {"type": "object", "properties": {"t": {"type": "string"}}, "required": ["t"]},
            },
            "kind": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
            "note": {"type": "string", "format": "hex-color"},
        },
        "required": ["name", "tags", "kind"],
        "additionalProperties": False,
    }
    found = {(i.pointer, i.keyword) for i in strict_issues(schema)}
    assert found == {
        ("/properties/name", "minLength"),
        ("/properties/tags/items", "additionalProperties"),
        ("/properties/kind", "oneOf"),
        ("/properties/note", "format"),
        ("", "required"),  # `note` is not required
    }
    text = "\n".join(str(i) for i in strict_issues(schema))
    assert "/properties/kind: `oneOf`: not supported in strict mode; use `anyOf` instead" in text
    assert "'note' not in `required`" in text
    root = strict_issues({"anyOf": [{"type": "object"}]})
    assert {i.keyword for i in root} >= {"anyOf", "type"}


# ----- Arrow types and values


def test_arrow_types_from_schema() -> None:
    cols = dict(field_types(SENTIMENT) or [])
    assert cols["sentiment"].type == pa.string()
    assert cols["stars"].type == pa.int64()
    assert cols["confidence"].type == pa.float64()
    assert cols["would_recommend"].type == pa.bool_()
    assert cols["aspects"].type == pa.list_(
        pa.struct([("aspect", pa.string()), ("polarity", pa.string()), ("quote", pa.string())])
    )
    schema = {
        "type": "object",
        "$defs": {"pt": {"type": "object", "properties": {"x": {"type": "number"}, "y": {"type": "integer"}}}},
        "properties": {
            "p": {"$ref": "#/$defs/pt"},
            "mixed": {"type": ["string", "integer"]},
            "num": {"anyOf": [{"type": "integer"}, {"type": "number"}, {"type": "null"}]},
            "free": {"type": "object"},
            "tree": {"$ref": "#"},
            "flags": {"type": "array", "items": {"type": "boolean"}},
            "e": {"enum": [1, 2, 3]},
        },
    }
    cols = dict(field_types(schema) or [])
    assert cols["p"].type == pa.struct([("x", pa.float64()), ("y", pa.int64())])
    assert cols["mixed"].kind == "json" and cols["free"].kind == "json"
    assert cols["tree"].kind == "json"  # recursion is stored as JSON text
    assert cols["num"].type == pa.float64()
    assert cols["flags"].type == pa.list_(pa.bool_())
    assert cols["e"].type == pa.int64()
    assert field_types({"type": "array", "items": {"type": "string"}}) is None


def test_values_fit_their_columns() -> None:
    col = describe(SENTIMENT, SENTIMENT)
    value = {
        "sentiment": "positive",
        "stars": 5.0,
        "confidence": 1,
        "would_recommend": None,
        "aspects": [{"aspect": "price", "polarity": "negative", "quote": None}],
    }
    out = to_arrow_value(col, value)
    assert out["stars"] == 5 and isinstance(out["stars"], int)
    assert out["confidence"] == 1.0 and isinstance(out["confidence"], float)
    pa.array([out], type=col.type)  # really fits
    with pytest.raises(ConversionError, match="/stars: integer .* does not fit in 64 bits"):
        to_arrow_value(col, {**value, "stars": 2**70})
    assert to_arrow_value(describe({"type": "object"}, {}), {"b": [1]}) == '{"b": [1]}'


# ----- judging answers


def test_decode_json() -> None:
    assert decode_json('```json\n{"a": 1}\n```') == ({"a": 1}, None)
    assert decode_json(' {"a": 1} ') == ({"a": 1}, None)
    value, err = decode_json('Sure! {"a": 1')
    assert value is None and err is not None and "line 1 column 1" in err
    assert decode_json("")[1] == "the answer is empty"


def test_checker_validates_and_types() -> None:
    c = checker(SENTIMENT)
    ok = c.judge_text(
        json.dumps({"sentiment": "negative", "stars": 1, "confidence": 0.9, "would_recommend": False, "aspects": []})
    )
    assert ok.ok and ok.values == {
        "sentiment": "negative",
        "stars": 1,
        "confidence": 0.9,
        "would_recommend": False,
        "aspects": [],
    }
    bad = c.judge_text(json.dumps({"sentiment": "meh", "stars": 9, "confidence": 0.5, "would_recommend": None}))
    assert not bad.ok and bad.reason is not None and bad.feedback is not None
    assert "at /sentiment: 'meh' is not one of" in bad.reason
    assert "at /stars: 9 is greater than the maximum of 5" in bad.reason
    assert "'aspects' is a required property" in bad.feedback
    broken = c.judge_text('{"sentiment": "positive", ')
    assert broken.reason is not None and broken.reason.startswith("invalid JSON: ")
    # enum spellings that differ only by case or spaces are folded before validation
    folded = c.judge_text(
        json.dumps(
            {
                "sentiment": " Positive\n",
                "stars": 4,
                "confidence": 0.5,
                "would_recommend": True,
                "aspects": [{"aspect": "PRICE", "polarity": "positive", "quote": None}],
            }
        )
    )
    assert folded.ok and folded.values is not None
    assert folded.values["sentiment"] == "positive" and folded.values["aspects"][0]["aspect"] == "price"


@pytest.mark.parametrize(
    "answer",
    [
        '{"label": "positive"}',
        '{"label": "Positive"}',
        '{"label": " POSITIVE\\n"}',
        "positive",
        " Positive\n",
        "POSITIVE.",
        '"positive"',
        "`positive`",
    ],
)
def test_label_normalisation(answer: str) -> None:
    c = checker(label_schema(["positive", "negative", "neutral"]), ["positive", "negative", "neutral"])
    j = c.judge_text(answer)
    assert j.ok and j.values == {"label": "positive"}, j.reason


def test_labels_keep_their_spelling_and_reject_others() -> None:
    labels = ["Billing", "Tech support"]
    c = checker(label_schema(labels), labels)
    assert (c.judge_text("tech   SUPPORT").values or {})["label"] == "Tech support"
    for answer in ('{"label": "refund"}', "It is about billing, I think", '{"other": 1}'):
        j = c.judge_text(answer)
        assert not j.ok and j.feedback, answer
    assert "not one of the labels: 'refund'" in (c.judge_text('{"label": "refund"}').reason or "")
    assert norm_label(' "Positive."\n') == "positive"


def test_label_probability_from_token_bytes() -> None:
    content = '{"label":"négatif"}'
    data = content.encode()
    pieces = [data[:2], data[2:9], data[9:12], data[12:16], data[16:]]  # "é" split across tokens
    lps = [-0.1, -0.2, -0.5, -0.25, -0.01]
    entries = [
        {"token": p.decode("utf-8", "replace"), "logprob": lp, "bytes": list(p)}
        for p, lp in zip(pieces, lps, strict=True)
    ]
    prob = label_probability(entries, content, "négatif")
    assert prob == pytest.approx(2.718281828 ** (-0.5 - 0.25 - 0.01))
    assert label_probability(entries, content, "positif") is None


# ----- SSE assembly


def _chunk(delta: dict[str, Any], finish: str | None = None, index: int = 0, **extra: Any) -> bytes:
    return json.dumps(
        {
            "id": "c1",
            "model": "m",
            "object": "chat.completion.chunk",
            "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
            **extra,
        }
    ).encode()


def test_stream_assembles_text_tools_and_usage() -> None:
    s = ChatStream()
    s.feed(_chunk({"role": "assistant", "content": ""}))
    s.feed(_chunk({"content": "Hel"}))
    s.feed(_chunk({"content": "lo"}))
    s.feed(_chunk({}, "stop"))
    s.feed(
        _chunk(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "f", "arguments": ""},
                    }
                ],
            },
            index=1,
        )
    )
    s.feed(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}, index=1))
    s.feed(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]}, index=1))
    s.feed(_chunk({}, "tool_calls", index=1))
    s.feed(json.dumps({"id": "c1", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7}}).encode())
    body = json.loads(s.finish())
    assert body["object"] == "chat.completion" and body["usage"]["completion_tokens"] == 7
    first, second = body["choices"]
    assert first["message"]["content"] == "Hello" and first["finish_reason"] == "stop"
    assert second["message"]["content"] is None
    assert second["message"]["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    ]


def test_stream_without_finish_reason_is_truncated() -> None:
    s = ChatStream()
    s.feed(_chunk({"role": "assistant", "content": ""}))
    s.feed(_chunk({"content": "partial"}))
    with pytest.raises(TransientError, match="cut before its finish_reason"):
        s.finish()
    with pytest.raises(TransientError, match="without any answer"):
        ChatStream().finish()
    with pytest.raises(RateLimited):
        ChatStream().feed(b'{"error": {"message": "slow down", "type": "rate_limit_exceeded"}}')


# ----- the job file


STEP = """\
version: 1
name: t
input: {path: data.csv}
steps:
  - name: s
    kind: chat
    provider: sim
    model: gpt-4o-mini
    messages: [{role: user, content: "{{ row.text }}"}]
%s
output: {path: out.parquet}
"""


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            "    labels: [a, b]\n    response_schema: {type: object}",
            "sets response_schema and labels: choose one",
        ),
        ("    labels: [Positive, ' positive ']", "are the same once case and spaces are ignored"),
        ("    labels: [yes, no]", "label True is not text: YAML reads yes/no"),
        ("    params: {tools: []}", "params may not set tools: set tools on the step"),
        ("    params: {stream: maybe}", "params.stream must be true or false"),
        ("    params: {top_logprobs: 2}", "params.top_logprobs needs params.logprobs: true"),
        ("    strict: true", "sets strict, which only apply to structured answers"),
        (
            "    labels: [a, b]\n    params: {response_format: {type: json_object}}",
            "labels builds response_format",
        ),
        (
            "    tools: [{function: {name: f, parameters: {type: object}}}]\n    tool_choice: {function: {name: g}}",
            "tool_choice names 'g', which is not one of the tools (f)",
        ),
        ("    tools: [{function: {name: 'bad name', parameters: {}}}]", "must be 1-64 letters"),
    ],
)
def test_job_file_checks(tmp_path: Path, extra: str, message: str) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(STEP % extra)
    with pytest.raises(JobError) as exc:
        load_job(path)
    assert message in str(exc.value) and "job.yaml:" in str(exc.value)
