"""The run's spending: live cost, and a budget that refuses a request whose worst case would cross it.

Before a request is sent, its worst-case cost (prompt estimate at the input price, max_tokens at the
output price; audio minutes for transcription) is held against the budget; when the answer arrives
the hold becomes the cost its `usage` says. A request whose hold would not fit is not sent: its rows
fail with `BudgetReached` (their error says so) and a later run with a higher budget sends them.
Holds and settlements happen between awaits, so concurrent requests can never overshoot together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from .errors import JobError, RequestError
from .pricing import Price

MARK = "BudgetReached"  # what a row's error starts with (or holds, in a later step) when it was not sent


class BudgetReached(RequestError):
    """The request's worst-case cost does not fit in what is left of the budget: not sent."""


@dataclass(frozen=True, slots=True)
class Charge:
    """How one step's requests are priced (`audio_s` for a transcription of known length; `per_image` for
    an image step, whose requests hold their images where others hold tokens)."""

    price: Price
    audio_s: float | None = None
    per_image: bool = False

    def worst(self, tokens: int, completion_charge: int | None) -> float | None:
        if self.audio_s is not None:
            return self.price.audio(self.audio_s)
        if self.per_image:
            return self.price.image * tokens if self.price.image is not None else None
        return self.price.worst_case(tokens, completion_charge)

    def fixed(self, tokens: int) -> float | None:
        """The cost of a request known before its answer (audio by length, images by count; None: its
        answer's usage says)."""
        if self.audio_s is not None or self.per_image:
            return self.worst(tokens, None)
        return None

    def actual(self, prompt: int, completion: int, cached: int = 0) -> float | None:
        """The cost of an answer from its usage (`cached`: prompt tokens at the cached-input rate)."""
        if self.audio_s is not None:
            return self.price.audio(self.audio_s)
        return self.price.tokens(prompt, completion, cached)


@dataclass(slots=True)
class Hold:
    amount: float


class Spend:
    """What the run has spent (from `usage`), what is held for requests in flight, and the budget."""

    def __init__(self, limit_usd: float | None = None, spent_before: float = 0.0) -> None:
        self.limit = limit_usd
        self.spent_before = spent_before  # by earlier runs of the job (their finished rows)
        self.spent = 0.0  # by this run
        self.held = 0.0
        self.refused = 0  # requests not sent for the budget

    @property
    def total(self) -> float:
        return self.spent_before + self.spent

    def hold(self, worst: float | None) -> Hold | None:
        """Hold `worst` for a request about to be sent; raise BudgetReached when it would not fit."""
        if self.limit is None:
            return None
        amount = worst or 0.0
        if self.total + self.held + amount > self.limit:
            self.refused += 1
            raise BudgetReached(
                f"budget of ${self.limit:,.4f} reached: ${self.total:,.4f} spent, ${self.held:,.4f} held by "
                f"requests in flight, this request may cost up to ${amount:,.4f}; not sent. Run again with a "
                "higher --max-cost (or budget.max_cost_usd) to continue"
            )
        self.held += amount
        return Hold(amount)

    def settle(self, hold: Hold | None, cost: float | None) -> None:
        """The request ended, costing `cost` (from its usage; 0 when the server refused it). None when
        unknown (no price, or no answer: a request that died on the way may be billed): the hold counts."""
        held = hold.amount if hold is not None else 0.0
        self.held -= held
        self.spent += held if cost is None else cost


def step_charges(plan: Any) -> dict[str, Charge | None]:
    """Each step's pricing, by step name (None: no price known for its model)."""
    out: dict[str, Charge | None] = {}
    for s in plan.job.spec.steps:
        price = plan.prices.get(s.model)
        out[s.name] = Charge(price, per_image=s.kind == "image") if price is not None else None
    return out


def check_budget(plan: Any, limit: float | None) -> None:
    """A budget needs a price for every step's model (JobError naming the ones missing)."""
    if limit is None:
        return
    needs = {"chat": ("input", "output"), "embed": ("input",), "transcribe": ("audio_minute",), "image": ("image",)}
    missing = []
    for s in plan.job.spec.steps:
        price = plan.prices.get(s.model)
        lacking = [k for k in needs.get(s.kind, ("input", "output")) if price is None or getattr(price, k) is None]
        if lacking:
            missing.append(f"step `{s.name}` (model {s.model}: {', '.join(lacking)})")
    if missing:
        raise JobError(
            f"a budget of ${limit:,.2f} needs the price of every model; none known for {', '.join(missing)}. "
            "Add them under `prices:` in the job (USD per 1M tokens: {input: ..., output: ...}; "
            "{audio_minute: ...} per audio minute; {image: ...} per image)"
        )


def earlier_spend(written: pl.LazyFrame | None, steps: list[str], total_rows: int) -> tuple[float, np.ndarray]:
    """(cost of the rows earlier runs finished, rows they did not send for the budget: to do again)."""
    unsent = np.zeros(total_rows, dtype=bool)
    if written is None:
        return 0.0, unsent
    from .sinks import PART
    from .sources import ROW

    names = written.collect_schema().names()
    cost_cols = [f"{s}__cost" for s in steps if f"{s}__cost" in names]
    err_cols = [f"{s}__error" for s in steps if f"{s}__error" in names]
    if not err_cols:
        return 0.0, unsent
    latest = (
        written.select(ROW, PART, *cost_cols, *err_cols)
        .collect()
        .sort([ROW, PART])
        .unique(subset=[ROW], keep="last", maintain_order=True)
        .with_columns(
            pl.any_horizontal([pl.col(c).str.contains(MARK, literal=True).fill_null(False) for c in err_cols]).alias(
                "__unsent"
            )
        )
    )
    spent = float(sum(latest[c].sum() or 0.0 for c in cost_cols))
    rows = latest.filter(pl.col("__unsent"))[ROW].to_numpy()
    unsent[rows[rows < total_rows]] = True
    return spent, unsent
