"""The `embed` step: one vector per row, rows packed into shared /embeddings requests, cached per row.

The kind sends nothing: it prepares each row's input and gives the engine's packer (`packing.Packer`)
the pure functions that build a pack's request, read its answer and split it into per-row answers."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from ..cache import canonical_json, request_key
from ..calls import Reply
from ..errors import RowError, TransientError
from ..job.model import EmbedStep, Limits
from ..records import Parsed, StepResult, Usage
from ..requests import HttpRequest
from ..sinks import FinalColumn, VectorColumn
from ..templating import NullValue, RenderError, Template, compile_template
from ..tokens import CHUNK_CHARS, bpe, counter, encode_safely, exact_tokenizer_for, tokenizer_for
from .base import BadInput, Done, Prepared, StepRuntime, load_json

ENDPOINT = "/embeddings"
# Vector sizes of known models (without `dimensions`): the final column's size when no row succeeded.
KNOWN_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
# Estimated tokens per request when the provider sets no token budget (OpenAI allows 300,000).
DEFAULT_MAX_BATCH_TOKENS = 100_000
# Default batch size as a share of one second of the token budget (see batch_limits): ten fit a second.
BATCH_SHARE = 0.1
# Requests of one step kept filled with rows at once, at most (bounds the rows held in memory).
BATCHES_IN_FLIGHT = 16
# Vector data (float32) of the rows one step keeps in flight, at most, but never fewer rows than two full
# requests: the answers of the requests in flight are held as they arrive, as their bodies (base64: 4/3
# of it) and as vectors, ~11 kB per 1536-d row in all. At 16 requests of 512 rows that was 9,216 rows in
# flight and a 331-342 MB peak (10^5 rows, concurrency 100); 16 MB is 2,730 rows of 1536-d. A job that
# needs more rows in flight (a fast server, a high token limit, short texts) sets run.max_rows_in_flight.
VECTOR_BYTES_IN_FLIGHT = 16 * 2**20
# The vector size assumed for the bound above when the model is not known and the job sets no `dimensions`.
ASSUMED_DIMENSIONS = 1536

# `{{ row.col }}` or `{{ row["col"] }}` alone: the input is that column's value, which must be text.
_BARE = re.compile(r"""^\{\{\s*row(?:\.([A-Za-z_][A-Za-z0-9_]*)|\[\s*(['"])(.+?)\2\s*\])\s*\}\}$""")


@dataclass(frozen=True, slots=True)
class EmbedPrepared(Prepared):
    """One row's input, ready to pack."""

    text: str = ""
    truncated: bool = False


def _is_text(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return bool(
        pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t) or pa.types.is_null(t)
    )


def decode_vector(value: Any) -> tuple[np.ndarray, str | None]:
    """An answer's `embedding`: base64 of little-endian float32 (kept as given, for the cache), or a
    list of numbers (servers that ignore `encoding_format`). Raises TransientError when it is neither."""
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise TransientError(f"an embedding is not valid base64: {value[:40]!r}") from exc
        if not raw or len(raw) % 4:
            raise TransientError(f"a base64 embedding has {len(raw)} bytes, not a whole number of float32")
        return np.frombuffer(raw, dtype="<f4"), value
    if isinstance(value, list) and value:
        try:
            vec = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise TransientError("an embedding list holds something other than numbers") from exc
        if vec.ndim == 1:
            return vec, None
    raise TransientError(f"an embedding is neither base64 text nor a list of numbers: {str(value)[:60]}")


def _vector_block(n: int, dim: int) -> np.ndarray:
    """An (n, dim) float32 array in memory of Arrow's pool: an answer's vectors stay in one buffer
    until their part is written (not thousands of small allocations the process cannot give back)."""
    return np.frombuffer(pa.allocate_buffer(n * dim * 4), dtype=np.float32).reshape(n, dim)


class EmbedRuntime(StepRuntime):
    def __init__(self, spec: EmbedStep, cache_ns: str, tokenizer: str | None) -> None:
        super().__init__(spec.name, spec.output_column, spec.provider, cache_ns)
        self.spec = spec
        self._input = compile_template(spec.input, f"step `{spec.name}`, input")
        bare = _BARE.match(spec.input.strip())
        self._column: str | None = (bare.group(1) or bare.group(3)) if bare else None
        self._params = dict(spec.params)  # the job's params: part of each row's cache key
        # base64 unless the job says otherwise: 2.5x smaller on the wire, exact float32
        self._wire_params = {"encoding_format": "base64", **self._params}
        self._dims: int | None = spec.params.get("dimensions")
        self._estimate = counter(tokenizer_for(spec.model, tokenizer))
        exact = tokenizer in ("o200k_base", "cl100k_base")
        self._exact = tokenizer if tokenizer and exact else exact_tokenizer_for(spec.model)
        self._trunc_col = f"{spec.name}__truncated"
        self._fresh()

    def _fresh(self) -> None:
        self._seen_dim: int | None = None  # vector size of this run's first answer

    # ------------------------------------------------------------------ plan
    def templates(self) -> list[Template]:
        return [self._input]

    def output_fields(self) -> list[pa.Field]:
        # Parts hold variable lists: the size is fixed in the final file once every row agrees on it.
        return [pa.field(self.output_column, pa.list_(pa.float32())), pa.field(self._trunc_col, pa.bool_())]

    def plan_problems(self, columns: Mapping[str, pa.DataType], limits: Limits) -> list[str]:
        problems = []
        col = self._column
        if col is not None and col in columns and not _is_text(columns[col]):
            problems.append(
                f"step `{self.name}`: input `{self.spec.input}` is column `{col}` of type {columns[col]}, "
                f"not text; embed a text column, or write `{{{{ row.{col} | string }}}}` to embed its "
                "text form"
            )
        mbt = self.spec.max_batch_tokens
        tpm = limits.fixed("tpm")
        if mbt is not None and tpm is not None and mbt > tpm:
            problems.append(
                f"step `{self.name}`: max_batch_tokens {mbt:,} is over the token budget of provider "
                f"`{self.provider}` (tpm {tpm:,}): such a request could never be admitted"
            )
        return problems

    def rows_in_flight_hint(self, concurrency: int | None) -> int | None:
        # Enough rows to fill every request that can be in flight, plus the ones being filled; as many
        # as VECTOR_BYTES_IN_FLIGHT of answers, at most, or two full requests.
        batches = min(concurrency or BATCHES_IN_FLIGHT, BATCHES_IN_FLIGHT) + 2
        by_bytes = VECTOR_BYTES_IN_FLIGHT // (4 * (self._expected_dims() or ASSUMED_DIMENSIONS))
        return max(2 * self.spec.batch_size, min(self.spec.batch_size * batches, by_bytes))

    def final_columns(self) -> list[FinalColumn]:
        # the vector size is only known from the answers: the sink fixes it from the finished rows
        return [VectorColumn(self.name, self.output_column, pa.float32(), self._expected_dims())]

    def _expected_dims(self) -> int | None:
        """The vector size the job asks for (`dimensions`) or the model's known one; None if neither."""
        return self._dims or KNOWN_DIMENSIONS.get(self.spec.model)

    # ------------------------------------------------------------------ rows
    def _text(self, row: Mapping[str, Any]) -> str:
        if self._column is None:
            return self._input.render(row)
        try:
            value = row[self._column]
        except KeyError:
            raise RenderError(f"step `{self.name}`, input: no column `{self._column}` in this row") from None
        if value is None:
            raise NullValue(f"column `{self._column}` is null")
        if not isinstance(value, str):
            raise BadInput(f"input column `{self._column}` holds {type(value).__name__} {str(value)[:60]!r}, not text")
        return value

    def prepare(self, row: Mapping[str, Any]) -> EmbedPrepared:
        text = self._text(row)
        if not text.strip():
            raise NullValue("input is empty")  # nothing to embed (and servers refuse empty strings)
        limit = self.spec.max_input_tokens
        exact = 0
        truncated = False
        # A token is at least one byte, so a text of at most `limit` bytes always fits: the exact count
        # (and its 100+ MB vocabulary) is needed only for texts that might be too long.
        if len(text) * 4 > limit and len(text.encode()) > limit:
            enc = bpe(self._exact)
            try:
                # stops counting once over the limit: a 2 MB text is cut, not encoded whole
                ids = encode_safely(enc, text, stop_after=limit + 1)
            except Exception as exc:  # the vocabulary refused it: this row fails, not the run
                raise BadInput(
                    f"cannot count the tokens of this input ({len(text):,} characters): {type(exc).__name__}: {exc}"
                ) from exc
            exact = len(ids)
            if exact > limit:
                if self.spec.on_too_long == "error":
                    counted = f"{exact:,}" if len(text) <= CHUNK_CHARS else f"more than {limit:,}"  # counting stopped
                    raise BadInput(
                        f"input has {counted} tokens ({self._exact}; {len(text):,} characters), over "
                        f"max_input_tokens {limit:,}; set on_too_long: truncate to embed its first tokens"
                    )
                text = enc.decode_bytes(ids[:limit]).decode("utf-8", errors="ignore")
                exact = limit
                truncated = True
        estimate = max(self._estimate(text), exact)
        body = {"model": self.spec.model, "input": text, **self._params}
        return EmbedPrepared(
            HttpRequest(ENDPOINT, json_body=body),
            tokens=estimate,
            cache_key=request_key(self.cache_ns, ENDPOINT, canonical_json(body)),
            completion_charge=0,
            prompt_estimate=estimate,
            text=text,
            truncated=truncated,
        )

    def _ok(
        self,
        prep: EmbedPrepared,
        vector: np.ndarray,
        usage: Usage | None,
        attempts: int,
        cached: bool,
        tokens: int | None = None,
    ) -> StepResult:
        estimated = usage is None or usage.estimated
        if tokens is None:
            tokens = prep.prompt_estimate if usage is None or estimated else usage.prompt_tokens
        return StepResult(
            "ok",
            {self.output_column: vector, self._trunc_col: prep.truncated},
            attempts=attempts,
            prompt_tokens=tokens,
            completion_tokens=0,
            cached=cached,
            tokens_estimated=estimated,
        )

    # Rows are packed into shared requests: the engine hands each to the step's packer (`packing`).
    packs_rows = True

    def settle(self, first: Prepared, reply: Reply[Any]) -> Done:
        """A row answered by the cache (its own entry, written when its pack was answered)."""
        assert isinstance(first, EmbedPrepared)
        vector = reply.parsed.values[self.output_column]
        problem = self._dim_problem(len(vector))
        if problem is not None:
            return Done(StepResult("error", error=problem))
        return Done(self._ok(first, vector, reply.parsed.usage, reply.attempts, reply.cached))

    # ------------------------------------------------------------------ answers
    def parse(self, body: bytes) -> Parsed:
        """A one-input answer: what the cache holds per row."""
        vectors, _, usage = self._parse_answer(body, 1, 0)
        return Parsed({self.output_column: vectors[0]}, usage)

    def _parse_answer(self, body: bytes, n: int, estimate: int) -> tuple[list[np.ndarray], list[str | None], Usage]:
        """The vectors of an answer to `n` inputs, by `index` (never by position), and its usage."""
        obj = load_json(body)
        data = obj.get("data")
        if not isinstance(data, list):
            raise TransientError(f"answer has no `data` list: {body[:200]!r}")
        if len(data) != n:
            raise TransientError(f"answer has {len(data)} embeddings for {n} inputs")
        b64: list[str | None] = [None] * n
        block: np.ndarray | None = None  # the answer's vectors, one row each, in one Arrow buffer
        filled = np.zeros(n, dtype=bool)
        sizes: set[int] = set()
        for item in data:
            idx = item.get("index") if isinstance(item, dict) else None
            if not isinstance(idx, int) or isinstance(idx, bool) or not 0 <= idx < n or filled[idx]:
                raise TransientError(f"answer has a missing, repeated or out-of-range index {idx!r} (inputs 0-{n - 1})")
            vec, b64[idx] = decode_vector(item.get("embedding"))
            sizes.add(len(vec))
            if block is None:
                block = _vector_block(n, len(vec))
            if len(vec) == block.shape[1]:
                block[idx] = vec
            filled[idx] = True
        if len(sizes) != 1 or block is None:
            raise TransientError(f"answer mixes vectors of sizes {sorted(sizes)}")
        (dim,) = sizes
        if self._dims is not None and dim != self._dims:
            raise RowError(f"asked for {self._dims} dimensions (params.dimensions), the server returned {dim}")
        usage = obj.get("usage")
        tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0:
            u = Usage(tokens, 0)
        else:
            u = Usage(estimate, 0, estimated=True)
        return list(block), b64, u

    def _dim_problem(self, dim: int) -> str | None:
        if self._seen_dim is None:
            self._seen_dim = dim
        elif dim != self._seen_dim:
            return (
                f"the server returned a {dim}-dimension vector; this step's other rows have "
                f"{self._seen_dim} (the output column needs one size)"
            )
        return None

    # ------------------------------------------------------------------ packing
    def batch_limits(self, token_share_1s: int | None) -> tuple[int, int, int | None]:
        """(inputs, estimated tokens) at most per request, and the default batch target in reserved tokens
        (None: no target), under a gate whose token budget for one second is `token_share_1s` (the run
        packs with these; `pipeline estimate` counts with them)."""
        mbt = self.spec.max_batch_tokens
        target: int | None = None
        if mbt is None:
            # About a tenth of a second's share of the token budget: a request never holds more than a
            # per-second server allows, and several of them fit one second evenly.
            mbt = DEFAULT_MAX_BATCH_TOKENS
            if token_share_1s is not None and BATCH_SHARE * token_share_1s < mbt:
                target = int(BATCH_SHARE * token_share_1s)  # in tokens reserved: see packing.Packer
                mbt = max(1, target)
        return self.spec.batch_size, mbt, target

    def pack_limits(self, token_share_1s: int | None) -> tuple[int, int, int | None]:
        return self.batch_limits(token_share_1s)

    def count_exact(self, inputs: Sequence[EmbedPrepared]) -> int | None:
        """The tokens of `inputs` in the closest OpenAI vocabulary (None: it cannot load): `pipeline
        estimate` sizes its packs with it, where the run has the first answers' usage."""
        try:
            count = counter(self._exact)
        except Exception:  # the vocabulary cannot load: packs stay sized by the estimate
            return None
        return sum(count(p.text) for p in inputs)

    def pack_request(self, inputs: Sequence[EmbedPrepared]) -> HttpRequest:
        body = {"model": self.spec.model, "input": [p.text for p in inputs], **self._wire_params}
        return HttpRequest(ENDPOINT, data=canonical_json(body))

    def parse_pack(self, body: bytes, n: int, estimate: int) -> Parsed:
        vectors, b64s, usage = self._parse_answer(body, n, estimate)
        return Parsed({"answer": (vectors, b64s)}, usage)

    def pack_problem(self, parsed: Parsed) -> str | None:
        vectors, _ = parsed.values["answer"]
        return self._dim_problem(len(vectors[0]))

    def row_entries(self, parsed: Parsed, shares: Sequence[int | None]) -> list[bytes]:
        vectors, b64s = parsed.values["answer"]
        model = self.spec.model
        return [_row_entry(model, v, b, t) for v, b, t in zip(vectors, b64s, shares, strict=True)]

    def row_results(
        self, payload: EmbedPrepared, parsed: Parsed, index: int, share: int | None, attempts: int, waiters: int
    ) -> list[StepResult]:
        vec = parsed.values["answer"][0][index]
        first = self._ok(payload, vec, parsed.usage, attempts, False, share)
        # rows sharing one input: the first carries its tokens, so the rows' tokens sum to the usage
        others = first if share is None else self._ok(payload, vec, parsed.usage, attempts, False, 0)
        return [first, *[others] * (waiters - 1)]


def _row_entry(model: str, vector: np.ndarray, b64: str | None, tokens: int | None) -> bytes:
    """One row's cache entry: the answer a one-input request would have got, the bytes `orjson.dumps`
    gives for it, joined from its pieces. orjson's own output buffer is about 130 kB for an 8 kB
    answer, shrunk in place: kept until the entry is stored, a pack's entries pinned ~120 kB of heap
    each, and an embed run with the cache on peaked ~120 MB higher than with it off."""
    emb = b64.encode() if b64 is not None else base64.b64encode(vector.astype("<f4").tobytes())
    usage = b"" if tokens is None else b',"usage":{"prompt_tokens":%d,"total_tokens":%d}' % (tokens, tokens)
    return b"".join((_ENTRY_HEAD, emb, b'"}],"model":', orjson.dumps(model), usage, b"}"))


_ENTRY_HEAD = b'{"object":"list","data":[{"object":"embedding","index":0,"embedding":"'
