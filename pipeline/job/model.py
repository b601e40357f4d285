"""The job file as pydantic models: every key known, every value checked, unknown keys rejected."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

JOB_VERSION = 1
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(_Strict):
    """Client-side limits of one provider key. Omitted = unlimited."""

    rpm: int | None = Field(None, gt=0, description="requests per period (per minute by default)")
    tpm: int | None = Field(None, gt=0, description="tokens per period (prompt + max_tokens reserved)")
    concurrency: int | None = Field(None, gt=0, description="requests in flight at once")
    period_s: float = Field(60.0, gt=0, description="length of the rate window; 60 unless rehearsing")


class Provider(_Strict):
    """An OpenAI-compatible server and the key to use with it."""

    base_url: str | None = Field(None, description="e.g. https://api.apiyi.com/v1")
    fallback_urls: list[str] | None = Field(None, description="tried in order on connection errors / 5xx")
    api_key_env: str | None = Field(None, description="environment variable holding the key")
    limits: Limits | None = None
    timeout_s: float | None = Field(None, gt=0, description="whole-request timeout")
    connect_timeout_s: float | None = Field(None, gt=0)
    headers: dict[str, str] | None = None
    tokenizer: Literal["o200k_base", "cl100k_base", "heuristic"] | None = Field(
        None, description="vocabulary for token estimates (default: by model)"
    )

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://", v):
            raise ValueError(f"base_url must start with http:// or https://, got {v!r}")
        return v.rstrip("/") if v else v


class Input(_Strict):
    """Where the rows come from."""

    path: str = Field(
        description="csv | jsonl | parquet file; or a glob of audio files (archive/**/*.{mp3,wav}) or a "
        "folder of them: one row per file, columns path (relative to the glob's folder), size_bytes, "
        "modified_at"
    )
    format: Literal["csv", "jsonl", "parquet"] | None = Field(None, description="default: from the extension")
    id: str | None = Field(None, description="unique key column; default: the row number (`path` for a glob)")
    limit: int | None = Field(None, gt=0, description="only the first N rows (a trial run)")


class Message(_Strict):
    role: Literal["system", "user", "assistant", "developer"]
    content: str = Field(description="a Jinja2 template; `row.<column>` for the row's values")


class _StepBase(_Strict):
    name: str = Field(description="step name; prefixes its status/error/... columns")
    provider: str = Field(description="a built-in profile (apiyi, openai, sim) or one from `providers`")
    model: str
    params: dict[str, Any] = Field(default_factory=dict, description="passed through to the API")
    output: str | None = Field(None, description="output column (default: the step name)")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"step name {v!r} must be letters, digits, '_' or '-', starting with a letter")
        return v

    @property
    def output_column(self) -> str:
        return self.output or self.name


_RESERVED_PARAMS = {"model", "messages", "stream_options"}


class ChatStep(_StepBase):
    """One chat completion per row; the answer's text lands in the output column."""

    kind: Literal["chat"]
    messages: list[Message] = Field(min_length=1)

    @field_validator("params")
    @classmethod
    def _params(cls, v: dict[str, Any]) -> dict[str, Any]:
        bad = sorted(_RESERVED_PARAMS & v.keys())
        if bad:
            raise ValueError(f"params may not set {', '.join(bad)}: the step builds them")
        if v.get("stream"):
            raise ValueError("params.stream is not supported yet: chat steps send non-streamed requests")
        return v


_TRANSCRIBE_RESERVED = {
    "model", "file", "language", "prompt", "temperature", "response_format", "timestamp_granularities",
    "timestamp_granularities[]", "stream",
}


class TranscribeStep(_StepBase):
    """One audio file per row to /audio/transcriptions; the text lands in the output column.

    Files over `max_upload_mb` (or `max_duration_s`) are cut at silences with ffmpeg into pieces that
    fit, transcribed piece by piece, and joined with the timestamps shifted.
    """

    kind: Literal["transcribe"]
    audio: str = Field(description="path of the audio file, a template (e.g. {{ row.path }}); relative paths "
                                   "are read from the input file's folder (a glob's folder for a glob)")
    language: str | None = Field(None, description="ISO-639-1 code, a template allowed; default: detected")
    prompt: str | None = Field(None, description="text to guide the model (a template allowed)")
    temperature: float | None = Field(None, ge=0, le=1)
    response_format: Literal["json", "text", "srt", "vtt", "verbose_json"] = Field(
        "json", description="verbose_json adds columns <step>__language, <step>__duration, <step>__segments"
    )
    timestamp_granularities: list[Literal["segment", "word"]] | None = Field(
        None, description="verbose_json only; `word` adds the column <step>__words"
    )
    max_upload_mb: float = Field(25.0, ge=0.1, description="bigger files are split (MB = 10^6 bytes)")
    max_duration_s: float | None = Field(
        None, ge=10, description="longer audio is split too (some models cap the length)"
    )
    timeout_s: float | None = Field(
        None, gt=0, description="per request; default sized for the audio: 60 s + 12 s/audio minute + 8 s/MB"
    )

    @field_validator("params")
    @classmethod
    def _params(cls, v: dict[str, Any]) -> dict[str, Any]:
        bad = sorted(_TRANSCRIBE_RESERVED & v.keys())
        if bad:
            raise ValueError(f"params may not set {', '.join(bad)}: they are keys of the step")
        return v

    @model_validator(mode="after")
    def _formats(self) -> TranscribeStep:
        if self.timestamp_granularities and self.response_format != "verbose_json":
            raise ValueError("timestamp_granularities needs response_format: verbose_json")
        if self.model.startswith("gpt-4o") and self.response_format != "json":
            raise ValueError(
                f"model {self.model} answers response_format json only, not {self.response_format}"
            )
        return self


MAX_EMBED_BATCH = 2048  # inputs per /embeddings request (OpenAI's limit)
MAX_EMBED_REQUEST_TOKENS = 300_000  # tokens per /embeddings request (OpenAI's limit)
_EMBED_RESERVED_PARAMS = {"model", "input"}


class EmbedStep(_StepBase):
    """One embedding vector per row; many rows are packed into each /embeddings request."""

    kind: Literal["embed"]
    input: str = Field(description='the text to embed: a template, e.g. "{{ row.text }}"')
    batch_size: int = Field(512, ge=1, description=f"inputs per request, at most {MAX_EMBED_BATCH}")
    max_batch_tokens: int | None = Field(
        None, ge=1, description="estimated tokens per request (default: about one second of the provider's "
        f"tpm, at most 100,000; never over {MAX_EMBED_REQUEST_TOKENS:,})"
    )
    max_input_tokens: int = Field(8191, ge=1, description="the model's limit on one input, in tokens")
    on_too_long: Literal["truncate", "error"] = Field(
        "truncate", description="an input over max_input_tokens: cut it to the limit (marked in "
        "`<step>__truncated`) or fail the row"
    )

    @field_validator("batch_size")
    @classmethod
    def _batch_size(cls, v: int) -> int:
        if v > MAX_EMBED_BATCH:
            raise ValueError(
                f"batch_size {v} is over {MAX_EMBED_BATCH}, the most inputs one /embeddings request may carry"
            )
        return v

    @field_validator("max_batch_tokens")
    @classmethod
    def _max_batch_tokens(cls, v: int | None) -> int | None:
        if v is not None and v > MAX_EMBED_REQUEST_TOKENS:
            raise ValueError(
                f"max_batch_tokens {v:,} is over {MAX_EMBED_REQUEST_TOKENS:,}, the most tokens one "
                "/embeddings request may carry"
            )
        return v

    @field_validator("params")
    @classmethod
    def _params(cls, v: dict[str, Any]) -> dict[str, Any]:
        bad = sorted(_EMBED_RESERVED_PARAMS & v.keys())
        if bad:
            raise ValueError(f"params may not set {', '.join(bad)}: the step builds them (use `input:`)")
        fmt = v.get("encoding_format")
        if fmt is not None and fmt not in ("float", "base64"):
            raise ValueError(f"params.encoding_format must be float or base64, got {fmt!r}")
        dims = v.get("dimensions")
        if dims is not None and (not isinstance(dims, int) or isinstance(dims, bool) or dims < 1):
            raise ValueError(f"params.dimensions must be a positive whole number, got {dims!r}")
        return v


Step = Annotated[ChatStep | EmbedStep | TranscribeStep, Field(discriminator="kind")]


class Output(_Strict):
    path: str = Field(description="the final Parquet file, written atomically")
    keep: list[str] | None = Field(None, description="input columns to keep (default: all)")


class Cache(_Strict):
    enabled: bool = True
    dir: str = ".pipeline-cache"
    size_limit_gb: float = Field(50.0, gt=0)


class Retry(_Strict):
    max_attempts: int = Field(6, ge=1, le=50)
    backoff_base_s: float = Field(1.0, gt=0)
    backoff_cap_s: float = Field(60.0, gt=0)


class RunOptions(_Strict):
    max_rows_in_flight: int | None = Field(None, gt=0, description="default: 4 x the largest concurrency")
    stop_after_identical_failures: int = Field(
        25, ge=2, description="this many rows failing in a row with the same error stop the run"
    )
    flush_rows: int = Field(2000, gt=0, description="rows per Parquet part in the work folder")
    flush_interval_s: float = Field(2.0, gt=0)


class JobFile(_Strict):
    """A pipeline job: rows in, one or more API steps, Parquet out."""

    version: Literal[1] = Field(description="job file format version")
    name: str
    description: str | None = None
    providers: dict[str, Provider] = Field(default_factory=dict)
    input: Input
    steps: list[Step] = Field(min_length=1)
    output: Output
    cache: Cache = Field(default_factory=Cache)
    retry: Retry = Field(default_factory=Retry)
    run: RunOptions = Field(default_factory=RunOptions)

    @model_validator(mode="after")
    def _unique_steps(self) -> JobFile:
        seen: set[str] = set()
        for s in self.steps:
            if s.name in seen:
                raise ValueError(f"two steps are named {s.name!r}; step names must be unique")
            seen.add(s.name)
        outs: dict[str, str] = {}
        for s in self.steps:
            if s.output_column in outs:
                raise ValueError(
                    f"steps {outs[s.output_column]!r} and {s.name!r} both write column {s.output_column!r}"
                )
            outs[s.output_column] = s.name
        return self


def job_json_schema() -> dict[str, Any]:
    """The JSON Schema of the job file (schemas/job.schema.json is generated from this)."""
    schema = JobFile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://pipeline.local/schemas/job.schema.json"
    return schema
