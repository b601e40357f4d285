"""An executor-level fake-clock harness: the simulator's chat and embeddings on the loop clock, no sockets.

`LoopSim` answers chat and embeddings requests as pipeline/sim does (its answers, its per-key limiter and its fault
rules, reused as they are) but inside the client's own event loop: latency is `asyncio.sleep`, and
limits and records read `loop.time()`. Run a job with `run_job_virtual` and it goes through the public
entry point `execute(plan)` on tests.fakeclock's VirtualClockLoop: a storm of 429s with multi-second
pauses finishes in a fraction of a wall-clock second, and timing properties (requests per window,
requests in flight) are exact whatever the machine's load.

Injection point: `Transport.send` (one attempt of one request, pipeline/transport.py) and
`Transport.get` are replaced on the class for the duration of the run; the executor builds its
clients, gates and session as usual, and nothing of the run but the wire is faked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pipeline import transport
from pipeline.executor import RunOptions, RunSummary, execute
from pipeline.plan import build_plan
from pipeline.sim import answers, embeddings
from pipeline.sim.config import FaultRule, KeyLimits
from pipeline.sim.faults import FaultEngine, error_body
from pipeline.sim.limits import KeyLimiter
from pipeline.sim.tokens import chat_prompt_tokens
from pipeline.transport import HttpRequest, HttpResponse

from .fakeclock import run_virtual

CHAT = "/chat/completions"
EMBED = "/embeddings"


@dataclass
class Seen:
    """One request as the fake server saw it (the fields tests read from the simulator's records)."""

    seq: int
    path: str
    t_start: float
    t_end: float
    status: int
    fault: str | None
    body: dict[str, Any]
    prompt_tokens: int = 0


@dataclass
class LoopSim:
    """One provider key's server: rpm/tpm/concurrency over `window_s`, `latency_s` per answer, fault rules.

    `period_s` and `scale`: the limits enforced over that period at that share, as `pipeline sim`'s
    --limit-period-s / --limit-scale; `retry_after`: limit 429s say when the request would fit."""

    limits: KeyLimits = field(default_factory=KeyLimits)
    window_s: float = 60.0
    latency_s: float = 0.05
    faults: list[FaultRule] = field(default_factory=list)
    records: list[Seen] = field(default_factory=list)
    period_s: float | None = None
    scale: float = 1.0
    retry_after: bool = False

    def __post_init__(self) -> None:
        self._limiter = KeyLimiter(self.limits, self.window_s, self.period_s, self.scale)
        self._faults = FaultEngine(self.faults, 0)
        self._seq = 0

    async def send(self, req: HttpRequest) -> HttpResponse:
        loop = asyncio.get_running_loop()
        self._seq += 1
        seq, now = self._seq, loop.time()
        raw = req.data if req.data is not None else json.dumps(req.json_body).encode()
        body = json.loads(raw)
        seen = Seen(seq, "/v1" + req.endpoint, now, now, 0, None, body)
        self.records.append(seen)
        assert req.endpoint in (CHAT, EMBED), f"LoopSim plays chat and embeddings, not {req.endpoint}"
        if req.endpoint == EMBED:
            model, inputs, tokens, dims, fmt = embeddings.parse_request(body)
            seen.prompt_tokens = charge = sum(tokens)
            answer = embeddings.embeddings_response(model, inputs, dims, fmt, charge)
        else:
            seen.prompt_tokens = prompt = chat_prompt_tokens(body["messages"])
            plan = answers.plan_chat(body, prompt)
            charge = prompt + (answers.max_tokens_of(body) or plan.completion_tokens)
            meta = {"id": f"chatcmpl-sim-{seq}", "created": 0, "model": body["model"], "system_fingerprint": "fp"}
            answer = answers.chat_response(plan, body, meta)
        refused = self._limiter.try_admit(now, charge)
        if refused is not None:
            seen.status = 429
            msg = f"Rate limit reached for {refused} (LoopSim) (request id: sim-{seq})"
            wait = self._limiter.retry_after(now, refused, charge) if self.retry_after else None
            hdrs = {} if wait is None else {"retry-after-ms": str(max(1, math.ceil(wait * 1000)))}
            body_429 = error_body(msg, "rate_limit_exceeded", "rate_limit_exceeded")
            return HttpResponse(429, json.dumps(body_429).encode(), hdrs)
        try:
            rule = self._faults.pick(seen.path, raw, chat=req.endpoint == CHAT, stream=False)
            seen.fault = rule.kind if rule is not None else None
            if rule is not None:
                seen.status = 429
                if rule.kind == "empty_429":
                    return HttpResponse(429, b"")
                assert rule.kind == "rate_limit", f"LoopSim plays 429 faults only, not {rule.kind}"
                headers = {} if rule.retry_after is None else {"Retry-After": f"{rule.retry_after:g}"}
                msg = f"Rate limit reached for requests (simulated). (request id: sim-{seq})"
                body_429 = error_body(msg, "rate_limit_exceeded", "rate_limit_exceeded")
                return HttpResponse(429, json.dumps(body_429).encode(), headers)
            await asyncio.sleep(self.latency_s)
            seen.status = 200
            return HttpResponse(200, json.dumps(answer).encode(), {"x-request-id": f"sim-{seq}"})
        finally:
            seen.t_end = loop.time()
            self._limiter.release()

    async def get(self, endpoint: str) -> HttpResponse:
        return HttpResponse(200, json.dumps({"object": "list", "data": [{"id": "gpt-4o-mini"}]}).encode())


@contextlib.contextmanager
def serving(sim: LoopSim) -> Iterator[LoopSim]:
    """Every provider's requests go to `sim` (Transport.send and .get replaced on the class)."""

    async def send(self: transport.Transport, req: HttpRequest) -> HttpResponse:
        return await sim.send(req)

    async def get(self: transport.Transport, endpoint: str) -> HttpResponse:
        return await sim.get(endpoint)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(transport.Transport, "send", send)
        mp.setattr(transport.Transport, "get", get)
        yield sim


def run_job_virtual(job: Path, sim: LoopSim, **opts: Any) -> RunSummary:
    """`execute(build_plan(job))` on the virtual clock, its requests answered by `sim`."""
    with serving(sim):
        plan = build_plan(job)
        return run_virtual(execute(plan, RunOptions(**opts)), timeout=86400.0)
