"""The `completion` step: one legacy text completion (/completions) per row; its text in the output column."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from ..cache import canonical_json, request_key
from ..errors import TransientError
from ..job.model import CompletionStep
from ..records import Parsed, Usage
from ..requests import HttpRequest
from ..templating import Template, compile_template
from ..tokens import Counter
from .base import Prepared, StepRuntime, load_json

ENDPOINT = "/completions"
DEFAULT_MAX_TOKENS = 16  # the endpoint's own default when the request sets none


class CompletionRuntime(StepRuntime):
    """A plain request/response kind: the engine drives the default exchange (one request per row)."""

    def __init__(self, spec: CompletionStep, cache_ns: str, count: Counter) -> None:
        super().__init__(spec.name, spec.output_column, spec.provider, cache_ns)
        self.spec = spec
        self._prompt = compile_template(spec.prompt, f"step `{spec.name}`, prompt")
        self._count = count
        self._n = int(spec.params.get("n") or 1)
        max_tokens = spec.params.get("max_tokens")
        self._reserve = int(max_tokens if max_tokens is not None else DEFAULT_MAX_TOKENS)
        self._completion_charge = int(max_tokens) if max_tokens is not None else None
        self.col_finish = f"{spec.name}__finish_reason"

    def templates(self) -> list[Template]:
        return [self._prompt]

    def output_fields(self) -> list[pa.Field]:
        def per_choice(t: pa.DataType) -> pa.DataType:
            return pa.list_(t) if self._n > 1 else t

        return [
            pa.field(self.output_column, per_choice(pa.string())),
            pa.field(self.col_finish, per_choice(pa.string())),
        ]

    def prepare(self, row: Mapping[str, Any]) -> Prepared:
        prompt = self._prompt.render(row)
        body = {"model": self.spec.model, "prompt": prompt, **self.spec.params}
        data = canonical_json(body)
        tokens = self._count(prompt)
        return Prepared(
            HttpRequest(ENDPOINT, json_body=body, data=data),
            tokens=tokens + self._reserve * self._n,
            cache_key=request_key(self.cache_ns, ENDPOINT, data),
            completion_charge=None if self._completion_charge is None else self._completion_charge * self._n,
            prompt_estimate=tokens,
        )

    def parse(self, body: bytes) -> Parsed:
        obj = load_json(body)
        choices = obj.get("choices")
        if not isinstance(choices, list) or not choices or not all(isinstance(c, dict) for c in choices):
            raise TransientError(f"answer has no choices: {body[:200]!r}")
        choices = sorted(choices, key=lambda c: int(c.get("index") or 0))
        texts = [c.get("text") if isinstance(c.get("text"), str) else None for c in choices]
        finish = [c.get("finish_reason") if isinstance(c.get("finish_reason"), str) else None for c in choices]
        usage = obj.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
            u = Usage(int(usage["prompt_tokens"]), int(usage.get("completion_tokens") or 0))
        else:
            u = Usage(0, sum(self._count(t or "") for t in texts), estimated=True)
        many = self._n > 1
        return Parsed(
            {self.output_column: texts if many else texts[0], self.col_finish: finish if many else finish[0]}, u
        )
