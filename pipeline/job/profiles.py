"""Built-in provider profiles and how a job's `providers:` entries override them."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import JobError
from .model import Limits, Provider, StructuredVia

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
    # Local servers: no key (no Authorization header), generous timeouts (CPU models are slow), and the
    # concurrency the server handles by default; raise it to match how the server was started.
    # llama.cpp's server (and llama-cpp-python's): one slot unless started with --parallel N; it refuses
    # response_format json_schema on many builds but takes {"type": "json_object", "schema": ...}.
    "llamacpp": Provider(
        base_url="http://127.0.0.1:8080/v1",
        limits=Limits(concurrency=1),
        timeout_s=900,
        structured_via="json_object",
        extra_params="warn",
    ),
    # vLLM batches requests continuously: many in flight are fine.
    "vllm": Provider(
        base_url="http://127.0.0.1:8000/v1", limits=Limits(concurrency=32), timeout_s=900, extra_params="warn"
    ),
    # infinity (embeddings) serves the OpenAI routes at the root (`--url-prefix` adds one, e.g. /v1).
    "infinity": Provider(
        base_url="http://127.0.0.1:7997", limits=Limits(concurrency=8), timeout_s=600, extra_params="warn"
    ),
    # A LiteLLM proxy: a key only when the proxy has a master key or virtual keys (LITELLM_API_KEY).
    "litellm": Provider(
        base_url="http://127.0.0.1:4000/v1",
        api_key_env="LITELLM_API_KEY",
        limits=Limits(concurrency=16),
        timeout_s=900,
        extra_params="warn",
    ),
    # Ollama: OLLAMA_NUM_PARALLEL requests at once per model (it queues the rest).
    "ollama": Provider(
        base_url="http://127.0.0.1:11434/v1", limits=Limits(concurrency=4), timeout_s=900, extra_params="warn"
    ),
}

# Profiles whose key variable may be unset (then no Authorization header is sent).
KEY_OPTIONAL = frozenset({"sim", "litellm"})


@dataclass(frozen=True)
class ResolvedProvider:
    """A provider with every field decided: what the transport and the gate use."""

    name: str
    base_urls: tuple[str, ...]
    api_key_env: str | None  # the (first) variable holding the key
    limits: Limits
    timeout_s: float
    connect_timeout_s: float
    headers: tuple[tuple[str, str], ...]
    tokenizer: str | None
    key_optional: bool  # no key needed: no `api_key_env`, or a profile whose key is optional
    structured_via: StructuredVia | None = None  # the structured-output form to start from (chat steps)
    extra_params: str = "error"  # params unknown to the endpoint: error | warn | allow
    api_key_envs: tuple[str, ...] = ()  # every variable naming keys (a key pool when more than one key)


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
        api_key_env=p.api_key_env[0] if isinstance(p.api_key_env, list) else p.api_key_env,
        api_key_envs=tuple(p.api_key_env)
        if isinstance(p.api_key_env, list)
        else ((p.api_key_env,) if p.api_key_env else ()),
        limits=p.limits or Limits(),
        timeout_s=p.timeout_s or 600.0,
        connect_timeout_s=p.connect_timeout_s or 10.0,
        headers=tuple(sorted((p.headers or {}).items())),
        tokenizer=p.tokenizer,
        key_optional=name in KEY_OPTIONAL or not p.api_key_env,
        structured_via=p.structured_via,
        extra_params=p.extra_params or "error",
    )
