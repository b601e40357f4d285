"""The `chat` step: one chat completion per row, the answer's text in the output column."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from ..cache import canonical_json, request_key
from ..errors import RowError, TransientError
from ..job.model import ChatStep
from ..records import Parsed, Usage
from ..templating import Template, compile_template
from ..tokens import Counter, chat_prompt_tokens
from ..transport import HttpRequest
from .base import Prepared, StepRuntime, load_json

ENDPOINT = "/chat/completions"
# Reserved for the completion when the job sets no max_tokens; usage corrects it afterwards.
DEFAULT_COMPLETION_RESERVE = 1024


class ChatRuntime(StepRuntime):
    def __init__(self, spec: ChatStep, cache_ns: str, count: Counter) -> None:
        super().__init__(spec.name, spec.output_column, spec.provider, cache_ns)
        self.spec = spec
        self._count = count
        self._messages: list[tuple[str, Template]] = [
            (m.role, compile_template(m.content, f"step `{spec.name}`, messages[{i}].content"))
            for i, m in enumerate(spec.messages)
        ]
        params = dict(spec.params)
        self._params = params
        max_tokens = params.get("max_tokens", params.get("max_completion_tokens"))
        self._completion_charge: int | None = int(max_tokens) if isinstance(max_tokens, int) else None
        self._reserve = self._completion_charge or DEFAULT_COMPLETION_RESERVE
        self._n = int(params.get("n", 1) or 1)

    def templates(self) -> list[Template]:
        return [t for _, t in self._messages]

    def output_fields(self) -> list[pa.Field]:
        return [
            pa.field(self.output_column, pa.string()),
            pa.field(f"{self.name}__finish_reason", pa.string()),
        ]

    def prepare(self, row: Mapping[str, Any]) -> Prepared:
        messages = [{"role": role, "content": tpl.render(row)} for role, tpl in self._messages]
        body = {"model": self.spec.model, "messages": messages, **self._params}
        prompt = chat_prompt_tokens(messages, self._count)
        blob = canonical_json(body)
        return Prepared(
            HttpRequest(ENDPOINT, json_body=body, data=blob),
            tokens=prompt + self._reserve * self._n,
            cache_key=request_key(self.cache_ns, ENDPOINT, blob),
            completion_charge=None if self._completion_charge is None else self._completion_charge * self._n,
            prompt_estimate=prompt,
        )

    def parse(self, body: bytes) -> Parsed:
        obj = load_json(body)
        choices = obj.get("choices")
        if not isinstance(choices, list) or not choices:
            raise TransientError(f"answer has no choices: {body[:200]!r}")
        first = choices[0] if isinstance(choices[0], dict) else {}
        message = first.get("message") or {}
        content = message.get("content")
        finish = first.get("finish_reason")
        if content is None:
            refusal = message.get("refusal")
            if refusal:
                raise RowError(f"the model refused: {refusal}", code="refusal")
            if message.get("tool_calls"):
                raise RowError("the model answered with a tool call, not text", code="tool_calls")
            if finish == "content_filter":
                raise RowError("the answer was withheld by the provider's content filter", code="content_filter")
            raise TransientError(f"answer has no content (finish_reason={finish!r})")
        usage = obj.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
            u = Usage(int(usage["prompt_tokens"]), int(usage.get("completion_tokens") or 0))
        else:
            u = Usage(0, self._count(str(content)), estimated=True)
        return Parsed({self.output_column: str(content), f"{self.name}__finish_reason": finish}, u)
