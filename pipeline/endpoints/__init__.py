"""Step kinds: per kind, how a row becomes a request and an answer becomes columns."""

from __future__ import annotations

from pathlib import Path

from ..job.model import ChatStep, CompletionStep, EmbedStep, ImageStep, StructuredVia, TranscribeStep
from ..tokens import counter, tokenizer_for
from .base import Prepared, StepRuntime
from .chat import ChatRuntime
from .completion import CompletionRuntime
from .embed import EmbedRuntime
from .image import ImageRuntime
from .responses import ResponsesRuntime
from .transcribe import TranscribeRuntime

__all__ = ["Prepared", "StepRuntime", "build_runtime"]


def build_runtime(
    spec: ChatStep | EmbedStep | TranscribeStep | CompletionStep | ImageStep,
    cache_ns: str,
    tokenizer: str | None,
    *,
    input_dir: Path | None = None,
    structured_via: StructuredVia | None = None,
    output: Path | None = None,
    id_column: str | None = None,
) -> StepRuntime:
    """The runtime of a step spec (templates compiled; raises JobError on template errors).

    `input_dir` is where relative file paths in rows are read from (the input file's folder);
    `structured_via` the provider's first structured-output form for chat steps; `output` (the output
    file) and `id_column` place and name an image step's files (`<output stem>_images/<row id>_<i>.<ext>`).
    """
    if isinstance(spec, ImageStep):
        out = output or Path("out.parquet")
        return ImageRuntime(spec, cache_ns, out.with_name(f"{out.stem}_images"), id_column)
    if isinstance(spec, TranscribeStep):
        return TranscribeRuntime(spec, cache_ns, input_dir or Path.cwd())
    if isinstance(spec, EmbedStep):
        return EmbedRuntime(spec, cache_ns, tokenizer)
    count = counter(tokenizer_for(spec.model, tokenizer))
    if isinstance(spec, ChatStep) and spec.api == "responses":
        return ResponsesRuntime(spec, cache_ns, count)
    if isinstance(spec, ChatStep):
        return ChatRuntime(spec, cache_ns, count, structured_via)
    if isinstance(spec, CompletionStep):
        return CompletionRuntime(spec, cache_ns, count)
    raise AssertionError(f"unhandled step kind {type(spec).__name__}")
