"""The job file as pydantic models: every key known, every value checked, unknown keys rejected."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import looks_like_key, mask_secret

JOB_VERSION = 1
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# How a chat step asks for structured answers, best first: response_format json_schema, response_format
# json_object with the schema, a forced call of a function whose parameters are the schema, or the schema
# in the prompt. Whatever the form, the answer is checked on our side.
StructuredVia = Literal["json_schema", "json_object", "tools", "prompt"]
STRUCTURED_FORMS: tuple[StructuredVia, ...] = ("json_schema", "json_object", "tools", "prompt")


class Limits(_Strict):
    """Client-side limits of one provider key. Omitted = unlimited."""

    rpm: Annotated[int, Field(gt=0)] | Literal["auto"] | None = Field(
        None,
        description="requests per period (per minute by default); `auto`: found at run time from the "
        "server's x-ratelimit headers and 429s, starting at 60/min",
    )
    tpm: Annotated[int, Field(gt=0)] | Literal["auto"] | None = Field(
        None,
        description="tokens per period (prompt + max_tokens reserved); `auto`: found at run time, "
        "starting at 40,000/min",
    )
    concurrency: int | None = Field(None, gt=0, description="requests in flight at once")
    period_s: float = Field(60.0, gt=0, description="length of the rate window; 60 unless rehearsing")
    ipm: int | None = Field(
        None,
        gt=0,
        description="images per period, for image providers: each image "
        "request holds `n` images (held as the gate's token dimension, so not with tpm)",
    )

    @model_validator(mode="after")
    def _images(self) -> Limits:
        if self.ipm is not None and self.tpm is not None:
            raise ValueError(
                "limits set both ipm and tpm: ipm (images per period) is held where tpm is; give "
                "the image endpoint a provider of its own"
            )
        return self

    def fixed(self, name: Literal["rpm", "tpm"]) -> int | None:
        """The limit as a number; None when unlimited or found at run time (`auto`)."""
        value = self.rpm if name == "rpm" else self.tpm
        return value if isinstance(value, int) else None


def _check_key_env(v: str) -> None:
    """`v` must be a variable's name, never a key pasted in (shown masked if it looks like one)."""
    if looks_like_key(v) or not _ENV_NAME.match(v):
        shown = mask_secret(v) if looks_like_key(v) else repr(v)
        what = "looks like an API key itself" if looks_like_key(v) else "is not a variable name"
        raise ValueError(
            f"api_key_env is the NAME of the environment variable that holds the key, and {shown} {what}. "
            "Keys never go in job files: export MY_KEY=... and write api_key_env: MY_KEY"
            + (" (and since it was pasted here, consider revoking that key)" if looks_like_key(v) else "")
        )


class Provider(_Strict):
    """An OpenAI-compatible server and the key to use with it."""

    base_url: str | None = Field(None, description="e.g. https://api.apiyi.com/v1")
    fallback_urls: list[str] | None = Field(None, description="tried in order on connection errors / 5xx")
    api_key_env: str | list[str] | None = Field(
        None,
        description="environment variable holding the key; a list of names (or one variable holding "
        "comma-separated keys) makes a key pool: each key gets the provider's limits",
    )
    limits: Limits | None = None
    timeout_s: float | None = Field(None, gt=0, description="whole-request timeout")
    connect_timeout_s: float | None = Field(None, gt=0)
    headers: dict[str, str] | None = None
    tokenizer: Literal["o200k_base", "cl100k_base", "heuristic"] | None = Field(
        None, description="vocabulary for token estimates (default: by model)"
    )
    structured_via: StructuredVia | None = Field(
        None,
        description="structured-output form chat steps start from on this server (default: json_schema, "
        "then the next form each time the server refuses one)",
    )
    extra_params: Literal["error", "warn", "allow"] | None = Field(
        None,
        description="step params this pipeline does not know for the endpoint: refused before the run "
        "(error, the default), sent with a note (warn), or sent silently (allow); for servers with their own "
        "parameters (vLLM's top_k, ...)",
    )

    @field_validator("api_key_env")
    @classmethod
    def _key_env(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list):
            if not v:
                raise ValueError("api_key_env is an empty list: name at least one environment variable")
            for name in v:
                _check_key_env(name)
            if len(set(v)) < len(v):
                raise ValueError(f"api_key_env names a variable twice: {v}")
            return v
        if v is not None:
            _check_key_env(v)
        return v
        if v is not None and (looks_like_key(v) or not _ENV_NAME.match(v)):
            shown = mask_secret(v) if looks_like_key(v) else repr(v)
            what = "looks like an API key itself" if looks_like_key(v) else "is not a variable name"
            raise ValueError(
                f"api_key_env is the NAME of the environment variable that holds the key, and {shown} {what}. "
                "Keys never go in job files: export MY_KEY=... and write api_key_env: MY_KEY"
                + (" (and since it was pasted here, consider revoking that key)" if looks_like_key(v) else "")
            )
        return v

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
    dtypes: dict[str, Literal["string", "int64", "int32", "float64", "float32", "bool", "date", "datetime"]] | None = (
        Field(
            None,
            alias="schema",
            description="column types, e.g. {stars: int64}: CSV columns are read as "
            "text unless named here (so `007` stays `007`); JSONL and Parquet keep their own types unless "
            "named here. Every value is checked before the run",
        )
    )


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


def _refuse_reserved(params: dict[str, Any], reserved: set[str], hint: str = "") -> None:
    """Params a step builds itself (model, messages, prompt, input...) may not be set in `params`."""
    bad = sorted(reserved & params.keys())
    if bad:
        raise ValueError(f"params may not set {', '.join(bad)}: the step builds them{hint}")


# Set on the step itself (they change what the step stores), not in params.
_STEP_KEYS = {
    "tools": "tools",
    "tool_choice": "tool_choice",
    "functions": "tools",
    "function_call": "tool_choice",
}
# Chat completions parameters with no Responses API equivalent (`api: responses` refuses them).
RESPONSES_CHAT_ONLY = frozenset(
    {
        "n",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "logprobs",
        "top_logprobs",
        "logit_bias",
        "modalities",
        "audio",
        "prediction",
        "web_search_options",
    }
)
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


class ToolFunction(_Strict):
    name: str = Field(description="the function name (letters, digits, '_' or '-', up to 64)")
    description: str | None = None
    parameters: str | dict[str, Any] = Field(
        description="JSON Schema of the arguments: a .json file (relative to the working directory) or inline"
    )
    strict: bool | None = Field(None, description="default: true when the schema allows strict mode")

    @field_validator("name")
    @classmethod
    def _fname(cls, v: str) -> str:
        if not _TOOL_NAME.match(v):
            raise ValueError(f"function name {v!r} must be 1-64 letters, digits, '_' or '-'")
        return v


class Tool(_Strict):
    """A function the model is asked to call; its arguments become the step's columns."""

    type: Literal["function"] = "function"
    function: ToolFunction


class ToolChoiceFunction(_Strict):
    name: str


class ToolChoice(_Strict):
    type: Literal["function"] = "function"
    function: ToolChoiceFunction


class ChatStep(_StepBase):
    """One chat completion per row: the answer's text, or its structured fields, in the output column(s)."""

    kind: Literal["chat"]
    messages: list[Message] = Field(min_length=1)
    response_schema: str | dict[str, Any] | None = Field(
        None,
        description="JSON Schema of the answer (a .json file relative to the working directory, or inline): "
        "sent as response_format json_schema, checked on our side, stored as typed columns",
    )
    labels: list[str] | None = Field(
        None, min_length=2, description="shorthand for a schema whose answer is one of these labels"
    )
    tools: list[Tool] | None = Field(
        None, min_length=1, description="functions to call; the chosen call's arguments become the columns"
    )
    tool_choice: Literal["auto", "required"] | ToolChoice | None = Field(
        None, description="default: the tool when there is one, else `required`"
    )
    strict: bool | None = Field(None, description="send strict: true (default: when the schema allows it)")
    structured_via: StructuredVia | None = Field(
        None,
        description="pin the structured-output form of response_schema/labels (default: the provider's, "
        "stepping down json_schema -> json_object -> tools -> prompt when the server refuses one)",
    )
    output_layout: Literal["columns", "struct"] = Field(
        "columns", description="one column per top-level field (`<output>_<field>`), or one struct column"
    )
    repair_attempts: int = Field(2, ge=0, le=10, description="re-asks of an invalid answer, with the reason")
    keep_raw: bool = Field(
        False, description="keep every raw answer in `<step>__raw` (it is always kept for invalid rows)"
    )
    api: Literal["chat", "responses"] = Field(
        "chat",
        description="send as chat completions (/chat/completions) or to the Responses API (/responses): "
        "same messages, schema, tools and columns",
    )

    @field_validator("params")
    @classmethod
    def _params(cls, v: dict[str, Any]) -> dict[str, Any]:
        _refuse_reserved(v, _RESERVED_PARAMS)
        moved = sorted(k for k in v if k in _STEP_KEYS)
        if moved:
            raise ValueError(
                f"params may not set {', '.join(moved)}: set "
                f"{', '.join(sorted({_STEP_KEYS[k] for k in moved}))} on the step"
            )
        if "stream" in v and not isinstance(v["stream"], bool):
            raise ValueError(f"params.stream must be true or false, got {v['stream']!r}")
        n = v.get("n")
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
            raise ValueError(f"params.n must be an integer >= 1, got {n!r}")
        if v.get("top_logprobs") and not v.get("logprobs"):
            raise ValueError("params.top_logprobs needs params.logprobs: true")
        return v

    @field_validator("labels", mode="before")
    @classmethod
    def _label_text(cls, v: Any) -> Any:
        for label in v if isinstance(v, list) else []:
            if isinstance(label, bool | int | float) or label is None:
                raise ValueError(
                    f"label {label!r} is not text: YAML reads yes/no/on/off/true/false/null and "
                    "numbers as such; quote it, e.g. 'yes'"
                )
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        seen: dict[str, str] = {}
        for label in v:
            # the same folding as answers get (structured.answer.norm_label)
            key = " ".join(label.strip().strip("\"'`").rstrip(".!").strip().split()).casefold()
            if not key:
                raise ValueError("labels may not be empty")
            if key in seen:
                raise ValueError(
                    f"labels {seen[key]!r} and {label!r} are the same once case and spaces are "
                    "ignored; answers could not tell them apart"
                )
            seen[key] = label
        return v

    @model_validator(mode="after")
    def _structured(self) -> ChatStep:
        given = [k for k in ("response_schema", "labels", "tools") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"step `{self.name}` sets {' and '.join(given)}: choose one")
        if given and "response_format" in self.params:
            raise ValueError(
                f"step `{self.name}` sets {given[0]} and params.response_format: {given[0]} builds response_format"
            )
        loose = sorted(
            self.model_fields_set & {"strict", "output_layout", "repair_attempts", "keep_raw", "structured_via"}
        )
        if loose and not given:
            raise ValueError(
                f"step `{self.name}` sets {', '.join(loose)}, which only apply to structured "
                "answers: set response_schema, labels or tools"
            )
        if self.structured_via is not None and self.tools is not None:
            raise ValueError(
                f"step `{self.name}` sets structured_via with tools: tools are always sent as "
                "tools (structured_via applies to response_schema and labels)"
            )
        if self.tool_choice is not None and self.tools is None:
            raise ValueError(f"step `{self.name}` sets tool_choice without tools")
        if self.tools is not None:
            names = [t.function.name for t in self.tools]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"step `{self.name}`: tools named {', '.join(dup)} more than once")
            if isinstance(self.tool_choice, ToolChoice) and self.tool_choice.function.name not in names:
                raise ValueError(
                    f"step `{self.name}`: tool_choice names {self.tool_choice.function.name!r}, "
                    f"which is not one of the tools ({', '.join(names)})"
                )
        if self.output_layout == "struct" and self.labels is not None:
            raise ValueError(
                f"step `{self.name}`: output_layout struct does not apply to labels (the label is one column)"
            )
        if self.api == "responses":
            self._responses_only()
        return self

    def _responses_only(self) -> None:
        """What a step sent to the Responses API cannot ask for (checked before any request)."""
        chat_only = sorted(k for k in self.params if k in RESPONSES_CHAT_ONLY)
        if chat_only:
            raise ValueError(
                f"step `{self.name}` has api: responses, but params {', '.join(chat_only)} are chat completions "
                "parameters the Responses API has no equivalent for: remove them, or use api: chat"
            )
        if self.structured_via not in (None, "json_schema"):
            raise ValueError(
                f"step `{self.name}` has api: responses with structured_via {self.structured_via}: "
                "the Responses API is asked for structured output as text.format json_schema only; "
                "remove structured_via, or use api: chat"
            )

    @property
    def structured(self) -> bool:
        """True when the answer is JSON checked against a schema (response_schema, labels or tools)."""
        return self.response_schema is not None or self.labels is not None or self.tools is not None


_TRANSCRIBE_RESERVED = {
    "model",
    "file",
    "language",
    "prompt",
    "temperature",
    "response_format",
    "timestamp_granularities",
    "timestamp_granularities[]",
    "stream",
}


class TranscribeStep(_StepBase):
    """One audio file per row to /audio/transcriptions; the text lands in the output column.

    Files over `max_upload_mb` (or `max_duration_s`) are cut at silences with ffmpeg into pieces that
    fit, transcribed piece by piece, and joined with the timestamps shifted.
    """

    kind: Literal["transcribe"]
    audio: str = Field(
        description="path of the audio file, a template (e.g. {{ row.path }}); relative paths "
        "are read from the input file's folder (a glob's folder for a glob)"
    )
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
            raise ValueError(f"model {self.model} answers response_format json only, not {self.response_format}")
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
        None,
        ge=1,
        description="estimated tokens per request (default: about one second of the provider's "
        f"tpm, at most 100,000; never over {MAX_EMBED_REQUEST_TOKENS:,})",
    )
    max_input_tokens: int = Field(8191, ge=1, description="the model's limit on one input, in tokens")
    on_too_long: Literal["truncate", "error"] = Field(
        "truncate",
        description="an input over max_input_tokens: cut it to the limit (marked in "
        "`<step>__truncated`) or fail the row",
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
        _refuse_reserved(v, _EMBED_RESERVED_PARAMS, " (use `input:`)")
        fmt = v.get("encoding_format")
        if fmt is not None and fmt not in ("float", "base64"):
            raise ValueError(f"params.encoding_format must be float or base64, got {fmt!r}")
        dims = v.get("dimensions")
        if dims is not None and (not isinstance(dims, int) or isinstance(dims, bool) or dims < 1):
            raise ValueError(f"params.dimensions must be a positive whole number, got {dims!r}")
        return v


_COMPLETION_RESERVED_PARAMS = {"model", "prompt"}


class CompletionStep(_StepBase):
    """One legacy text completion per row (/completions): the text in the output column (a list when n > 1)."""

    kind: Literal["completion"]
    prompt: str = Field(description="a Jinja2 template; `row.<column>` for the row's values")

    @field_validator("params")
    @classmethod
    def _params(cls, v: dict[str, Any]) -> dict[str, Any]:
        _refuse_reserved(v, _COMPLETION_RESERVED_PARAMS, " (`prompt` is a key of the step)")
        return v


_IMAGE_RESERVED_PARAMS = {"model", "prompt"}


class ImageStep(_StepBase):
    """Images per row (/images/generations): files in `<output stem>_images/`, a list of
    {path, bytes, mime, revised_prompt} in the output column."""

    kind: Literal["image"]
    prompt: str = Field(description="a Jinja2 template; `row.<column>` for the row's values")

    @field_validator("params")
    @classmethod
    def _params(cls, v: dict[str, Any]) -> dict[str, Any]:
        _refuse_reserved(v, _IMAGE_RESERVED_PARAMS, " (`prompt` and `model` are keys of the step)")
        if v.get("stream"):
            raise ValueError("params.stream: streamed (partial) images are not supported; remove it")
        return v


Step = Annotated[ChatStep | EmbedStep | TranscribeStep | CompletionStep | ImageStep, Field(discriminator="kind")]
STEP_KINDS = ("chat", "embed", "transcribe", "completion", "image")


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


class ModelPrice(_Strict):
    """What one model costs, in USD; omitted parts are unknown (the cost is then null, not zero)."""

    input: float | None = Field(None, ge=0, description="per 1M input (prompt) tokens")
    output: float | None = Field(None, ge=0, description="per 1M output (completion) tokens")
    cached_input: float | None = Field(None, ge=0, description="per 1M input tokens served from the provider's cache")
    audio_minute: float | None = Field(None, ge=0, description="per minute of audio transcribed")
    image: float | None = Field(None, ge=0, description="per image generated")


class Budget(_Strict):
    """Spending limit of the job, over all its runs (`run --max-cost` overrides it)."""

    max_cost_usd: float = Field(gt=0, description="stop sending before the job's cost would cross this")


class JobFile(_Strict):
    """A pipeline job: rows in, one or more API steps, Parquet out."""

    version: Literal[1] = Field(description="job file format version")
    name: str = Field("job", description="the job's name (default: the job file's name without its extension)")
    description: str | None = None
    providers: dict[str, Provider] = Field(default_factory=dict)
    input: Input
    steps: list[Step] = Field(min_length=1)
    output: Output
    cache: Cache = Field(default_factory=Cache)
    retry: Retry = Field(default_factory=Retry)
    run: RunOptions = Field(default_factory=RunOptions)
    prices: dict[str, ModelPrice] | str | None = Field(
        None,
        description="prices per model (over the shipped defaults), or a YAML/JSON file of them "
        "(relative to the job file)",
    )
    budget: Budget | None = None

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
