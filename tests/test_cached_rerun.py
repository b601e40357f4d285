"""The cached re-run's shortcuts keep behaviour: a replayed answer is the result the long way gives, a chat
draft is counted before it is sent, records are what `flatten_result` writes, input rows are what polars
gives, and a run the cache answers whole opens no HTTP session."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import json
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest

from pipeline import transport
from pipeline.cache import canonical_json
from pipeline.calls import Reply
from pipeline.endpoints.chat import ChatRuntime
from pipeline.errors import RequestError
from pipeline.executor import Executor, RunOptions, _rows
from pipeline.plan import build_plan
from pipeline.records import StepResult
from pipeline.session import LazySession
from pipeline.sinks import flatten_result
from pipeline.sources import ROW

from .conftest import output, run_job, write_job
from .test_label import LABELS, SCHEMA, SYSTEM, USER, job_file

NOWHERE = "http://127.0.0.1:9/v1"  # never contacted: these tests only build requests and results

STEPS: dict[str, dict[str, Any]] = {
    "text": {"name": "label", "messages": [SYSTEM, USER], "params": {"max_tokens": 5}},
    "schema": {"name": "review", "messages": [SYSTEM, USER], "params": {"max_tokens": 300}, "response_schema": SCHEMA},
    "schema_keep_raw": {
        "name": "review",
        "messages": [SYSTEM, USER],
        "params": {"max_tokens": 300},
        "response_schema": SCHEMA,
        "keep_raw": True,
    },
    "labels": {"name": "sentiment", "messages": [SYSTEM, USER], "params": {"max_tokens": 20}, "labels": LABELS},
    "two_choices": {"name": "label", "messages": [SYSTEM, USER], "params": {"max_tokens": 5, "n": 2}},
    "logprobs": {"name": "label", "messages": [SYSTEM, USER], "params": {"max_tokens": 5, "logprobs": True}},
}

GOOD_JSON = json.dumps(
    {
        "sentiment": "positive",
        "score": 0.9,
        "stars": 5,
        "spam": False,
        "topics": ["value"],
        "aspect": {"name": "price", "polarity": "positive"},
        "note": None,
    }
)
USAGE = {"prompt_tokens": 31, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": 8}}


def body(*messages: dict[str, Any], usage: dict[str, Any] | None = USAGE, finish: str = "stop") -> bytes:
    choices = [{"index": i, "message": m, "finish_reason": finish} for i, m in enumerate(messages)]
    return orjson.dumps({"id": "x", "choices": choices, **({"usage": usage} if usage is not None else {})})


def text(content: Any, **more: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content, **more}


# (body, whether replay must take it for a one-choice step without log-probabilities)
BODIES: dict[str, tuple[bytes, bool]] = {
    "plain": (body(text("positive")), True),
    "label_variant": (body(text(" Positive ")), True),
    "json": (body(text(GOOD_JSON)), True),
    "no_usage": (body(text("positive"), usage=None), False),
    "no_cached_detail": (body(text("negative"), usage={"prompt_tokens": 9, "completion_tokens": 1}), True),
    "two_choices": (body(text("positive"), text("neutral")), False),
    "refusal": (body(text(None, refusal="I cannot help with that.")), False),
    "tool_call": (body(text(None, tool_calls=[{"id": "c", "type": "function"}]), finish="tool_calls"), False),
    "filtered": (body(text(None), finish="content_filter"), False),
    "not_json": (body(text("this is not json")), False),
    "error_in_200": (orjson.dumps({"error": {"message": "overloaded", "type": "server_error"}}), False),
    "broken": (b'{"choices": [', False),
}


def runtime(tmp_path: Path, config: str) -> ChatRuntime:
    tmp_path.mkdir(parents=True, exist_ok=True)
    plan = build_plan(job_file(tmp_path, NOWHERE, [STEPS[config]], rows=3))
    rt = plan.steps[0]
    assert isinstance(rt, ChatRuntime)
    return rt


def the_long_way(rt: ChatRuntime, first: Any, raw: bytes) -> StepResult | None | type[RequestError]:
    try:
        parsed = rt.parse(raw)
    except RequestError:
        return RequestError
    done = rt.settle(first, Reply(parsed, 0, True))
    return None if done is None else done.result


@pytest.mark.parametrize("config", sorted(STEPS))
def test_a_replayed_answer_is_the_result_the_long_way_gives(tmp_path: Path, config: str) -> None:
    rt = runtime(tmp_path, config)
    row = {"review_id": "r1", "text": "Great value (#1)"}
    draft, counted = rt.draft(row), rt.prepare(row)
    simple = config not in ("two_choices", "logprobs")
    taken = 0
    for name, (raw, common) in BODIES.items():
        long = the_long_way(rt, draft, raw)
        assert long == the_long_way(rt, counted, raw), f"{config}/{name}: a draft settles like the request sent"
        try:
            short = rt.replay(draft, raw)
        except RequestError:
            assert long is RequestError, f"{config}/{name}: replay raised where parse does not"
            continue
        if short is None:
            # the long way is left to decide; the common answer must not be left to it
            valid = isinstance(long, StepResult) and long.status == "ok"
            assert not (common and simple and valid), f"{config}/{name}: the common answer was not replayed"
            continue
        taken += 1
        assert isinstance(long, StepResult) and short == long, f"{config}/{name}"
    assert (taken > 0) == simple


def test_an_answer_without_usage_is_counted_from_the_draft(tmp_path: Path) -> None:
    rt = runtime(tmp_path, "text")
    row = {"review_id": "r1", "text": "Great value (#1)"}
    result = the_long_way(rt, rt.draft(row), BODIES["no_usage"][0])
    assert isinstance(result, StepResult) and result.tokens_estimated
    assert result.prompt_tokens == rt.prepare(row).prompt_estimate > 0


def test_a_draft_is_counted_before_it_is_sent(tmp_path: Path) -> None:
    for config in ("text", "schema", "labels", "two_choices"):
        rt = runtime(tmp_path / config, config)
        row = {"review_id": "r1", "text": "这个产品很好 (#1)"}
        draft, counted = rt.draft(row), rt.prepare(row)
        assert not draft.counted and counted.counted
        assert draft.cache_key == counted.cache_key and draft.request == counted.request
        sent = rt.current(draft)
        assert sent == counted and sent.tokens > sent.prompt_estimate > 0
        assert rt.current(counted) is counted


def test_records_are_what_flatten_result_writes(tmp_path: Path) -> None:
    plan = build_plan(job_file(tmp_path, NOWHERE, [STEPS["schema"], {**STEPS["text"], "name": "second"}], rows=3))
    ex = Executor(plan, RunOptions())
    engine = ex._engine_for(ex._clients(LazySession(4)), 64)
    ok = StepResult("ok", {"review_sentiment": "positive", "review__repairs": 0}, attempts=1, prompt_tokens=20)
    bad = StepResult("error", {}, error="boom", attempts=3)
    for results in ([ok, bad], [bad, StepResult.skipped("step `review` did not succeed")]):
        row = {"review_id": "r7", "text": "t"}
        record = engine._record(7, row, results)
        expected: dict[str, Any] = {c: row.get(c) for c in plan.carried_columns}
        expected[ROW] = 7
        for step, r in zip(engine.steps, results, strict=True):
            flatten_result(step.name, r, [f.name for f in step.output_fields()], expected)
            charge = engine.charges.get(step.name)
            expected[f"{step.name}__cost"] = None if charge is None else step.row_cost(r, charge.price)
        assert list(record.items()) == list(expected.items())
        assert set(record) <= set(plan.part_schema.names)


def test_input_rows_are_what_polars_gives_row_by_row() -> None:
    df = pl.DataFrame(
        {
            ROW: [0, 1],
            "a": [1, None],
            "s": ["x", None],
            "d": [datetime.date(2020, 1, 1), None],
            "t": [datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC), None],
            "l": [[1, 2], None],
            "st": [{"p": 1, "q": "z"}, None],
            "dec": [decimal.Decimal("1.5"), None],
            "b": [b"x", None],
            "f": [1.5, float("nan")],
        }
    )
    expected = [(r.pop(ROW), r) for r in df.iter_rows(named=True)]
    assert repr(_rows(df)) == repr(expected)
    assert _rows(pl.DataFrame({ROW: [0, 1]})) == [(0, {}), (1, {})]


def test_a_run_the_cache_answers_opens_no_session(tmp_path: Path, sim: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[int] = []
    real = transport.new_session

    def counting(max_connections: int) -> Any:
        opened.append(max_connections)
        return real(max_connections)

    monkeypatch.setattr(transport, "new_session", counting)
    job = write_job(tmp_path, sim.url, rows=25)
    first = run_job(job)
    assert first.stats.requests == 25 and len(opened) == 1
    sent = len(sim.records)
    before = output(tmp_path)
    again = run_job(job, fresh=True)
    assert len(sim.records) == sent and again.stats.requests == 0 and again.stats.cache_hits == 25
    assert len(opened) == 1, "a run answered by the cache whole opened an HTTP session"
    after = output(tmp_path)
    volatile = ["label__cached", "label__attempts"]  # how the answer was obtained this time
    assert after.drop(volatile).equals(before.drop(volatile))
    assert after["label__cached"].all() and (after["label__cost"] == before["label__cost"]).all()


# Steps whose first request the quick key must key exactly as `draft` does: every template shape (text and
# `row.col` pieces, a Jinja expression, a column used twice, a templated system message), every
# structured-output form (json_object and prompt rewrite the system message), several choices.
KEYED: dict[str, dict[str, Any]] = {
    **STEPS,
    **{
        f"schema_via_{via}": {**STEPS["schema"], "structured_via": via}
        for via in ("json_schema", "json_object", "tools", "prompt")
    },
    "templated_system": {
        "name": "label",
        "messages": [{"role": "system", "content": "Reviews of {{ row.review_id }}"}, USER],
        "params": {"max_tokens": 5},
    },
    "templated_system_prompt_form": {
        "name": "review",
        "messages": [{"role": "system", "content": "About {{ row.review_id }}:"}, USER],
        "params": {"max_tokens": 300},
        "response_schema": SCHEMA,
        "structured_via": "prompt",
    },
    "jinja_and_twice": {
        "name": "label",
        "messages": [
            SYSTEM,
            {"role": "user", "content": "{{ row.text | upper }} / {{ row.text }} / {{ row.review_id }}"},
            {"role": "assistant", "content": "{{ row.text }}"},
            {"role": "user", "content": "again: {{ row['text'] }}"},
        ],
        "params": {"max_tokens": 5, "temperature": 0.5, "stop": ["\n", '"}']},
    },
}

# texts that escape differently, look like the body around them, or like the key's own markers
TRICKY = [
    "",
    " ",
    'a"b',
    'a\\"b',
    "a\nb",
    "a\\nb",
    '", "role": "system", "content": "',
    '"}, {"role": "user", "content": "x',
    "\x00\x1f\x7f",
    "\ue000pipeline-slot-1-0\ue001",
    "\ue000",
    "这个产品很好 😀",
    "\u2028\u2029",
    "</script>",
]


TEXTS = [*TRICKY, *(a + b for a in TRICKY[:6] for b in TRICKY[:6])]


@pytest.mark.parametrize("config", sorted(KEYED))
def test_a_quick_key_is_the_key_of_the_request_it_stands_for(tmp_path: Path, config: str) -> None:
    rt = runtime_for(tmp_path, KEYED[config])
    bodies: dict[str, bytes] = {}  # key -> the body it keys
    texts: dict[str, set[Any]] = {}  # quick key -> the texts it was computed for
    for text_ in TEXTS:
        for rid in ("r1", 'r"2'):
            row = {"review_id": rid, "text": text_}
            key, draft = rt.quick_key(row), rt.draft(row)
            assert key is None or key == draft.cache_key, f"{config}: {row!r}"
            assert draft.cache_key is not None and draft.request.data is not None
            if key is not None:
                texts.setdefault(key, set()).add(text_)
            # no two different requests share a key
            body = rt._body(draft.messages, draft.n, draft.form)  # the body as keyed (unstreamed)
            assert bodies.setdefault(draft.cache_key, canonical_json(body)) == canonical_json(body), config
    if config == "templated_system_prompt_form":  # the form rewrites a templated text: no quick key
        assert not texts
    else:  # every text its own key
        assert len(texts) >= len(set(TEXTS)) and all(len(t) == 1 for t in texts.values()), config


@pytest.mark.parametrize("config", ["text", "jinja_and_twice", "schema_via_tools"])
def test_a_row_that_does_not_render_has_no_quick_key(tmp_path: Path, config: str) -> None:
    rt = runtime_for(tmp_path, KEYED[config])
    for row in ({"review_id": "r1", "text": None}, {"review_id": "r1"}, {"review_id": "r1", "text": "\ud800"}):
        assert rt.quick_key(row) is None
        with pytest.raises(Exception):  # noqa: B017 - whichever way `draft` fails, it decides the row
            rt.draft(row)
    # other values render as text, the quick key with them
    for value in (7, 2.5, True, datetime.date(2020, 1, 2)):
        row = {"review_id": "r1", "text": value}
        assert rt.quick_key(row) == rt.draft(row).cache_key is not None


def runtime_for(tmp_path: Path, step: dict[str, Any]) -> ChatRuntime:
    tmp_path.mkdir(parents=True, exist_ok=True)
    plan = build_plan(job_file(tmp_path, NOWHERE, [step], rows=3))
    rt = plan.steps[0]
    assert isinstance(rt, ChatRuntime)
    return rt


def test_a_result_from_the_cache_is_the_one_the_constructor_makes() -> None:
    values = {"label": "positive", "label__finish_reason": "stop"}
    quick = StepResult.from_cache(values, 31, 4, 8)
    made = StepResult("ok", values, attempts=0, prompt_tokens=31, completion_tokens=4, cached=True, cached_tokens=8)
    assert quick == made and repr(quick) == repr(made) and type(quick) is StepResult
    assert quick.metrics == {} and quick.metrics is not StepResult.from_cache(values, 1, 1, 0).metrics
    with pytest.raises(dataclasses.FrozenInstanceError):
        quick.status = "error"  # type: ignore[misc]
    assert dataclasses.replace(quick, attempts=2) == dataclasses.replace(made, attempts=2)
