"""Forecast a job before running it: requests, tokens, time under the limits, cost, cache hits."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .cache import NoCache, ResponseCache
from .endpoints import Prepared
from .errors import JobError
from .plan import Plan
from .records import StepResult
from .sources import ROW


@dataclass
class StepEstimate:
    name: str
    provider: str
    model: str
    rows: int = 0
    requests: int = 0
    cached: int = 0
    skipped: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0  # the reserve (max_tokens): an upper bound
    cost: float | None = None


@dataclass
class Estimate:
    steps: list[StepEstimate]
    minutes_by_provider: dict[str, float] = field(default_factory=dict)
    binding_limit: dict[str, str] = field(default_factory=dict)

    @property
    def minutes(self) -> float:
        return max(self.minutes_by_provider.values(), default=0.0)


def load_prices(path: Path) -> dict[str, tuple[float, float]]:
    """A price table: `{model: {input: USD per 1M tokens, output: USD per 1M tokens}}` (YAML or JSON)."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise JobError(f"cannot read the price table {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise JobError(f"{path}: a price table maps model names to {{input: ..., output: ...}} (USD per 1M tokens)")
    prices = {}
    for model, p in raw.items():
        if not isinstance(p, dict) or not {"input", "output"} <= p.keys():
            raise JobError(f"{path}: model {model!r} needs `input` and `output` prices (USD per 1M tokens)")
        prices[str(model)] = (float(p["input"]), float(p["output"]))
    return prices


def estimate(plan: Plan, prices: dict[str, tuple[float, float]] | None = None) -> Estimate:
    """Render every row's requests (nothing is sent) and add them up per step and provider.

    A later step's input depends on an earlier step's answer, which is unknown before the run: its
    prompt is estimated with a placeholder of the earlier step's `max_tokens` size in its place.
    """
    spec = plan.job.spec
    cache: ResponseCache | NoCache = (
        ResponseCache(spec.cache.dir, spec.cache.size_limit_gb) if spec.cache.enabled else NoCache()
    )
    steps = [StepEstimate(s.name, s.provider, next(x.model for x in spec.steps if x.name == s.name))
             for s in plan.steps]
    try:
        for df in plan.source.batches(2000):
            for row in df.iter_rows(named=True):
                row.pop(ROW, None)
                for rt, est in zip(plan.steps, steps, strict=True):
                    est.rows += 1
                    try:
                        prep = rt.prepare(row)
                    except Exception:
                        est.skipped += 1
                        continue
                    _count(est, prep, cache)
                    for f in rt.output_fields():
                        row.setdefault(f.name, "x" * 20)
    finally:
        cache.close()
    for est in steps:
        if prices and est.model in prices:
            pin, pout = prices[est.model]
            est.cost = (est.prompt_tokens * pin + est.completion_tokens * pout) / 1e6
    result = Estimate(steps)
    by_provider: dict[str, list[StepEstimate]] = defaultdict(list)
    for est in steps:
        by_provider[est.provider].append(est)
    for name, ests in by_provider.items():
        lim = plan.providers[name].limits
        reqs = sum(e.requests for e in ests)
        toks = sum(e.prompt_tokens + e.completion_tokens for e in ests)
        rpm, tpm = lim.fixed("rpm"), lim.fixed("tpm")
        bounds = {"requests/min": reqs / rpm * lim.period_s / 60 if rpm else 0.0,
                  "tokens/min": toks / tpm * lim.period_s / 60 if tpm else 0.0}
        which = max(bounds, key=lambda k: bounds[k])
        result.minutes_by_provider[name] = bounds[which]
        result.binding_limit[name] = which if bounds[which] > 0 else "none (no rate limits set)"
    return result


def _count(est: StepEstimate, prep: Prepared | StepResult, cache: Any) -> None:
    if isinstance(prep, StepResult):
        est.skipped += 1
        return
    if prep.cache_key is not None and cache.get(prep.cache_key) is not None:
        est.cached += 1
        return
    est.requests += 1
    est.prompt_tokens += prep.prompt_estimate or prep.tokens
    est.completion_tokens += max(0, prep.tokens - prep.prompt_estimate) if prep.prompt_estimate else 0
