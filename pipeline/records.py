"""Plain values passed between stages: a step's result for one row, token usage, progress events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["ok", "error", "invalid", "skipped"]
STATUSES: tuple[Status, ...] = ("ok", "error", "invalid", "skipped")


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens of one answer; `estimated` when the server sent no usage and we counted ourselves."""

    prompt_tokens: int
    completion_tokens: int
    estimated: bool = False


@dataclass(frozen=True, slots=True)
class Parsed:
    """A successful answer turned into the step's output values."""

    values: dict[str, Any]
    usage: Usage | None


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one step did for one row: the row's status, output values and accounting columns."""

    status: Status
    values: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    attempts: int = 0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached: bool = False
    tokens_estimated: bool = False

    @classmethod
    def skipped(cls, reason: str) -> StepResult:
        return cls("skipped", error=reason)


@dataclass(frozen=True, slots=True)
class Progress:
    """A snapshot the executor hands to its observer (the CLI's progress bar, or a test)."""

    total_rows: int
    rows_done: int
    rows_ok: int
    rows_failed: int
    rows_skipped: int
    rows_resumed: int
    requests: int
    cache_hits: int
    retries: int
    rate_limited: int
    tokens: int
    elapsed_s: float
    req_per_min: float
    tok_per_min: float
    audio_s_done: float | None = None  # audio transcribed so far (None: the job has no transcribe step)
    audio_s_left: float | None = None  # estimate for the rows still to do, from the mean so far
    cost_usd: float | None = None  # spent by this run's requests (None: some model has no price)
    budget_usd: float | None = None
    limits: str | None = None  # which limit binds, the limits in force and what the server said
