"""POST /v1/completions (legacy): request checks, answers with `stop`, `echo`, `logprobs`, and SSE chunks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from . import params
from .answers import pieces, sim_chat_text
from .faults import SimError
from .tokens import count_tokens, decode, encode, token_bytes, vocabulary_for

_NUM, _INT, _BOOL, _STR, _OBJ, _ANY = "decimal", "integer", "boolean", "string", "object", "any"
FIELDS: dict[str, tuple[str, float | None, float | None]] = {
    "model": (_STR, None, None),
    "prompt": (_ANY, None, None),
    "suffix": (_STR, None, None),
    "max_tokens": (_INT, 0, None),
    "temperature": (_NUM, 0, 2),
    "top_p": (_NUM, 0, 1),
    "n": (_INT, 1, 128),
    "stream": (_BOOL, None, None),
    "stream_options": (_OBJ, None, None),
    "logprobs": (_INT, 0, 5),
    "echo": (_BOOL, None, None),
    "stop": (_ANY, None, None),
    "presence_penalty": (_NUM, -2, 2),
    "frequency_penalty": (_NUM, -2, 2),
    "best_of": (_INT, 0, 20),
    "logit_bias": (_OBJ, None, None),
    "seed": (_INT, None, None),
    "user": (_STR, None, None),
}
DEFAULT_MAX_TOKENS = 16  # the legacy endpoint's default: short answers end with finish_reason "length"
# Chat-only models the real /v1/completions refuses (with `strict_models`; local servers take any model)
CHAT_ONLY_PREFIXES = ("gpt-4", "gpt-5", "o1", "o3", "o4", "chatgpt")


@dataclass
class Choice:
    prompt: str
    text: str  # the completion (without the echoed prompt)
    tokens: list[int]
    finish_reason: str


@dataclass
class Request:
    """A checked legacy completions request."""

    prompts: list[str]
    n: int
    max_tokens: int
    stop: list[str]
    echo: bool
    logprobs: int | None
    stream: bool
    include_usage: bool = False
    model: str = ""

    @property
    def prompt_tokens(self) -> int:
        """In the model's own vocabulary, as the real API bills it (gpt-3.5-turbo-instruct: cl100k_base)."""
        vocabulary = vocabulary_for(self.model)
        return sum(count_tokens(p, vocabulary) for p in self.prompts)


def parse(body: dict[str, Any], strict_models: bool = False) -> Request:
    """Check `body` as the real endpoint does (400 naming `param`); the parsed request."""
    params.check(body, FIELDS)
    model = body.get("model")
    if strict_models and isinstance(model, str) and model.startswith(CHAT_ONLY_PREFIXES) and "instruct" not in model:
        raise SimError(
            404,
            "This is a chat model and not supported in the v1/completions endpoint. Did you mean "
            "to use v1/chat/completions?",
            param="model",
        )
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if prompt is None:
        raise SimError(400, "Missing required parameter: 'prompt'.", param="prompt", code="missing_required_parameter")
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise SimError(
            400,
            "Invalid type for 'prompt': expected a string or an array of strings.",
            param="prompt",
            code="invalid_type",
        )
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if stop is not None else []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise SimError(
            400, "Invalid type for 'stop': expected a string or an array of strings.", param="stop", code="invalid_type"
        )
    if len(stops) > 4:
        raise SimError(
            400,
            "Invalid 'stop': array too long. Expected an array with maximum length 4, but got an "
            f"array with length {len(stops)} instead.",
            param="stop",
            code="array_above_max_length",
        )
    n = body.get("n") or 1
    best_of = body.get("best_of")
    stream = bool(body.get("stream"))
    if best_of is not None and best_of < n:
        raise SimError(400, "best_of must be greater than or equal to n.", param="best_of")
    if stream and best_of is not None and best_of > 1:
        raise SimError(400, "Cannot stream results when best_of > 1.", param="best_of")
    max_tokens = body.get("max_tokens")
    return Request(
        prompts,
        n,
        DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens,
        [s for s in stops if s],
        bool(body.get("echo")),
        body.get("logprobs"),
        stream,
        bool((body.get("stream_options") or {}).get("include_usage")),
        model if isinstance(model, str) else "",
    )


def plan(req: Request) -> list[Choice]:
    """Choices prompt by prompt, `n` each: the chat answer to the prompt, cut at a stop or at max_tokens."""
    out = []
    for p in req.prompts:
        for j in range(req.n):
            text = sim_chat_text([{"role": "user", "content": p}], choice=j)
            finish = "stop"
            cut = min((i for i in (text.find(s) for s in req.stop) if i >= 0), default=-1)
            if cut >= 0:
                text = text[:cut]
            tokens = encode(text)
            if len(tokens) > req.max_tokens:
                tokens = tokens[: req.max_tokens]
                text = decode(tokens)
                finish = "length"
            out.append(Choice(p, text, tokens, finish))
    return out


def _logprob(token: int, i: int) -> float:
    return -((token * 2654435761 + i) % 1000) / 4000.0


def logprobs(c: Choice, req: Request, start: int = 0) -> dict[str, Any] | None:
    """The legacy logprobs object: tokens, token_logprobs, top_logprobs ({token: logprob}), text_offset.

    With `echo` the prompt's tokens come first (the first one without a logprob, as the real API answers)."""
    if req.logprobs is None:
        return None
    echoed = encode(c.prompt) if req.echo else []
    toks: list[str] = []
    lps: list[float | None] = []
    tops: list[dict[str, float] | None] = []
    offsets: list[int] = []
    pos = start
    for i, t in enumerate([*echoed, *c.tokens]):
        s = token_bytes(t).decode("utf-8", "replace")
        lp = _logprob(t, i)
        first = i == 0 and bool(echoed)
        toks.append(s)
        lps.append(None if first else lp)
        top: dict[str, float] = {}
        if req.logprobs:
            top[s] = lp
            for k in range(1, req.logprobs):
                alt = token_bytes((t + 7919 * k) % 199_990).decode("utf-8", "replace")
                top.setdefault(alt, lp - 1.5 * k)
        tops.append(None if first else top)
        offsets.append(pos)
        pos += len(s)
    return {"tokens": toks, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}


def usage(req: Request, choices: list[Choice]) -> dict[str, int]:
    completion = sum(len(c.tokens) for c in choices)
    return {
        "prompt_tokens": req.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": req.prompt_tokens + completion,
    }


def response(req: Request, choices: list[Choice], meta: dict[str, Any]) -> dict[str, Any]:
    out = [
        {
            "text": (c.prompt if req.echo else "") + c.text,
            "index": i,
            "logprobs": logprobs(c, req),
            "finish_reason": c.finish_reason,
        }
        for i, c in enumerate(choices)
    ]
    return {**meta, "object": "text_completion", "choices": out, "usage": usage(req, choices)}


def chunks(req: Request, choices: list[Choice], meta: dict[str, Any]) -> Iterator[tuple[dict[str, Any], int]]:
    """SSE chunks of a streamed completion (the echoed prompt first), each with its tokens (for pacing)."""

    def chunk(i: int, text: str, finish: str | None, lp: Any = None) -> dict[str, Any]:
        return {
            **meta,
            "object": "text_completion",
            "choices": [{"text": text, "index": i, "logprobs": lp, "finish_reason": finish}],
        }

    for i, c in enumerate(choices):
        if req.echo:
            yield chunk(i, c.prompt, None), 0
        for text, group in pieces(c.tokens):
            yield chunk(i, text, None), len(group)
        yield chunk(i, "", c.finish_reason), 0
    if req.include_usage:
        yield {**meta, "object": "text_completion", "choices": [], "usage": usage(req, choices)}, 0
