"""Forecast a job before running it: requests, tokens, time under the limits, cost, cache hits."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from . import audiofiles
from .batching import FirstCount, TokenCalibration, pack_max_tokens
from .cache import NoCache, ResponseCache
from .endpoints import Prepared
from .endpoints.chat import ChatRuntime
from .endpoints.completion import CompletionRuntime
from .endpoints.embed import EmbedRuntime
from .endpoints.image import ImageRuntime
from .endpoints.transcribe import AudioPrepared, TranscribeRuntime
from .plan import Plan
from .pricing import PriceTable
from .records import StepResult
from .sinks import WorkDir, keep_latest
from .sources import ROW
from .tokens import chat_prompt_tokens, counter, exact_tokenizer_for

# Prompts counted exactly (the model's BPE vocabulary) per step, to scale the cheap estimate of the rest.
SAMPLE_REQUESTS = 300
# Without a duration (no ffmpeg, unreadable header): the lowest common speech bitrate, 32 kbit/s.
ASSUMED_AUDIO_BYTES_PER_S = 4000


@dataclass
class StepEstimate:
    name: str
    kind: str
    provider: str
    model: str
    rows: int = 0
    requests: int = 0
    cached: int = 0
    skipped: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0  # expected: observed mean after a run, else the max_tokens reserve
    completion_basis: str = ""
    limit_tokens: int = 0  # what the provider's tokens/min counts (prompt + max_tokens when it is set)
    audio_minutes: float | None = None
    images: int | None = None  # image steps: the images asked for (n per request)
    cost: float | None = None
    charged_completions: int = 0  # completion part of limit_tokens
    expected_completions: float = 0.0  # summed unrounded: a mean of 16.2 over 300 rows is 4,860, not 4,800
    sample_estimate: int = 0  # the cheap count of the sampled prompts
    sample_exact: int = 0  # their exact count

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": self.cost,
            "kind": self.kind,
            "provider": self.provider,
            "model": self.model,
            "rows": self.rows,
            "cached_rows": self.cached,
            "skipped_rows": self.skipped,
            "completion_basis": self.completion_basis,
            "audio_minutes": self.audio_minutes,
            "images": self.images,
        }


@dataclass
class Estimate:
    steps: list[StepEstimate]
    minutes_by_provider: dict[str, float] = field(default_factory=dict)
    binding_limit: dict[str, str] = field(default_factory=dict)
    prices_as_of: str | None = None

    @property
    def minutes(self) -> float:
        return max(self.minutes_by_provider.values(), default=0.0)

    @property
    def cost(self) -> float | None:
        costs = [s.cost for s in self.steps if s.requests]
        return None if any(c is None for c in costs) else sum(c for c in costs if c is not None)

    def as_json(self) -> dict[str, Any]:
        """The shape SPEC.md gives for `pipeline estimate --json` (plus a few keys)."""
        slowest = max(self.minutes_by_provider, key=lambda n: self.minutes_by_provider[n], default=None)
        return {
            "steps": [s.as_json() for s in self.steps],
            "duration_s": round(self.minutes * 60, 3),
            "binding_limit": f"{slowest}: {self.binding_limit[slowest]}" if slowest else "none",
            "cost_usd": self.cost,
            "prices_as_of": self.prices_as_of,
            "providers": {
                n: {"duration_s": round(m * 60, 3), "binding_limit": self.binding_limit[n]}
                for n, m in self.minutes_by_provider.items()
            },
        }


class _Packs:
    """Counts an embed step's requests with the run's packing rules (`Batcher.submit`)."""

    def __init__(self, max_items: int, max_tokens: int, target: int | None = None, count: Any = None) -> None:
        self.max_items, self.max_tokens = max_items, max_tokens
        # the run sizes its packs from the first answers (packing.Packer): this, from an exact count of
        # the first inputs
        self.target = target
        self.calibration = TokenCalibration()
        self.first: FirstCount[Any] | None = FirstCount(target, count) if target is not None and count else None
        self.keys: set[str] = set()
        self.tokens = 0
        self.closed = 0
        # inputs already counted: a repeat waits in the open request or finds the first one's answer
        # in the cache (hashes of the keys: a million of them take tens of MB, not hundreds)
        self.seen: set[int] = set()

    def add(self, key: str, tokens: int, payload: Any = None) -> bool:
        """Queue one input; False when an identical input was counted already."""
        h = hash(key)
        if h in self.seen:
            return False
        self.seen.add(h)
        if self.first is not None and self.target is not None:
            counted = self.first.add(payload, tokens)
            if counted is not None:
                self.first = None
                estimate, exact = counted
                if exact is not None:
                    self.calibration.observe(estimate, exact)
                    self.max_tokens = pack_max_tokens(self.target, self.calibration)
        if self.keys and (len(self.keys) >= self.max_items or self.tokens + tokens > self.max_tokens):
            self._close()
        self.keys.add(key)
        self.tokens += tokens
        if len(self.keys) >= self.max_items or self.tokens >= self.max_tokens:
            self._close()
        return True

    def _close(self) -> None:
        self.closed += 1
        self.keys = set()
        self.tokens = 0

    def requests(self) -> int:
        return self.closed + (1 if self.keys else 0)


def observed_completions(plan: Plan) -> dict[str, float]:
    """Mean completion tokens per answered row of each chat or completion step, from this job's earlier
    results."""
    frames = WorkDir(plan.output, plan.fingerprint).sources(fresh=False)
    if not frames:
        return {}
    names = [s.name for s in plan.steps if isinstance(s, ChatRuntime | CompletionRuntime)]
    cols = [c for n in names for c in (f"{n}__status", f"{n}__completion_tokens")]
    try:
        lf = pl.concat([f.select(ROW, "__part", *cols) for f in frames], how="vertical_relaxed")
        latest = keep_latest(lf.collect().lazy()).collect()
    except (pl.exceptions.PolarsError, OSError):
        return {}
    out = {}
    for n in names:
        done = latest.filter((pl.col(f"{n}__status") == "ok") & pl.col(f"{n}__completion_tokens").is_not_null())
        if done.height:
            out[n] = float(done[f"{n}__completion_tokens"].mean())  # type: ignore[arg-type]
    return out


def _audio_seconds(path: Path) -> float:
    """A file's duration from its header (WAV) or ffmpeg; from its size when neither can tell."""
    import asyncio

    try:
        seconds = asyncio.run(audiofiles.probe_duration(path, audiofiles.extension(path)))
    except Exception:  # unreadable files fail their row in the run; here they count by size
        seconds = None
    if seconds is None:
        try:
            seconds = path.stat().st_size / ASSUMED_AUDIO_BYTES_PER_S
        except OSError:
            seconds = 0.0
    return seconds


def estimate(plan: Plan, prices: PriceTable | None = None) -> Estimate:
    """Render every row's requests (nothing is sent) and add them up per step and provider.

    A later step's input depends on an earlier step's answer, which is unknown before the run: its
    prompt is estimated with a placeholder of the earlier step's `max_tokens` size in its place.
    """
    spec = plan.job.spec
    cache: ResponseCache | NoCache = (
        ResponseCache(spec.cache.dir, spec.cache.size_limit_gb) if spec.cache.enabled else NoCache()
    )
    models = {x.name: x.model for x in spec.steps}
    kinds = {x.name: x.kind for x in spec.steps}
    steps = [StepEstimate(s.name, kinds[s.name], s.provider, models[s.name]) for s in plan.steps]
    observed = observed_completions(plan)
    packs: dict[str, _Packs] = {}
    for rt in plan.steps:
        if isinstance(rt, EmbedRuntime):
            lim = plan.providers[rt.provider].limits
            tpm = lim.fixed("tpm")
            items, mbt, target = rt.batch_limits(max(1, int(tpm / lim.period_s)) if tpm else None)
            packs[rt.name] = _Packs(items, mbt, target, rt.count_exact)
    audio_s: dict[str, float] = defaultdict(float)
    stride = max(1, plan.total_rows // SAMPLE_REQUESTS)  # rows spread over the input, not its first ones
    try:
        for df in plan.source.batches(2000):
            for row in df.iter_rows(named=True):
                row.pop(ROW, None)
                for rt, est in zip(plan.steps, steps, strict=True):
                    est.rows += 1
                    try:
                        prep: Prepared | StepResult = rt.prepare(row)
                    except Exception:
                        est.skipped += 1
                        prep = StepResult.skipped("")
                    if isinstance(prep, Prepared):
                        _count(rt, est, prep, cache, packs.get(rt.name), observed.get(rt.name), audio_s, stride)
                    for f in rt.output_fields():
                        row.setdefault(f.name, "x" * 20)
    finally:
        cache.close()
    for est in steps:
        if est.sample_estimate and est.sample_exact:
            # the cheap count errs on the high side by design (it paces); the forecast wants the truth
            est.prompt_tokens = round(est.prompt_tokens * est.sample_exact / est.sample_estimate)
        est.completion_tokens = round(est.expected_completions)
        # what the provider's token dimension holds: an ipm provider's holds images
        est.limit_tokens = est.prompt_tokens + est.charged_completions + (est.images or 0)
        pack = packs.get(est.name)
        if pack is not None:
            est.requests = pack.requests()
        if est.kind in ("chat", "completion"):
            est.completion_basis = (
                f"observed mean of earlier answers ({observed[est.name]:.1f})"
                if est.name in observed
                else "max_tokens (an upper bound)"
            )
        elif est.kind == "transcribe":
            est.audio_minutes = round(audio_s[est.name] / 60, 3)
        price = prices.get(est.model) if prices else None
        if price is not None:
            if est.kind == "transcribe":
                est.cost = price.audio(audio_s[est.name])
            elif est.kind == "image":
                est.cost = price.image * (est.images or 0) if price.image is not None else None
            else:
                est.cost = price.tokens(est.prompt_tokens, est.completion_tokens)
        if not est.requests:
            est.cost = 0.0
    result = Estimate(steps, prices_as_of=prices.as_of if prices else None)
    by_provider: dict[str, list[StepEstimate]] = defaultdict(list)
    for est in steps:
        by_provider[est.provider].append(est)
    for name, ests in by_provider.items():
        lim = plan.providers[name].limits
        reqs = sum(e.requests for e in ests)
        toks = sum(e.limit_tokens for e in ests)
        rpm, tpm = lim.fixed("rpm"), lim.fixed("tpm")
        # the first request goes at once: a limit paces the other n - 1 (6 images at 50/min take 12 s,
        # not 14.4; at thousands of requests the difference vanishes). Its tokens: the mean request's.
        paced = (reqs - 1) / reqs if reqs else 0.0
        period_min = lim.period_s / 60 * paced
        bounds = {
            "requests/min": reqs / rpm * period_min if rpm else 0.0,
            "tokens/min": toks / tpm * period_min if tpm else 0.0,
        }
        if lim.ipm is not None:  # image requests reserve their images where tokens go (see gates.local_gate)
            bounds["images/min"] = toks / lim.ipm * period_min
        which = max(bounds, key=lambda k: bounds[k])
        result.minutes_by_provider[name] = bounds[which]
        result.binding_limit[name] = which if bounds[which] > 0 else "none (no rate limits set)"
    return result


def _count(
    rt: Any,
    est: StepEstimate,
    prep: Prepared,
    cache: Any,
    pack: _Packs | None,
    observed: float | None,
    audio_s: dict[str, float],
    stride: int,
) -> None:
    if prep.cache_key is not None and cache.get(prep.cache_key) is not None:
        est.cached += 1
        return
    if isinstance(rt, TranscribeRuntime):
        path = prep.path if isinstance(prep, AudioPrepared) else Path()
        seconds = _audio_seconds(path)
        audio_s[est.name] += seconds
        try:
            size = path.stat().st_size
        except OSError:
            size = 0
        max_bytes = int(rt.spec.max_upload_mb * 1e6)
        max_s = rt.spec.max_duration_s
        pieces = 1
        if size > max_bytes or (max_s is not None and seconds > max_s):
            # split as the run splits: re-encoded pieces of at most this long (cut at silences)
            pieces = max(1, math.ceil(seconds / audiofiles.max_piece_seconds(max_bytes, max_s)))
        est.requests += pieces
        return
    if isinstance(rt, ImageRuntime):
        # an image request holds its n images where others hold tokens (against the provider's ipm)
        est.images = (est.images or 0) + prep.tokens
        est.requests += 1
        return
    prompt = prep.prompt_estimate or prep.tokens
    if pack is not None and not pack.add(prep.cache_key or str(id(prep)), prompt, prep):
        return  # an identical input is sent once
    est.prompt_tokens += prompt
    if est.kind in ("chat", "embed", "completion") and est.rows % stride == 0:
        _sample(est, prep)
    if pack is not None:
        return
    est.requests += 1
    expected = observed if observed is not None else max(0, prep.tokens - prompt)
    est.expected_completions += expected
    est.charged_completions += prep.completion_charge if prep.completion_charge is not None else round(expected)


def _sample(est: StepEstimate, prep: Prepared) -> None:
    """Count one prompt both ways (the exact vocabulary loads once, on the first sample)."""
    try:
        exact = counter(exact_tokenizer_for(est.model))
    except Exception:  # the vocabulary cannot load: keep the cheap count
        return
    body = prep.request.json_body or {}
    text = getattr(prep, "text", None)
    if text is None and isinstance(body.get("prompt"), str):
        text = body["prompt"]  # a legacy completion's prompt
    # a chat request's messages as the dialogue knows them (the Responses API sends them as `input` items)
    messages = body.get("messages") or getattr(prep, "messages", None)
    if isinstance(text, str):
        est.sample_estimate += counter("heuristic")(text)
        est.sample_exact += exact(text)
    elif isinstance(messages, list | tuple):
        est.sample_estimate += chat_prompt_tokens(messages, counter("heuristic"))
        est.sample_exact += chat_prompt_tokens(messages, exact)
