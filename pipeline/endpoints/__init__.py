"""Step kinds: per kind, how a row becomes a request and an answer becomes columns."""

from __future__ import annotations

from ..job.model import ChatStep, EmbedStep
from ..tokens import counter, tokenizer_for
from .base import Prepared, StepRuntime
from .chat import ChatRuntime
from .embed import EmbedRuntime

__all__ = ["Prepared", "StepRuntime", "build_runtime"]


def build_runtime(spec: ChatStep | EmbedStep, cache_ns: str, tokenizer: str | None) -> StepRuntime:
    """The runtime of a step spec (templates compiled; raises JobError on template errors)."""
    if isinstance(spec, EmbedStep):
        return EmbedRuntime(spec, cache_ns, tokenizer)
    count = counter(tokenizer_for(spec.model, tokenizer))
    if isinstance(spec, ChatStep):
        return ChatRuntime(spec, cache_ns, count)
    raise AssertionError(f"unhandled step kind {type(spec).__name__}")
