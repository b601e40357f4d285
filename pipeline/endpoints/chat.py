"""The `chat` step: one chat completion per row, re-asked while its answer is invalid; the answer's text,
or its checked fields, in the output columns."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import math
import uuid
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa

from ..cache import canonical_json, key_state, request_key
from ..calls import CallError, Reply
from ..errors import RequestError, RowError, StreamCut, TransientError
from ..job.model import ChatStep, StructuredVia
from ..records import Parsed, StepResult, Usage
from ..requests import HttpRequest
from ..templating import Template, compile_template
from ..tokens import Counter, chat_prompt_tokens
from .base import Done, Exchange, Prepared, StepRuntime, cached_tokens, load_json
from .chat_shape import TextShape, Verdict, build_shape
from .negotiate import FormChoice, ProviderQuirks, quirks_for, refuses_form
from .sse import ChatStream

ENDPOINT = "/chat/completions"
# Reserved for the completion when the job sets no max_tokens; usage corrects it afterwards.
DEFAULT_COMPLETION_RESERVE = 1024

_TOKEN = pa.struct([pa.field("token", pa.string()), pa.field("logprob", pa.float64())])


def logprobs_type(top: int) -> pa.DataType:
    """One choice's token log-probabilities: list<struct<token, logprob[, top_logprobs]>>."""
    if top:
        return pa.list_(pa.struct([*_TOKEN, pa.field("top_logprobs", pa.list_(_TOKEN))]))
    return pa.list_(_TOKEN)


@dataclass(frozen=True, slots=True)
class ChatAnswer(Parsed):
    """A chat completion judged choice by choice."""

    verdicts: tuple[Verdict, ...] = ()
    logprobs: tuple[list[dict[str, Any]] | None, ...] = ()
    confidence: tuple[float | None, ...] = ()


@dataclass(frozen=True, slots=True)
class _Ask(Prepared):
    """One chat request: the conversation as the dialogue knows it, and how it was put on the wire (the
    structured-output form and streaming), so it can be re-sent otherwise when the server refuses."""

    messages: tuple[dict[str, Any], ...] = ()  # without what the form adds
    n: int = 1
    form: StructuredVia | None = None  # None: the step asks for no schema-shaped answer
    streamed: bool = False
    # False for a draft (`ChatRuntime.draft`): `tokens` and `prompt_estimate` are not counted yet (a cached
    # answer never needs them); `current` counts them before the request is sent
    counted: bool = True


Outcome = Reply[ChatAnswer] | CallError
# the dialogue yields requests and receives, per request, the one actually sent and what came of it
Dialogue = Generator[list[_Ask], list[tuple[_Ask, Outcome]], tuple[StepResult, list[str]]]


class _Book:
    """Attempts and tokens over every request of a row's dialogue; `prompt_of` gives a request's own prompt
    count (reported when an answer has no usage)."""

    def __init__(self, prompt_of: Callable[[_Ask], int]) -> None:
        self.prompt_of = prompt_of
        self.attempts = 0
        self.prompt = 0
        self.completion = 0
        self.cached = True
        self.estimated = False
        self.cached_tokens = 0

    def add(self, ask: _Ask, reply: Reply[ChatAnswer]) -> None:
        self.attempts += reply.attempts
        self.cached = self.cached and reply.cached
        u = reply.parsed.usage
        if u is not None:
            self.prompt += self.prompt_of(ask) if u.estimated else u.prompt_tokens
            self.completion += u.completion_tokens
            self.cached_tokens += u.cached_tokens
            self.estimated = self.estimated or u.estimated


def label_probability(entries: list[dict[str, Any]], content: str, label: str) -> float | None:
    """exp(sum of the logprobs of the tokens that spell `label` in `content`), or None if not found."""
    data = content.encode()
    quoted = json.dumps(label, ensure_ascii=False).encode()
    start = data.find(quoted)
    if start >= 0:
        start, end = start + 1, start + len(quoted) - 1
    else:
        start = data.find(label.encode())
        end = start + len(label.encode())
    if start < 0:
        return None
    pos, total, hit = 0, 0.0, False
    for e in entries:
        raw = bytes(e["bytes"]) if isinstance(e.get("bytes"), list) else str(e.get("token", "")).encode()
        lo, pos = pos, pos + len(raw)
        if pos > start and lo < end:
            total += float(e.get("logprob") or 0.0)
            hit = True
    return math.exp(total) if hit and pos == len(data) else None


def _usage(obj: dict[str, Any]) -> tuple[int, int, int] | None:
    """(prompt, completion, cached prompt) tokens of a chat completion's usage; None without one."""
    usage = obj.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
        return (
            int(usage["prompt_tokens"]),
            int(usage.get("completion_tokens") or 0),
            cached_tokens(usage, "prompt_tokens_details"),
        )
    return None


class ChatRuntime(StepRuntime):
    def __init__(
        self, spec: ChatStep, cache_ns: str, count: Counter, structured_via: StructuredVia | None = None
    ) -> None:
        super().__init__(spec.name, spec.output_column, spec.provider, cache_ns)
        self.spec = spec
        self._count = count
        self._messages: list[tuple[str, Template]] = [
            (m.role, compile_template(m.content, f"step `{spec.name}`, messages[{i}].content"))
            for i, m in enumerate(spec.messages)
        ]
        self.shape = build_shape(spec)
        params = dict(spec.params)
        self._stream = bool(params.pop("stream", False))
        self._params = params
        max_tokens = params.get("max_tokens", params.get("max_completion_tokens"))
        self._completion_charge: int | None = int(max_tokens) if isinstance(max_tokens, int) else None
        self._reserve = self._completion_charge or DEFAULT_COMPLETION_RESERVE
        self._n = int(params.get("n", 1) or 1)
        self._logprobs = bool(params.get("logprobs"))
        self._top = int(params.get("top_logprobs") or 0)
        # the structured-output form: pinned by the step, else the provider's first choice, then negotiated
        self._pinned = spec.structured_via if self.shape.forms else None
        self._start: StructuredVia | None = (
            (spec.structured_via or structured_via or "json_schema") if self.shape.forms else None
        )
        self._extras: dict[StructuredVia | None, tuple[dict[str, Any], int]] = {}
        self.col_finish = f"{self.name}__finish_reason"
        self.col_raw = f"{self.name}__raw"
        self.col_repairs = f"{self.name}__repairs"
        self.col_logprobs = f"{self.name}__logprobs"
        self.col_confidence = f"{self.name}__confidence"
        self._labels = spec.labels is not None
        self._value_columns = [name for name, _ in self.shape.columns()]
        # a plain text step's one column (`replay` writes a text answer's values itself), else None
        self._text_column = self.shape.output if type(self.shape) is TextShape else None
        self._known_counts = {tpl.source: count(tpl.source) for _, tpl in self._messages if tpl.static}
        # per form: where a row's texts go in its first request's canonical body (`quick_key`)
        self._slots: dict[StructuredVia | None, tuple[hashlib._Hash, tuple[tuple[int, bytes], ...]] | None] = {}

    # ----------------------------------------------------------------- plan
    def templates(self) -> list[Template]:
        return [t for _, t in self._messages]

    def output_fields(self) -> list[pa.Field]:
        def per_choice(t: pa.DataType) -> pa.DataType:
            return pa.list_(t) if self._n > 1 else t

        fields = [pa.field(name, per_choice(t)) for name, t in self.shape.columns()]
        fields.append(pa.field(self.col_finish, per_choice(pa.string())))
        if self.shape.structured:
            fields.append(pa.field(self.col_raw, per_choice(pa.string())))
            fields.append(pa.field(self.col_repairs, pa.int32()))
        if self._logprobs:
            fields.append(pa.field(self.col_logprobs, per_choice(logprobs_type(self._top))))
            if self._labels:
                fields.append(pa.field(self.col_confidence, per_choice(pa.float64())))
        return fields

    def notes(self) -> list[str]:
        return self.shape.notes()

    def identity(self) -> str:
        return self.shape.identity()

    # ----------------------------------------------------------------- what was learned about the server
    def _quirks(self) -> ProviderQuirks | None:
        client = getattr(self, "client", None)  # bound by the executor; absent in `validate`
        return quirks_for(client, self.provider) if client is not None else None

    def _choice(self) -> FormChoice | None:
        if self._start is None:  # no schema-shaped answer asked: nothing to negotiate (the common case)
            return None
        q = self._quirks()
        if q is None:
            return None
        return q.form(self.spec.model, self._start, self._pinned)

    def _form(self) -> StructuredVia | None:
        choice = self._choice()
        return choice.form if choice is not None else self._start

    def _streaming(self) -> bool:
        if not self._stream:
            return False
        q = self._quirks()
        return not (q is not None and q.streams.off)

    def _extra(self, form: StructuredVia | None) -> tuple[dict[str, Any], int]:
        if form not in self._extras:
            fields = self.shape.request_fields(form) if form is not None else self.shape.request_fields()
            # schemas and tools count as prompt tokens too
            self._extras[form] = (fields, self._count(canonical_json(fields).decode()) if fields else 0)
        return self._extras[form]

    # ----------------------------------------------------------------- requests
    def _body(
        self, messages: list[dict[str, Any]] | tuple[dict[str, Any], ...], n: int, form: StructuredVia | None
    ) -> dict[str, Any]:
        """The body of a request for `messages` in `form`, unstreamed (what its cache key is made of)."""
        sent = self.shape.form_messages(list(messages), form) if form is not None else list(messages)
        body: dict[str, Any] = {"model": self.spec.model, "messages": sent, **self._params, **self._extra(form)[0]}
        if n != self._n:
            body["n"] = n
        return body

    def _ask(self, messages: list[dict[str, Any]] | tuple[dict[str, Any], ...], n: int, count: bool = True) -> _Ask:
        """The request for `messages` as the server takes it now (form, streaming); `count=False`: a draft,
        its prompt tokens left to count (`_counted`) when it is sent."""
        form = self._form() if self._start is not None else None  # (a step asking for text has no form)
        stream = self._stream and self._streaming()
        extra_tokens = self._extra(form)[1]
        body = self._body(messages, n, form)
        sent = body["messages"]
        # the cache key leaves streaming out: a streamed answer is stored as the body it assembles to
        blob = canonical_json(body)
        key = request_key(self.cache_ns, ENDPOINT, blob)
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
            blob = canonical_json(body)
        prompt = chat_prompt_tokens(sent, self._count, self._known_counts) + extra_tokens if count else 0
        return _Ask(
            HttpRequest(ENDPOINT, json_body=body, data=blob, stream=ChatStream if stream else None),
            tokens=prompt + self._reserve * n,
            cache_key=key,
            completion_charge=None if self._completion_charge is None else self._completion_charge * n,
            prompt_estimate=prompt,
            messages=tuple(messages),
            n=n,
            form=form,
            streamed=stream,
            counted=count,
        )

    def _prompt_of(self, ask: _Ask) -> int:
        """The prompt tokens of `ask` by our own count (as sent: with what its form adds)."""
        if ask.counted:
            return ask.prompt_estimate
        body = ask.request.json_body or {}
        return chat_prompt_tokens(body["messages"], self._count, self._known_counts) + self._extra(ask.form)[1]

    def _counted(self, ask: _Ask) -> _Ask:
        if ask.counted:
            return ask
        prompt = self._prompt_of(ask)
        return dataclasses.replace(ask, tokens=prompt + self._reserve * ask.n, prompt_estimate=prompt, counted=True)

    def _messages_for(self, row: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [{"role": role, "content": tpl.render(row)} for role, tpl in self._messages]

    def prepare(self, row: Mapping[str, Any]) -> _Ask:
        return self._ask(self._messages_for(row), self._n)

    def quick_key(self, row: Mapping[str, Any]) -> str | None:
        """`draft(row).cache_key` from the rendered texts alone: the canonical body with the texts in
        place of its slots (see `_key_slots`), hashed; None when the slots do not fit this step's body
        in its current form, or the row does not render (`draft` then says why)."""
        form = self._form() if self._start is not None else None
        if form in self._slots:
            slots = self._slots[form]
        else:
            slots = self._slots[form] = self._key_slots(form)
        if slots is None:
            return None
        start, cuts = slots
        try:
            if len(cuts) == 1:  # (the common step: one templated message)
                ((i, after),) = cuts
                blob = orjson.dumps(self._messages[i][1].render(row)) + after
            else:
                blob = b"".join(orjson.dumps(self._messages[i][1].render(row)) + after for i, after in cuts)
        except Exception:  # a null, a failing filter, a text JSON cannot carry: `draft` decides the row
            return None
        h = start.copy()
        h.update(blob)
        return h.hexdigest()

    def _key_slots(self, form: StructuredVia | None) -> tuple[hashlib._Hash, tuple[tuple[int, bytes], ...]] | None:
        """The first request's canonical body (`_body` in `form`) with a marker text in place of each
        templated message, cut at the markers: (the key's sha256 state over everything before the first
        marker, then per marker in body order: its message and the bytes up to the next marker or the
        end). The body is JSON: a text goes in as `orjson.dumps(text)` wherever its marker's
        `orjson.dumps(marker)` stood, the rest is the same bytes for every row. None (no shortcut) when a
        marker is not found whole and exactly once (the form rewrote a templated text), or a kind built
        on this one sends another body."""
        if type(self)._ask is not ChatRuntime._ask or type(self)._body is not ChatRuntime._body:
            return None
        markers = {
            i: f"\ue000pipeline-slot-{i}-{uuid.uuid4().hex}\ue001"
            for i, (_, tpl) in enumerate(self._messages)
            if not tpl.static
        }
        if not markers:
            return None
        messages = [
            {"role": role, "content": markers.get(i, tpl.source)} for i, (role, tpl) in enumerate(self._messages)
        ]
        blob = canonical_json(self._body(messages, self._n, form))
        found = []
        for i, marker in markers.items():
            token = orjson.dumps(marker)
            if blob.count(token) != 1:
                return None
            found.append((blob.index(token), i, len(token)))
        found.sort()
        cuts = []
        for k, (at, i, size) in enumerate(found):
            end = found[k + 1][0] if k + 1 < len(found) else len(blob)
            cuts.append((i, blob[at + size : end]))
        start = key_state(self.cache_ns, ENDPOINT).copy()
        start.update(blob[: found[0][0]])
        return start, tuple(cuts)

    def draft(self, row: Mapping[str, Any]) -> _Ask:
        return self._ask(self._messages_for(row), self._n, count=False)

    # ----------------------------------------------------------------- answers
    def _logprob_rows(self, lp: Any) -> list[dict[str, Any]] | None:
        if not isinstance(lp, dict) or not isinstance(lp.get("content"), list):
            return None

        def entry(e: dict[str, Any]) -> dict[str, Any]:
            return {"token": str(e.get("token", "")), "logprob": float(e.get("logprob") or 0.0)}

        rows = []
        for e in lp["content"]:
            if isinstance(e, dict):
                row = entry(e)
                if self._top:
                    row["top_logprobs"] = [entry(t) for t in e.get("top_logprobs") or [] if isinstance(t, dict)]
                rows.append(row)
        return rows

    def parse(self, body: bytes) -> ChatAnswer:
        obj = load_json(body)
        choices = obj.get("choices")
        if isinstance(choices, list) and len(choices) > 1:
            choices = sorted((c for c in choices if isinstance(c, dict)), key=lambda c: int(c.get("index") or 0))
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise TransientError(f"answer has no choices: {body[:200]!r}")
        verdicts: list[Verdict] = []
        lps: list[list[dict[str, Any]] | None] = []
        confs: list[float | None] = []
        for ch in choices:
            message: dict[str, Any] = ch["message"] if isinstance(ch.get("message"), dict) else {}
            v = self.shape.judge(message, ch.get("finish_reason"))
            verdicts.append(v)
            if self._logprobs:
                raw_lp = ch.get("logprobs")
                lps.append(self._logprob_rows(raw_lp))
                content = message.get("content")
                conf = None
                if v.ok and v.label is not None and isinstance(content, str) and isinstance(raw_lp, dict):
                    conf = label_probability(raw_lp.get("content") or [], content, v.label)
                confs.append(conf)
        usage = _usage(obj)
        if usage is not None:
            u = Usage(usage[0], usage[1], cached_tokens=usage[2])
        else:
            u = Usage(0, sum(self._count(v.raw or "") for v in verdicts), estimated=True)
        return ChatAnswer({}, u, tuple(verdicts), tuple(lps), tuple(confs))

    def replay(self, first: Prepared | None, body: bytes) -> StepResult | None:
        """What `settle` makes of `body` as a cached answer to `first`, for the common answer: one choice,
        valid, with its usage, to a step that asks for one choice and no log-probabilities. Without the
        objects in between (every row of a cached re-run comes here); None for any other answer (the
        engine then parses and settles it the long way). Raises what `parse` raises for a broken body."""
        if self._n != 1 or self._logprobs:
            return None
        try:
            obj = orjson.loads(body)
        except ValueError:
            obj = None
        if not isinstance(obj, dict) or "error" in obj:
            obj = load_json(body)  # raises as `parse` does, or it is an answer after all
        choices = obj.get("choices")
        if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
            return None
        ch = choices[0]
        message: dict[str, Any] = ch["message"] if isinstance(ch.get("message"), dict) else {}
        finish = ch.get("finish_reason")
        usage = _usage(obj)
        if usage is None:
            return None  # (no usage: counted from the request, the long way)
        content = message.get("content")
        values: dict[str, Any]
        if self._text_column is not None and isinstance(content, str):
            # what TextShape.judge and `_one_choice` make of a text answer
            values = {self._text_column: content, self.col_finish: finish}
        else:
            v = self.shape.judge(message, finish)
            if not v.ok:
                return None
            values = self._one_choice(v, 0, None, None)
        return StepResult.from_cache(values, *usage)

    # ----------------------------------------------------------------- the dialogue of one row
    def _dialogue(self, first: _Ask) -> Dialogue:
        """The requests of one row: the first, then re-asks of invalid choices with what was wrong.

        A generator, so one logic serves both the engine's cache-only pass and its sending one: it
        yields the requests it needs and receives their replies (or CallErrors), each with the request
        actually sent (another structured-output form when the server refused the first).
        """
        ((first, r),) = yield [first]
        if isinstance(r, CallError):
            return self._failed(r, _Book(self._prompt_of), 0, []), []
        settled = self._settled(first, r)
        if settled is not None:
            return settled, []
        book = _Book(self._prompt_of)
        book.add(first, r)
        asks = [first]
        verdicts = list(r.parsed.verdicts)
        lps = list(r.parsed.logprobs) or [None] * len(verdicts)
        confs = list(r.parsed.confidence) or [None] * len(verdicts)
        repairs = 0
        conversations = [list(first.messages) for _ in verdicts]
        tries = [0] * len(verdicts)
        while True:
            todo = [
                i for i, v in enumerate(verdicts) if not v.ok and v.followup and tries[i] < self.spec.repair_attempts
            ]
            if not todo:
                break
            batch = []
            for i in todo:
                conversations[i] = conversations[i] + list(verdicts[i].followup)
                tries[i] += 1
                batch.append(self._ask(conversations[i], 1))
            repairs += len(batch)
            replies = yield batch
            for i, (ask, reply) in zip(todo, replies, strict=True):
                asks.append(ask)
                if isinstance(reply, CallError):
                    return self._failed(reply, book, repairs, verdicts), []
                book.add(ask, reply)
                verdicts[i] = reply.parsed.verdicts[0]
                lps[i] = reply.parsed.logprobs[0] if reply.parsed.logprobs else None
                confs[i] = reply.parsed.confidence[0] if reply.parsed.confidence else None
        result = self._finish(verdicts, lps, confs, repairs, book)
        # An answer that stays invalid is not kept for replay: `--retry-failed` asks afresh.
        drop = [a.cache_key for a in asks if a.cache_key] if result.status == "invalid" else []
        return result, drop

    def _settled(self, first: _Ask, reply: Reply[ChatAnswer]) -> StepResult | None:
        """The result when the first answer needs no re-ask (the common case, kept cheap: cache
        replays of whole jobs go through here), else None."""
        answer = reply.parsed
        if not all(v.ok for v in answer.verdicts):
            return None
        book = _Book(self._prompt_of)
        book.add(first, reply)
        n = len(answer.verdicts)
        return self._finish(
            list(answer.verdicts),
            list(answer.logprobs) or [None] * n,
            list(answer.confidence) or [None] * n,
            0,
            book,
        )

    def _one_choice(self, v: Verdict, repairs: int, lp: Any, conf: Any) -> dict[str, Any]:
        """The output values of a step that asks for one choice (`_finish`, `replay`)."""
        values = v.values or {}
        out: dict[str, Any] = {name: values.get(name) for name in self._value_columns}
        out[self.col_finish] = v.finish_reason
        if self.shape.structured:
            out[self.col_raw] = v.raw if self.spec.keep_raw or not v.ok else None
            out[self.col_repairs] = repairs
        if self._logprobs:
            out[self.col_logprobs] = lp
            if self._labels:
                out[self.col_confidence] = conf
        return out

    def _failed(self, err: CallError, book: _Book, repairs: int, verdicts: list[Verdict]) -> StepResult:
        """A request of the dialogue failed (e.g. a re-ask beyond the context length): the row's error,
        with the invalid answers that led there."""
        values: dict[str, Any] = {}
        if self.shape.structured:
            values[self.col_repairs] = repairs
            if verdicts:
                raws = [None if v.ok else v.raw for v in verdicts]
                values[self.col_raw] = raws if self._n > 1 else raws[0]
        prefix = f"re-ask {repairs}: " if repairs else ""
        return StepResult(
            "error",
            values,
            error=prefix + err.error.short(),
            attempts=book.attempts + err.attempts,
            prompt_tokens=book.prompt or None,
            completion_tokens=book.completion or None,
            cached_tokens=book.cached_tokens,
        )

    def _finish(
        self, verdicts: list[Verdict], lps: list[Any], confs: list[Any], repairs: int, book: _Book
    ) -> StepResult:
        many = self._n > 1
        out: dict[str, Any]
        if not many:
            out = self._one_choice(verdicts[0], repairs, lps[0] if lps else None, confs[0] if confs else None)
        else:
            out = {}
            for name in self._value_columns:
                out[name] = [v.values.get(name) if v.values is not None else None for v in verdicts]
            out[self.col_finish] = [v.finish_reason for v in verdicts]
            if self.shape.structured:
                keep = self.spec.keep_raw
                out[self.col_raw] = [v.raw if keep or not v.ok else None for v in verdicts]
                out[self.col_repairs] = repairs
            if self._logprobs:
                out[self.col_logprobs] = lps
                if self._labels:
                    out[self.col_confidence] = confs
        bad = [(i, v) for i, v in enumerate(verdicts) if not v.ok]
        error = None
        if bad:
            error = "; ".join(f"choice {i}: {v.reason}" if many else str(v.reason) for i, v in bad)
            if repairs:
                error += f" (after {repairs} re-ask{'s' if repairs > 1 else ''})"
        return StepResult(
            "invalid" if bad else "ok",
            out,
            error=error,
            attempts=book.attempts,
            prompt_tokens=book.prompt,
            completion_tokens=book.completion,
            cached=book.cached,
            tokens_estimated=book.estimated,
            cached_tokens=book.cached_tokens,
        )

    # ----------------------------------------------------------------- the exchange the engine drives
    def _done(self, end: tuple[StepResult, list[str]]) -> Done:
        result, drop = end
        repairs = int(result.values.get(self.col_repairs) or 0) if self.shape.structured else 0
        return Done(result, tuple(drop), repairs)

    def exchange(self, first: Prepared) -> Exchange:
        assert isinstance(first, _Ask)
        end = yield from self._dialogue(first)  # type: ignore[misc]
        return self._done(end)

    def settle(self, first: Prepared, reply: Reply[Any]) -> Done | None:
        assert isinstance(first, _Ask)
        settled = self._settled(first, reply)
        return None if settled is None else self._done((settled, []))

    def current(self, ask: Prepared) -> _Ask:
        """`ask` as the server takes it now: rebuilt when the form or streaming changed since."""
        assert isinstance(ask, _Ask)
        if ask.form != self._form() or (ask.streamed and not self._streaming()):
            return self._ask(ask.messages, ask.n)
        return self._counted(ask)

    def serial(self, ask: Prepared) -> asyncio.Lock | None:
        """While the form is not yet known to work, first requests go one at a time, so rows sent at
        once do not each find the same refusal."""
        choice = self._choice() if isinstance(ask, _Ask) and ask.form is not None else None
        return choice.lock if choice is not None and not choice.settled else None

    def takes_over(self, ask: Prepared, err: RequestError, cuts: int) -> bool:
        """A refused structured-output form, or a cut stream once the provider's streams are off."""
        assert isinstance(ask, _Ask)
        if isinstance(err, StreamCut) and ask.streamed:
            q = self._quirks()
            return q is not None and q.streams.cut(err, cuts)
        return ask.form is not None and refuses_form(err, ask.form)

    def instead(self, ask: Prepared, err: RequestError) -> _Ask | RequestError:
        """The request re-sent in the next structured-output form, or unstreamed."""
        assert isinstance(ask, _Ask)
        if isinstance(err, StreamCut):
            return self._ask(ask.messages, ask.n)  # streaming is off for the provider now
        choice = self._choice()
        assert ask.form is not None and choice is not None
        if choice.refused(ask.form, err) is None:
            return RowError(
                f"the server refuses structured output as {ask.form} (pinned by structured_via; other forms: "
                f"json_schema, json_object, tools, prompt): {err.short()}",
                status=err.status,
                code=err.code,
            )
        return self._ask(ask.messages, ask.n)

    def answered(self, ask: Prepared) -> None:
        assert isinstance(ask, _Ask)
        q = self._quirks()
        if ask.streamed and q is not None:
            q.streams.ok()
        choice = self._choice() if ask.form is not None else None
        if choice is not None and ask.form is not None:
            choice.confirm(ask.form)
