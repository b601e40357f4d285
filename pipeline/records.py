"""Plain values passed between stages: a step's result for one row, token usage, progress events."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

Status = Literal["ok", "error", "invalid", "skipped"]
STATUSES: tuple[Status, ...] = ("ok", "error", "invalid", "skipped")


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens of one answer; `estimated` when the server sent no usage and we counted ourselves."""

    prompt_tokens: int
    completion_tokens: int
    estimated: bool = False
    cached_tokens: int = 0  # of the prompt tokens, those the provider served from its prompt cache


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
    cached_tokens: int = 0  # prompt tokens billed at the cached-input rate (not a column: priced only)
    metrics: dict[str, float] = field(default_factory=dict)  # the kind's counters (`StepRuntime.counters`)

    @classmethod
    def skipped(cls, reason: str) -> StepResult:
        return cls("skipped", error=reason)

    @classmethod
    def from_cache(
        cls, values: dict[str, Any], prompt_tokens: int, completion_tokens: int, cached_tokens: int
    ) -> StepResult:
        """`StepResult("ok", values, attempts=0, prompt_tokens=..., completion_tokens=..., cached=True,
        cached_tokens=...)`, made at a third of its cost (a frozen dataclass's `__init__` sets each field
        through `object.__setattr__`; this sets the slots directly): every row of a cached re-run makes one."""
        r = _new(cls)
        _s_status(r, "ok")
        _s_values(r, values)
        _s_error(r, None)
        _s_attempts(r, 0)
        _s_prompt(r, prompt_tokens)
        _s_completion(r, completion_tokens)
        _s_cached(r, True)
        _s_estimated(r, False)
        _s_cached_tokens(r, cached_tokens)
        _s_metrics(r, {})
        return r


# StepResult's slot setters, for `StepResult.from_cache` (which sets every field: checked here)
if tuple(f.name for f in fields(StepResult)) != (
    "status",
    "values",
    "error",
    "attempts",
    "prompt_tokens",
    "completion_tokens",
    "cached",
    "tokens_estimated",
    "cached_tokens",
    "metrics",
):
    raise TypeError("StepResult.from_cache sets every field of StepResult: update it with them")
_new = object.__new__
(
    _s_status,
    _s_values,
    _s_error,
    _s_attempts,
    _s_prompt,
    _s_completion,
    _s_cached,
    _s_estimated,
    _s_cached_tokens,
    _s_metrics,
) = (getattr(StepResult, f.name).__set__ for f in fields(StepResult))


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
    cost_usd: float | None = None  # spent by this run's requests (None: some model has no price)
    budget_usd: float | None = None
    limits: str | None = None  # which limit binds, the limits in force and what the server said
    # per step, the counters its kind declares (e.g. a transcribe step's `audio_s`, `audio_rows`)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def audio_s_done(self) -> float | None:
        """Audio transcribed so far (None: no step counts audio)."""
        audio = [m["audio_s"] for m in self.metrics.values() if "audio_s" in m]
        return sum(audio) if audio else None

    @property
    def audio_s_left(self) -> float | None:
        """Estimate of the audio of the rows still to do, from the mean so far."""
        done = self.audio_s_done
        measured = max((m.get("audio_rows", 0) for m in self.metrics.values() if "audio_s" in m), default=0)
        if done is None or not measured:
            return None
        return done / measured * max(0, self.total_rows - self.rows_done)
