"""Fault selection (first/every/probability/times, seeded) and OpenAI-shaped error bodies."""

from __future__ import annotations

import random
from typing import Any

from .config import CONTENT_FAULTS, FaultRule


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """The OpenAI error shape."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class SimError(Exception):
    """An error answer: HTTP status plus an OpenAI-shaped body."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers = headers

    def body(self, seq: int) -> dict[str, Any]:
        return error_body(f"{self.message} (request id: sim-{seq})", self.type, self.code, self.param)


class FaultEngine:
    """Picks the fault (if any) for each request; rules are checked in order, first applying wins."""

    def __init__(self, rules: list[FaultRule], seed: int) -> None:
        self.rules = list(rules)
        self._matched = [0] * len(self.rules)
        self._applied = [0] * len(self.rules)
        self._rng = random.Random(seed)

    def pick(self, path: str, raw: bytes, *, chat: bool, stream: bool) -> FaultRule | None:
        """The fault for a request to `path` with body `raw`, updating the rules' counters."""
        for i, rule in enumerate(self.rules):
            if rule.path is not None and not path.endswith(rule.path):
                continue
            if rule.kind in CONTENT_FAULTS and (not chat or (rule.kind == "truncated_stream" and not stream)):
                continue
            if rule.when_contains is not None and rule.when_contains.encode() not in raw:
                continue
            if rule.times is not None and self._applied[i] >= rule.times:
                continue
            self._matched[i] += 1
            n = self._matched[i]
            if rule.first is not None and n > rule.first:
                continue
            if rule.every is not None and n % rule.every:
                continue
            if rule.probability is not None and self._rng.random() >= rule.probability:
                continue
            self._applied[i] += 1
            return rule
        return None
