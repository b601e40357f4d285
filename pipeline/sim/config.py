"""Simulator configuration: per-key limits, fault rules, the config itself and the request record."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

FAULT_KINDS = frozenset(
    {
        "status",
        "rate_limit",
        "empty_429",
        "reset",
        "hang",
        "malformed_json",
        "error_in_200",
        "truncated_stream",
        "invalid_json_answer",
        "schema_violation",
        "refusal",
        "label_variant",
    }
)
# Faults that replace the answer with a transport or HTTP-level failure (any endpoint).
ERROR_FAULTS = frozenset({"status", "rate_limit", "empty_429", "reset", "malformed_json", "error_in_200"})
# Faults that alter the content of a chat answer (chat completions only).
CONTENT_FAULTS = frozenset({"truncated_stream", "invalid_json_answer", "schema_violation", "refusal", "label_variant"})

ERROR_STYLES = frozenset({"openai", "litellm", "vllm", "ollama"})
TRANSCRIPT_STYLES = frozenset({"openai", "whisper"})

DEFAULT_MODELS = [
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-4.1-mini",
    "claude-sonnet-4",
    "gemini-2.5-flash",
    "deepseek-chat",
    "qwen-plus",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "text-embedding-ada-002",
    "whisper-1",
    "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe",
    "gpt-3.5-turbo-instruct",
    "davinci-002",
    "babbage-002",
    "dall-e-2",
    "dall-e-3",
    "gpt-image-1",
]


@dataclass
class KeyLimits:
    """Limits of one API key; None means unlimited."""

    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None
    ipm: int | None = None  # images per window (image endpoints count images, not requests)


@dataclass
class FaultRule:
    """One fault injection rule; see the package docs for the meaning of each kind."""

    kind: str
    path: str | None = None
    first: int | None = None
    every: int | None = None
    probability: float | None = None
    when_contains: str | None = None
    status: int = 500
    error_type: str = "server_error"
    error_code: str | None = None
    retry_after: float | None = None
    hang_s: float = 3600
    times: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {sorted(FAULT_KINDS)}")
        if self.every is not None and self.every < 1:
            raise ValueError("FaultRule.every must be >= 1")
        if self.probability is not None and not 0.0 <= self.probability <= 1.0:
            raise ValueError("FaultRule.probability must be within [0, 1]")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FaultRule:
        return cls(**_known_fields(cls, d))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _known_fields(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    return dict(d)


def _limits(v: KeyLimits | dict[str, Any] | None) -> KeyLimits:
    if v is None:
        return KeyLimits()
    if isinstance(v, KeyLimits):
        return v
    return KeyLimits(**_known_fields(KeyLimits, v))


def _rule(v: FaultRule | dict[str, Any]) -> FaultRule:
    return v if isinstance(v, FaultRule) else FaultRule.from_dict(v)


@dataclass
class SimConfig:
    """Everything the simulator does: keys and limits, latency, faults, models."""

    keys: dict[str, KeyLimits] | None = None
    default_limits: KeyLimits = field(default_factory=KeyLimits)
    window_s: float = 60.0
    latency_s: float = 0.0
    latency_per_token_s: float = 0.0
    latency_per_input_token_s: float = 0.0  # embeddings: time per input token of a request
    latency_per_audio_s: float = 0.0
    jitter: float = 0.0
    seed: int = 0
    faults: list[FaultRule] = field(default_factory=list)
    max_upload_bytes: int = 25 * 1024 * 1024
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    strict_models: bool = False
    # False plays a server without structured outputs (response_format json_schema ignored)
    structured_outputs: bool = True
    # Prompt caching: this share of each chat/Responses request's prompt tokens is reported as served from
    # the cache (usage.prompt_tokens_details.cached_tokens / input_tokens_details.cached_tokens).
    cached_prompt_share: float = 0.0
    # The response_format types the server takes; any other is refused with `refuse_status` and a message
    # naming response_format. llama-cpp-python: ["text", "json_object"] and 500 ("Input should be 'text'
    # or 'json_object'"); it takes {"type": "json_object", "schema": {...}} and follows the schema.
    response_formats: list[str] = field(default_factory=lambda: ["text", "json_object", "json_schema"])
    refuse_status: int = 400
    tools: bool = True  # False: requests with `tools` are refused (400 naming tools)
    # llama.cpp's `interrupt_requests`: a running stream ends (`[DONE]`, no finish_reason) as soon as
    # another request arrives.
    interrupt_streams: bool = False
    # How errors look: "openai"; "litellm" (the status in `code` as text, "Invalid model name passed in
    # model=..." for an unknown model with strict_models); "vllm" (404 "The model `x` does not exist.");
    # "ollama" (404 'model "x" not found, try pulling it first').
    error_style: str = "openai"
    # How transcripts look in json/verbose_json: "openai" (text trimmed); "whisper" (faster-whisper-server,
    # whisper.cpp: every segment's text starts with a space and `text` is the segments joined as they are,
    # so it starts with a space too).
    transcript_style: str = "openai"
    models_list: bool = True  # False: GET /v1/models answers 404 (small servers list no models)
    require_key: bool = True  # False: a local server without keys (requests without Authorization pass)
    # Real servers' limits: the per-window_s limits enforced over shorter periods (1: per second, as
    # "60,000 RPM enforced as 1,000 per second"), at a share of their value (0.5: the real limits are
    # half of what the job says); answers carry OpenAI-style x-ratelimit-* headers (per-minute limits,
    # remaining and reset of the enforced window); limit 429s carry retry-after(-ms).
    limit_period_s: float | None = None
    limit_scale: float = 1.0
    rate_headers: bool = False
    limit_retry_after: bool = False
    # LiteLLM's per-key max_parallel_requests: beyond it, a 429 with `retry-after: 60` and a message
    # naming the parallel request limit (LiteLLM's body: the status in `code`)
    max_parallel_requests: int | None = None
    image_download_failures: int = 0  # each image URL answers 503 this many times before its PNG
    image_download_status: int = 503  # the status of those failures (403: an expired signed URL)
    # Keys revoked mid-run: key -> how many API requests it is answered before every later one gets
    # 401 invalid_api_key (as a key deleted on the provider's dashboard does). GET /models counts too.
    revoke_after: dict[str, int] | None = None

    def __post_init__(self) -> None:
        # Configs read as YAML may hold "3e-05" as text (YAML 1.1 floats need a dot): take the number.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "float" and isinstance(value, str | int) and not isinstance(value, bool):
                setattr(self, f.name, float(value))
        if self.transcript_style not in TRANSCRIPT_STYLES:
            raise ValueError(
                f"SimConfig.transcript_style must be one of {sorted(TRANSCRIPT_STYLES)}, got {self.transcript_style!r}"
            )
        if self.window_s <= 0:
            raise ValueError("SimConfig.window_s must be > 0")
        if self.error_style not in ERROR_STYLES:
            raise ValueError(f"SimConfig.error_style must be one of {sorted(ERROR_STYLES)}, got {self.error_style!r}")
        if self.limit_period_s is not None and self.limit_period_s <= 0:
            raise ValueError("SimConfig.limit_period_s must be > 0")
        if self.limit_scale <= 0:
            raise ValueError("SimConfig.limit_scale must be > 0")
        if self.keys is not None:
            self.keys = {str(k): _limits(v) for k, v in self.keys.items()}
        self.default_limits = _limits(self.default_limits)
        if self.revoke_after is not None:
            self.revoke_after = {str(k): int(v) for k, v in self.revoke_after.items()}
        self.faults = [_rule(r) for r in self.faults]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SimConfig:
        """Build a config from plain data (as loaded from JSON or YAML)."""
        return cls(**_known_fields(cls, d or {}))

    def to_dict(self) -> dict[str, Any]:
        """Plain data that `from_dict` accepts back."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RequestRecord:
    """One request as the simulator saw and answered it."""

    seq: int
    t_start: float
    t_end: float
    method: str
    path: str
    key: str | None
    model: str | None
    status: int
    fault: str | None
    body: dict[str, Any] | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    n_inputs: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
