"""The aiohttp simulator server: auth, limits, faults, latency and a record of every request."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

from aiohttp import web

from . import endpoints
from .calls import Call, Job
from .config import ERROR_FAULTS, FaultRule, RequestRecord, SimConfig
from .faults import FaultEngine, SimError, error_body
from .images import ImageLimits, ipm_error
from .limits import LimitBook
from .tokens import preload_vocabularies


class _Reset(Exception):
    """Close the connection without an answer."""


def _mask(key: str | None) -> str:
    if not key:
        return "<none>"
    return key[:3] + "***" + key[-4:] if len(key) > 8 else "***"


class Simulator:
    """An OpenAI-compatible server on real sockets, with exact per-key limits and injected faults."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config if config is not None else SimConfig()
        cfg = self.config
        self.records: list[RequestRecord] = []
        self.url: str | None = None
        self._limits = LimitBook(cfg.keys, cfg.default_limits, cfg.window_s, cfg.limit_period_s, cfg.limit_scale)
        self._images = ImageLimits(cfg.window_s)
        self._faults = FaultEngine(cfg.faults, cfg.seed)
        self._models = set(cfg.models)
        self._jitter = random.Random(cfg.seed)
        self._seq = 0
        self._active: dict[int, str] = {}  # requests being answered: seq -> path
        self._key_uses: dict[str, int] = {}  # requests per key, for revoke_after
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self._arrival = asyncio.Event()  # set when the next request arrives (interrupt_streams)

    # ----- lifecycle and control

    def image_downloads(self) -> dict[str, int]:
        """GETs of each image file (`/v1/sim-files/<name>`) so far, failed ones included."""
        ep = getattr(self, "_endpoints", None)
        return dict(ep.downloads) if ep is not None else {}

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Start serving; return the base url, e.g. http://127.0.0.1:PORT/v1."""
        if self._runner is not None:
            raise RuntimeError("simulator already started")
        self._stopping = asyncio.Event()
        # The vocabularies load before serving, as a real server loads its model: loaded by the first
        # answer, they stalled the loop ~0.5 s while requests queued, then stamped them all at once (a
        # lump a per-second limit refuses that no client sent).
        await asyncio.to_thread(preload_vocabularies)
        app = web.Application(client_max_size=max(64 * 1024 * 1024, 2 * self.config.max_upload_bytes))
        ep = endpoints.Endpoints(self)
        self._endpoints = ep
        r = app.router
        r.add_post("/v1/chat/completions", self._route(ep.chat))
        r.add_post("/v1/responses", self._route(ep.responses))
        r.add_post("/v1/completions", self._route(ep.completions))
        r.add_post("/v1/embeddings", self._route(ep.embeddings))
        r.add_post("/v1/audio/transcriptions", self._route(ep.transcriptions))
        r.add_post("/v1/images/generations", self._route(ep.images))
        r.add_get("/v1/models", self._route(ep.models, limited=False))
        r.add_get("/v1/models/{model_id}", self._route(ep.model, limited=False))
        r.add_get("/_sim/records", self._ctl_records)
        r.add_post("/_sim/reset", self._ctl_reset)
        r.add_post("/_sim/faults", self._ctl_faults)
        r.add_get("/v1/sim-files/{name}", ep.image_file)
        r.add_route("*", "/v1/{tail:.*}", self._route(ep.unknown, limited=False))
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.url = f"http://{shown}:{bound_port}/v1"
        return self.url

    async def stop(self) -> None:
        """Stop serving; hanging requests are cut."""
        if self._stopping is not None:
            self._stopping.set()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def set_faults(self, faults: Iterable[FaultRule | dict[str, Any]]) -> None:
        """Replace the fault rules (and their counters)."""
        rules = [r if isinstance(r, FaultRule) else FaultRule.from_dict(r) for r in faults]
        self.config.faults = rules
        self._faults = FaultEngine(rules, self.config.seed)

    def in_flight(self, path_suffix: str = "") -> int:
        """Requests being answered now whose path ends with `path_suffix` (tests wait on this, not on time)."""
        return sum(1 for p in self._active.values() if p.endswith(path_suffix))

    def reset_records(self) -> None:
        self.records = []

    async def _ctl_records(self, request: web.Request) -> web.Response:
        return web.json_response([r.to_dict() for r in self.records])

    async def _ctl_reset(self, request: web.Request) -> web.Response:
        self.reset_records()
        return web.json_response({"ok": True})

    async def _ctl_faults(self, request: web.Request) -> web.Response:
        try:
            rules = await request.json()
            self.set_faults(rules)
        except (ValueError, TypeError) as e:
            return web.json_response(error_body(str(e), "invalid_request_error"), status=400)
        return web.json_response({"ok": True, "faults": len(rules)})

    # ----- helpers used by the endpoints

    def factor(self) -> float:
        j = self.config.jitter
        return 1.0 + j * (2.0 * self._jitter.random() - 1.0) if j else 1.0

    async def sleep(self, call: Call, extra_s: float = 0.0) -> None:
        d = (self.config.latency_s + extra_s) * call.factor
        if d > 0:
            await asyncio.sleep(d)

    def check_model(self, model: str | None) -> None:
        if self.config.strict_models and model is not None and model not in self._models:
            style = self.config.error_style
            if style == "litellm":
                raise SimError(
                    400,
                    f"litellm.BadRequestError: Invalid model name passed in model={model}. Call `/v1/models` "
                    "to view available models for your key.",
                    "None",
                    param="model",
                )
            if style == "vllm":
                raise SimError(404, f"The model `{model}` does not exist.", "NotFoundError")
            if style == "ollama":
                raise SimError(404, f'model "{model}" not found, try pulling it first', "api_error")
            raise SimError(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                code="model_not_found",
            )

    def _error_body(self, e: SimError, seq: int) -> dict[str, Any]:
        body = e.body(seq)
        if self.config.error_style == "litellm":  # LiteLLM puts the HTTP status in `code`, as text
            body["error"]["code"] = str(e.status)
        return body

    @property
    def models(self) -> list[str]:
        return list(self.config.models)

    async def stream(
        self, request: web.Request, call: Call, chunks: Iterator[tuple[dict[str, Any], int]], named: bool = False
    ) -> web.StreamResponse:
        """Send SSE chunks (pacing each by its tokens), then [DONE]; `named`: each chunk as an `event:` of its
        `type` and no [DONE] (the Responses API)."""
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "x-request-id": f"sim-{call.seq}",
            }
        )
        await self.sleep(call)
        per_token = self.config.latency_per_token_s * call.factor
        await resp.prepare(request)
        call.status = 200
        interrupt = self._arrival if self.config.interrupt_streams else None  # set by the next request
        try:
            for chunk, ntok in chunks:
                if per_token and ntok:
                    if interrupt is None:
                        await asyncio.sleep(per_token * ntok)
                    else:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(interrupt.wait(), per_token * ntok)
                if interrupt is not None and interrupt.is_set():
                    call.fault = "interrupted"  # llama.cpp: [DONE] without a finish_reason
                    break
                head = f"event: {chunk['type']}\n".encode() if named else b""
                await resp.write(head + b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n")
            if not named:
                await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        except ConnectionError:
            pass
        return resp

    # ----- the request pipeline

    def _route(
        self, prepare: Callable[[web.Request, Call], Awaitable[Job]], limited: bool = True
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            return await self._run(request, prepare, limited)

        return handler

    def _auth(self, request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        key = header[7:].strip() if header[:7].lower() == "bearer " else ""
        if not key and not self.config.require_key:
            return ""  # a keyless server: every request counts against one anonymous key
        if not key:
            raise SimError(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                code="invalid_api_key",
            )
        if not self._limits.known(key):
            raise SimError(401, f"Incorrect API key provided: {_mask(key)}.", code="invalid_api_key")
        revoke = self.config.revoke_after
        if revoke is not None and key in revoke:
            self._key_uses[key] = used = self._key_uses.get(key, 0) + 1
            if used > revoke[key]:
                raise SimError(
                    401, f"Incorrect API key provided: {_mask(key)}. The key was revoked.", code="invalid_api_key"
                )
        return key

    def _limit_error(self, which: str, key: str, charge: int) -> SimError:
        lim = self._limits.get(key)
        now = time.monotonic()
        reqs, toks = lim.used(now)
        rpm, tpm = lim.enforced()
        per = "min" if lim.period_s == 60 else f"{lim.period_s:g}s"
        if which == "rpm":
            what = f"requests per {per} (RPM): Limit {rpm:g}, Used {reqs}, Requested 1"
        elif which == "tpm":
            what = f"tokens per {per} (TPM): Limit {tpm:g}, Used {toks}, Requested {charge}"
        else:
            what = f"concurrent requests: Limit {lim.limits.concurrency}, In flight {lim.in_flight}"
        headers: dict[str, str] = {}
        if self.config.rate_headers:
            headers.update(lim.headers(now))
        wait = lim.retry_after(now, which, charge) if self.config.limit_retry_after else None
        if wait is not None:
            headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
            headers["retry-after"] = str(max(1, math.ceil(wait)))
        return SimError(
            429,
            f"Rate limit reached for {what} on key {_mask(key)}. Please try again later.",
            "rate_limit_exceeded",
            "rate_limit_exceeded",
            headers=headers or None,
        )

    def _parallel_error(self, key: str) -> SimError:
        """LiteLLM's answer past a key's max_parallel_requests (its body puts the status in `code`)."""
        limit = self.config.max_parallel_requests
        return SimError(
            429,
            f"Max parallel request limit reached Hit limit for api_key: {_mask(key)}. "
            f"current max_parallel_requests: {limit}. Limit type: max_parallel_requests",
            "None",
            "429",
            headers={"retry-after": "60"},
        )

    async def _run(
        self, request: web.Request, prepare: Callable[[web.Request, Call], Awaitable[Job]], limited: bool
    ) -> web.StreamResponse:
        self._seq += 1
        if limited:  # an API request (not GET /models): it interrupts running streams (interrupt_streams)
            self._arrival.set()
            self._arrival = asyncio.Event()
        call = Call(self._seq, request, self.factor())
        self._active[call.seq] = request.path
        limiter = None
        try:
            call.key = self._auth(request)
            job = await prepare(request, call)
            self.check_model(call.model)
            if limited:
                limiter = self._limits.get(call.key)
                now = time.monotonic()
                parallel = self.config.max_parallel_requests
                if parallel is not None and limiter.in_flight >= parallel:
                    limiter = None
                    raise self._parallel_error(call.key)
                ipm = limiter.limits.ipm if job.images else None
                if ipm is not None and self._images.used(call.key, now) + job.images > ipm:
                    limiter = None
                    raise ipm_error(ipm, self._images.used(call.key, now), job.images, _mask(call.key))
                refused = limiter.try_admit(now, job.charge)
                if refused is not None:
                    limiter = None
                    raise self._limit_error(refused, call.key, job.charge)
                self._images.try_admit(call.key, now, job.images, ipm)
                call.t_start = now
            rule = self._faults.pick(request.path, job.raw, chat=job.chat, stream=job.stream) if limited else None
            kind = rule.kind if rule is not None else None
            call.fault = kind
            if rule is not None and (kind == "hang" or kind in ERROR_FAULTS):
                if limiter is not None:
                    limiter.release()
                    limiter = None
                if kind == "hang":
                    await self._hang(rule.hang_s)
                    kind = None
                else:
                    fault_resp = self._fault_response(rule, call)
                    call.status = fault_resp.status
                    return fault_resp
            resp = await job.respond(request, call, kind)
            call.status = resp.status
            if self.config.rate_headers and limiter is not None and not resp.prepared:
                resp.headers.update(limiter.headers(time.monotonic()))
            return resp
        except SimError as e:
            call.status = e.status
            return web.json_response(self._error_body(e, call.seq), status=e.status, headers=e.headers)
        except _Reset:
            call.status = 0
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception as e:  # a bug of the simulator: an OpenAI-shaped 500, no traceback in the terminal
            call.status = 500
            err = SimError(500, f"The simulator failed on this request: {type(e).__name__}: {e}", "server_error")
            return web.json_response(err.body(call.seq), status=500)
        finally:
            t_end = time.monotonic()
            self._active.pop(call.seq, None)
            if limiter is not None:
                limiter.release()
            self.records.append(call.record(t_end))

    async def _hang(self, hang_s: float) -> None:
        assert self._stopping is not None
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=hang_s)
        except TimeoutError:
            return
        raise _Reset

    def _fault_response(self, rule: FaultRule, call: Call) -> web.Response:
        rid = f"(request id: sim-{call.seq})"
        headers = {"x-request-id": f"sim-{call.seq}"}
        kind = rule.kind
        if kind == "status":
            code = str(rule.status) if self.config.error_style == "litellm" else rule.error_code
            body = error_body(f"Simulated error {rule.status} {rid}", rule.error_type, code)
            return web.json_response(body, status=rule.status, headers=headers)
        if kind == "rate_limit":
            if rule.retry_after is not None:
                headers["Retry-After"] = f"{rule.retry_after:g}"
            body = error_body(
                f"Rate limit reached for requests (simulated). Please try again later. {rid}",
                "rate_limit_exceeded",
                "rate_limit_exceeded",
            )
            return web.json_response(body, status=429, headers=headers)
        if kind == "empty_429":
            return web.Response(status=429)
        if kind == "malformed_json":
            return web.Response(status=200, body=b'{"id": "x", "choices": [', content_type="application/json")
        if kind == "error_in_200":
            body = error_body(f"Simulated upstream error {rid}", rule.error_type, rule.error_code)
            return web.json_response(body, status=200, headers=headers)
        raise _Reset  # kind == "reset"


async def serve(
    config: SimConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run a simulator until cancelled; `on_ready` gets the base url once it listens."""
    sim = Simulator(config)
    url = await sim.start(host, port)
    try:
        if on_ready is not None:
            on_ready(url)
        await asyncio.Event().wait()
    finally:
        await sim.stop()
