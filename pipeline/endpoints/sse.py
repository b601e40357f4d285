"""A streamed chat answer (SSE `chat.completion.chunk` events) assembled into one `chat.completion` body."""

from __future__ import annotations

import json
from typing import Any

from ..errors import RequestError, StreamCut, TransientError
from ..retry import classify


class _Choice:
    __slots__ = ("content", "content_seen", "finish", "logprobs", "refusal", "tool_calls")

    def __init__(self) -> None:
        self.content: list[str] = []
        self.content_seen = False
        self.refusal: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.logprobs: list[Any] = []
        self.finish: str | None = None


class ChatStream:
    """Feed it the `data:` payloads of a stream; `finish()` gives the body a non-streamed request gets.

    The body is what gets cached, so a re-run is answered from the cache as if nothing was streamed.
    A stream that ends before every choice has a `finish_reason` was cut (gateways close idle streams
    and may still send `[DONE]`; llama.cpp ends a stream so when another request arrives): `finish()`
    raises StreamCut and the request is retried; it is never taken as a complete answer.
    """

    def __init__(self) -> None:
        self._meta: dict[str, Any] = {}
        self._choices: dict[int, _Choice] = {}
        self._usage: dict[str, Any] | None = None
        self._events = 0

    def feed(self, data: bytes) -> None:
        """One event's data (without the `data:` prefix)."""
        obj = _event(data)
        if obj.get("error"):
            raise _error_event(data)
        self._events += 1
        for key in ("id", "created", "model", "system_fingerprint"):
            if key not in self._meta and obj.get(key) is not None:
                self._meta[key] = obj[key]
        if isinstance(obj.get("usage"), dict):
            self._usage = obj["usage"]
        for ch in obj.get("choices") or []:
            if not isinstance(ch, dict):
                continue
            st = self._choices.setdefault(int(ch.get("index") or 0), _Choice())
            delta = ch.get("delta") or {}
            if isinstance(delta.get("content"), str):
                st.content.append(delta["content"])
                st.content_seen = True
            if isinstance(delta.get("refusal"), str):
                st.refusal.append(delta["refusal"])
            for tc in delta.get("tool_calls") or []:
                slot = st.tool_calls.setdefault(
                    int(tc.get("index") or 0), {"id": None, "type": "function", "name": "", "arguments": []}
                )
                if tc.get("id"):
                    slot["id"] = tc["id"]
                fn = tc.get("function") or {}
                if fn.get("name"):
                    slot["name"] = fn["name"]
                if isinstance(fn.get("arguments"), str):
                    slot["arguments"].append(fn["arguments"])
            lp = ch.get("logprobs")
            if isinstance(lp, dict) and isinstance(lp.get("content"), list):
                st.logprobs.extend(lp["content"])
            if ch.get("finish_reason"):
                st.finish = ch["finish_reason"]

    def finish(self) -> bytes:
        """The assembled `chat.completion` body; TransientError when the stream was cut."""
        if not self._choices:
            raise StreamCut(f"the answer stream ended without any answer ({self._events} events)")
        cut = [i for i, st in self._choices.items() if st.finish is None]
        if cut:
            got = sum(len("".join(self._choices[i].content)) for i in cut)
            raise StreamCut(f"the answer stream was cut before its finish_reason (truncated after {got} characters)")
        empty = [
            i
            for i, st in self._choices.items()
            if st.finish == "stop" and not "".join(st.content) and not st.tool_calls and not st.refusal
        ]
        if empty:
            # LiteLLM relaying a stream its upstream cut (llama.cpp interrupted) closes it with a made-up
            # finish_reason "stop" and nothing before it
            raise StreamCut(
                "the answer stream ended with finish_reason 'stop' and no answer before it "
                "(a gateway closing a stream its server cut)"
            )
        choices = []
        for i in sorted(self._choices):
            st = self._choices[i]
            calls = [
                {
                    "id": c["id"] or f"call_{i}_{j}",
                    "type": c["type"],
                    "function": {"name": c["name"], "arguments": "".join(c["arguments"])},
                }
                for j, c in sorted(st.tool_calls.items())
            ]
            text = "".join(st.content)
            refusal = "".join(st.refusal) or None
            content = text if text or (st.content_seen and not calls and refusal is None) else None
            message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": refusal}
            if calls:
                message["tool_calls"] = calls
            choices.append(
                {
                    "index": i,
                    "message": message,
                    "logprobs": {"content": st.logprobs} if st.logprobs else None,
                    "finish_reason": st.finish,
                }
            )
        body: dict[str, Any] = {**self._meta, "object": "chat.completion", "choices": choices}
        if self._usage is not None:
            body["usage"] = self._usage
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


class ResponsesStream:
    """A streamed Responses API answer (typed events: `response.output_text.delta`, ...,
    `response.completed`) assembled into the Response object a non-streamed request gets.

    The terminal event (`response.completed` or `response.incomplete`) carries the whole Response; the
    items finished on the way (`response.output_item.done`) stand in for its output when it has none. A
    stream without a terminal event was cut: `finish()` raises StreamCut and the request is retried.
    """

    def __init__(self) -> None:
        self._final: dict[str, Any] | None = None
        self._items: dict[int, dict[str, Any]] = {}
        self._text: dict[int, list[str]] = {}
        self._events = 0

    def feed(self, data: bytes) -> None:
        obj = _event(data)
        self._events += 1
        kind = obj.get("type")
        if kind == "error" or kind == "response.failed":
            error = obj.get("error") or (obj.get("response") or {}).get("error") or {"message": str(obj)[:200]}
            raise _error_event(json.dumps({"error": error}).encode())
        if kind == "response.output_text.delta" and isinstance(obj.get("delta"), str):
            self._text.setdefault(int(obj.get("output_index") or 0), []).append(obj["delta"])
        elif kind == "response.output_item.done" and isinstance(obj.get("item"), dict):
            self._items[int(obj.get("output_index") or 0)] = obj["item"]
        elif kind in ("response.completed", "response.incomplete") and isinstance(obj.get("response"), dict):
            self._final = obj["response"]

    def finish(self) -> bytes:
        """The assembled Response; StreamCut when the stream ended before its terminal event."""
        if self._final is None:
            got = sum(len("".join(t)) for t in self._text.values())
            raise StreamCut(
                f"the answer stream was cut before response.completed ({self._events} events, {got} characters of text)"
            )
        body = dict(self._final)
        if not body.get("output") and self._items:
            body["output"] = [self._items[i] for i in sorted(self._items)]
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def _event(data: bytes) -> dict[str, Any]:
    """One stream event's JSON object; a broken or non-object event is a transient failure (retried)."""
    try:
        obj = json.loads(data)
    except ValueError as exc:
        raise TransientError(f"broken event in the answer stream: {data[:120]!r}") from exc
    if not isinstance(obj, dict):
        raise TransientError(f"unexpected event in the answer stream: {data[:120]!r}")
    return obj


def _error_event(body: bytes) -> RequestError:
    """The error an error event inside a stream stands for: classified like an answer's error body; a
    transient one (e.g. a gateway losing its upstream mid-answer) is a cut stream."""
    err = classify(200, body, {})
    if type(err) is TransientError:
        return StreamCut(
            f"the answer stream ended with an error event: {err.message}", status=err.status, code=err.code
        )
    return err
