"""The provider's model list (GET /models): fetched once, cached on disk for a day, and the closest names
to a model a step names but the provider does not list."""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import PipelineError
from .job.profiles import ResolvedProvider

MODEL_LIST_TTL_S = 24 * 3600.0
NO_LIST_STATUSES = (404, 405, 501)  # servers without a model list (small local servers, some proxies)


@dataclass(frozen=True)
class ModelInfo:
    """One entry of GET /models."""

    id: str
    owned_by: str | None = None
    created: int | None = None  # Unix seconds


@dataclass(frozen=True)
class ModelList:
    """What a provider answered: its models, or `models=None` when it lists none (`status` says how)."""

    models: tuple[ModelInfo, ...] | None
    url: str
    status: int = 200

    @property
    def ids(self) -> list[str]:
        return sorted(m.id for m in self.models or ())


def parse_models(body: bytes) -> tuple[ModelInfo, ...]:
    """The entries of a GET /models answer (OpenAI's `{"data": [...]}`; a bare list is taken too)."""
    data = json.loads(body)
    items = data.get("data", []) if isinstance(data, dict) else data
    out = []
    for m in items if isinstance(items, list) else []:
        if isinstance(m, dict) and isinstance(m.get("id"), str):
            created = m.get("created")
            owner = m.get("owned_by")
            out.append(
                ModelInfo(
                    m["id"],
                    owner if isinstance(owner, str) else None,
                    created if isinstance(created, int) and not isinstance(created, bool) else None,
                )
            )
    return tuple(sorted(out, key=lambda m: m.id))


async def fetch_models(provider: ResolvedProvider, api_key: str | None) -> ModelList:
    """One GET /models against the provider's current URL; PipelineError when it fails."""
    from .retry import classify
    from .transport import Transport, new_session

    async with new_session(4) as session:
        resp = await Transport(provider, api_key, session).get("/models")
    if resp.status in NO_LIST_STATUSES:
        return ModelList(None, resp.url, resp.status)
    if resp.status != 200:
        raise classify(resp.status, resp.body, resp.headers)
    try:
        return ModelList(parse_models(resp.body), resp.url)
    except ValueError as exc:
        raise PipelineError(f"GET {resp.url} answered something that is not JSON: {exc}") from None


class ModelListCache:
    """Model lists on disk, one file per provider address, fresh for `ttl_s` seconds (wall clock: the
    files outlive the process)."""

    def __init__(self, directory: Path | str | None, ttl_s: float = MODEL_LIST_TTL_S) -> None:
        self.directory = Path(directory) / "models" if directory is not None else None  # None: keeps nothing
        self.ttl_s = ttl_s

    def _path(self, provider: ResolvedProvider) -> Path:
        assert self.directory is not None
        ident = json.dumps([provider.name, provider.base_urls[0]]).encode()
        return self.directory / f"{hashlib.sha256(ident).hexdigest()[:24]}.json"

    def get(self, provider: ResolvedProvider, now: float) -> ModelList | None:
        """The cached list if fresh at `now`, else None (absent, stale or unreadable)."""
        if self.directory is None:
            return None
        try:
            data = json.loads(self._path(provider).read_text())
            if not 0 <= now - float(data["fetched_at"]) < self.ttl_s:
                return None
            models = data["models"]
            return ModelList(
                None if models is None else tuple(ModelInfo(**m) for m in models), data["url"], int(data["status"])
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, provider: ResolvedProvider, models: ModelList, now: float) -> None:
        """Store `models` (atomically); a cache that cannot be written is skipped silently."""
        if self.directory is None:
            return
        data: dict[str, Any] = {
            "fetched_at": now,
            "url": models.url,
            "status": models.status,
            "models": None if models.models is None else [asdict(m) for m in models.models],
        }
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump(data, f)
            os.replace(tmp, self._path(provider))
        except OSError:
            pass


def closest(name: str, ids: list[str], n: int = 3) -> list[str]:
    """The listed names closest to `name` (difflib), best first; case is ignored."""
    by_lower = {i.lower(): i for i in ids}
    return [by_lower[m] for m in difflib.get_close_matches(name.lower(), list(by_lower), n=n, cutoff=0.5)]


def unknown_model_warning(step: str, model: str, provider: str, listed: ModelList) -> str | None:
    """The warning for a step naming a model its provider does not list (None if listed or no list)."""
    ids = listed.ids
    if listed.models is None or model in ids:
        return None
    near = closest(model, ids)
    hint = f"; closest: {', '.join(near)}" if near else ""
    return (
        f"step `{step}`: model {model!r} is not in the models `{provider}` lists ({len(ids)} at "
        f"{listed.url}){hint}. `run` will still send it; `pipeline models --provider {provider}` lists them"
    )


@dataclass(frozen=True)
class StepModel:
    """The model a step names, and its provider."""

    step: str
    provider: str
    model: str


async def check_step_models(
    steps: list[StepModel],
    providers: dict[str, ResolvedProvider],
    api_keys: dict[str, str | None],
    cache: ModelListCache,
    now: float,
    *,
    offline: bool = False,
) -> tuple[list[str], list[str]]:
    """Warnings for steps naming models their provider does not list, and notes on what went unchecked.

    At most one GET /models per provider (none with a fresh cached list, none `offline`); never raises."""
    warnings: list[str] = []
    notes: list[str] = []
    lists: dict[str, ModelList | None] = {}
    for name in dict.fromkeys(s.provider for s in steps):
        p = providers.get(name)
        if p is None:
            continue
        listed = cache.get(p, now)
        if listed is None and offline:
            notes.append(f"model names of `{name}` not checked (--offline, no model list cached)")
        elif listed is None and not api_keys.get(name) and not p.key_optional:
            notes.append(f"model names of `{name}` not checked: {p.api_key_env} is not set")
        elif listed is None:
            try:
                listed = await fetch_models(p, api_keys.get(name))
            except PipelineError as exc:
                notes.append(f"model names of `{name}` not checked: GET /models failed: {exc}")
            else:
                cache.put(p, listed, now)
        if listed is not None and listed.models is None:
            notes.append(f"model names of `{name}` not checked: {listed.url} lists no models (HTTP {listed.status})")
        lists[name] = listed
    for s in steps:
        listed = lists.get(s.provider)
        w = unknown_model_warning(s.step, s.model, s.provider, listed) if listed is not None else None
        if w is not None:
            warnings.append(w)
    return warnings, notes
