"""Built-in provider profiles and how a job's `providers:` entries override them."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import JobError
from .model import Limits, Provider

BUILTIN: dict[str, Provider] = {
    # API易: an OpenAI-compatible aggregator; limits are per key (its published defaults).
    "apiyi": Provider(
        base_url="https://api.apiyi.com/v1",
        fallback_urls=["https://vip.apiyi.com/v1"],
        api_key_env="APIYI_API_KEY",
        limits=Limits(rpm=3000, tpm=1_000_000, concurrency=100),
        timeout_s=600,
    ),
    # OpenAI's limits depend on the account's tier: these are tier-1-like; override them in the job.
    "openai": Provider(
        base_url="https://api.openai.com/v1",
        fallback_urls=[],
        api_key_env="OPENAI_API_KEY",
        limits=Limits(rpm=500, tpm=200_000, concurrency=50),
        timeout_s=600,
    ),
    # The local simulator started by `pipeline sim` (no key needed unless it is started with keys).
    "sim": Provider(
        base_url="http://127.0.0.1:8765/v1",
        fallback_urls=[],
        api_key_env="PIPELINE_SIM_KEY",
        limits=Limits(rpm=3000, tpm=1_000_000, concurrency=100),
        timeout_s=120,
    ),
}

KEY_OPTIONAL = frozenset({"sim"})


@dataclass(frozen=True)
class ResolvedProvider:
    """A provider with every field decided: what the transport and the gate use."""

    name: str
    base_urls: tuple[str, ...]
    api_key_env: str | None
    limits: Limits
    timeout_s: float
    connect_timeout_s: float
    headers: tuple[tuple[str, str], ...]
    tokenizer: str | None
    key_optional: bool
    extra_params: str = "error"  # params unknown to the endpoint: error | warn | allow


def _merge(base: Provider, over: Provider) -> Provider:
    fields = over.model_fields_set
    data = base.model_dump()
    for name in fields:
        value = getattr(over, name)
        if name == "limits" and value is not None and base.limits is not None:
            merged = base.limits.model_dump()
            merged.update(value.model_dump(include=value.model_fields_set))
            data["limits"] = merged
        elif name == "headers" and value is not None and base.headers:
            data["headers"] = {**base.headers, **value}
        else:
            data[name] = value.model_dump() if hasattr(value, "model_dump") else value
    return Provider.model_validate(data)


def resolve_provider(name: str, overrides: dict[str, Provider]) -> ResolvedProvider:
    """The named provider: a built-in profile with the job's overrides, or one the job defines."""
    if name in BUILTIN:
        p = _merge(BUILTIN[name], overrides[name]) if name in overrides else BUILTIN[name]
    elif name in overrides:
        p = overrides[name]
    else:
        known = sorted(set(BUILTIN) | set(overrides))
        raise JobError(f"unknown provider {name!r}; known providers: {', '.join(known)}")
    if not p.base_url:
        raise JobError(f"provider {name!r} needs a base_url (e.g. https://api.example.com/v1)")
    return ResolvedProvider(
        name=name,
        base_urls=(p.base_url, *(u.rstrip("/") for u in (p.fallback_urls or []))),
        api_key_env=p.api_key_env,
        limits=p.limits or Limits(),
        timeout_s=p.timeout_s or 600.0,
        connect_timeout_s=p.connect_timeout_s or 10.0,
        headers=tuple(sorted((p.headers or {}).items())),
        tokenizer=p.tokenizer,
        key_optional=name in KEY_OPTIONAL,
        extra_params=p.extra_params or "error",
    )
