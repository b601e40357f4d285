"""Prices per model and what a request costs: shipped defaults, overridden by the job or a file."""

from __future__ import annotations

from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import JobError

PRICE_KEYS = ("input", "output", "cached_input", "audio_minute", "image")


@dataclass(frozen=True, slots=True)
class Price:
    """USD per 1M tokens (input, output, cached_input), per audio minute, per image; None = unknown."""

    input: float | None = None
    output: float | None = None
    cached_input: float | None = None
    audio_minute: float | None = None
    image: float | None = None

    def tokens(self, prompt: int | None, completion: int | None, cached: int = 0) -> float | None:
        """The cost of a token-billed answer; None when a part that was used has no price."""
        prompt = prompt or 0
        completion = completion or 0
        if (prompt and self.input is None) or (completion and self.output is None):
            return None
        if self.input is None and self.output is None:
            return None
        cached = min(cached, prompt)
        cached_price = self.cached_input if self.cached_input is not None else self.input
        return (
            (prompt - cached) * (self.input or 0.0) + cached * (cached_price or 0.0) + completion * (self.output or 0.0)
        ) / 1e6

    def audio(self, seconds: float | None) -> float | None:
        if self.audio_minute is None or seconds is None:
            return None
        return self.audio_minute * seconds / 60

    def worst_case(self, tokens: int, completion_charge: int | None) -> float | None:
        """The most a request reserving `tokens` can cost: its completion part (`completion_charge`,
        max_tokens) at the output price, the rest at the input price. Without a completion charge every
        token is priced at the dearer of the two."""
        if completion_charge is not None:
            return self.tokens(max(0, tokens - completion_charge), completion_charge)
        known = [p for p in (self.input, self.output) if p is not None]
        if not known:
            return None
        return tokens * max(known) / 1e6


@dataclass(frozen=True)
class PriceTable:
    """Prices by model name; `as_of` dates the shipped defaults."""

    models: dict[str, Price]
    as_of: str | None = None

    def get(self, model: str) -> Price | None:
        """The model's price; a dated or suffixed name (`gpt-4o-mini-2024-07-18`) falls back to the
        longest listed name it starts with."""
        if model in self.models:
            return self.models[model]
        best = max((m for m in self.models if model.startswith(m + "-")), key=len, default=None)
        return self.models[best] if best is not None else None

    def over(self, overrides: dict[str, Price]) -> PriceTable:
        return PriceTable({**self.models, **overrides}, self.as_of)


def _price(where: str, model: str, raw: Any) -> Price:
    if not isinstance(raw, dict) or not raw or not set(raw) <= set(PRICE_KEYS):
        raise JobError(
            f"{where}: model {model!r} needs `input` and `output` prices (USD per 1M tokens; "
            f"also `cached_input`), or `audio_minute` / `image`; got {raw!r}"
        )
    try:
        values = {k: (None if v is None else float(v)) for k, v in raw.items()}
    except (TypeError, ValueError):
        raise JobError(f"{where}: model {model!r} has a price that is not a number: {raw!r}") from None
    if any(v is not None and v < 0 for v in values.values()):
        raise JobError(f"{where}: model {model!r} has a negative price: {raw!r}")
    return Price(**values)


def parse_prices(where: str, raw: Any) -> dict[str, Price]:
    """`{model: {input: ..., output: ...}}`, or the shipped file's shape `{models: {...}}`."""
    if isinstance(raw, dict) and isinstance(raw.get("models"), dict):
        raw = raw["models"]
    if not isinstance(raw, dict):
        raise JobError(f"{where}: a price table maps model names to {{input: ..., output: ...}} (USD per 1M tokens)")
    return {str(m): _price(where, str(m), p) for m, p in raw.items()}


def load_price_file(path: Path) -> dict[str, Price]:
    """A price table from a YAML or JSON file."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise JobError(f"cannot read the price table {path}: {exc}") from exc
    return parse_prices(str(path), raw)


def default_prices() -> PriceTable:
    """The table shipped with the package (pipeline/data/prices.yaml)."""
    text = resources.files("pipeline").joinpath("data/prices.yaml").read_text()
    raw = yaml.safe_load(text)
    return PriceTable(parse_prices("pipeline/data/prices.yaml", raw), str(raw.get("as_of")))


def job_prices(spec_prices: Any, job_dir: Path, extra: Path | None = None) -> PriceTable:
    """Defaults, then the job's `prices:` (a mapping, or a file relative to the job), then `extra`."""
    table = default_prices()
    if isinstance(spec_prices, str):
        p = Path(spec_prices).expanduser()
        table = table.over(load_price_file(p if p.is_absolute() else job_dir / p))
    elif isinstance(spec_prices, dict):
        table = table.over(
            {m: Price(**{f.name: getattr(v, f.name) for f in fields(Price)}) for m, v in spec_prices.items()}
        )
    if extra is not None:
        table = table.over(load_price_file(extra))
    return table
