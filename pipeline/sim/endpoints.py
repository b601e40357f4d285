"""Endpoint handlers: parse and validate a request into a Job (charge + answer) for the server pipeline."""

from __future__ import annotations

import hashlib
import json
import time
from typing import TYPE_CHECKING, Any

from aiohttp import BodyPartReader, web

from . import answers, audio, completions, embeddings, images, params, responses
from .calls import Call, Job
from .faults import SimError
from .schema import strict_error as schema_strict_error
from .tokens import chat_prompt_tokens, count_tokens

if TYPE_CHECKING:
    from .server import Simulator

_TRANSCRIPTION_FIELDS = ("model", "language", "prompt", "temperature", "response_format")


def _int_param(body: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    v = body.get(name)
    if v is None:
        return default
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise SimError(400, f"Invalid '{name}': expected an integer in [{lo}, {hi}].", param=name)
    return v


def _check_strict(body: dict[str, Any]) -> None:
    """400 for a strict schema that OpenAI's structured outputs would not take."""
    rf = body.get("response_format")
    if isinstance(rf, dict) and rf.get("type") == "json_schema":
        js = rf.get("json_schema") or {}
        if not isinstance(js, dict) or not js.get("name"):
            raise SimError(
                400,
                "Missing required parameter: 'response_format.json_schema.name'.",
                param="response_format.json_schema.name",
            )
        err = schema_strict_error(js.get("schema")) if js.get("strict") else None
        if err:
            raise SimError(
                400,
                f"Invalid schema for response_format '{js['name']}': {err}",
                param="response_format",
                code="invalid_json_schema",
            )
    for i, tool in enumerate(body.get("tools") or []):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(fn, dict) and fn.get("strict"):
            err = schema_strict_error(fn.get("parameters"))
            if err:
                raise SimError(
                    400,
                    f"Invalid schema for function '{fn.get('name')}': {err}",
                    param=f"tools[{i}].function.parameters",
                    code="invalid_function_parameters",
                )


def _check_forms(body: dict[str, Any], formats: list[str], tools: bool, status: int) -> None:
    """Refuse what a server without some structured-output forms refuses (llama-cpp-python: a 500 whose
    message names response_format.type)."""
    rf = body.get("response_format")
    kind = rf.get("type") if isinstance(rf, dict) else None
    if kind is not None and kind not in formats:
        allowed = " or ".join(f"'{f}'" for f in formats)
        raise SimError(
            status,
            f"[{{'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), 'msg': "
            f"\"Input should be {allowed}\", 'input': '{kind}'}}]",
            "internal_server_error" if status >= 500 else "invalid_request_error",
            param="response_format.type",
        )
    if body.get("tools") and not tools:
        raise SimError(status, "'tools' is not supported by this server", param="tools")


def _model(body: dict[str, Any], call: Call) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise SimError(400, "you must provide a model parameter", param="model")
    call.model = model
    return model


class Endpoints:
    """The /v1 endpoints of one simulator."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.downloads: dict[str, int] = {}  # image file -> GETs so far

    async def _json(self, request: web.Request, call: Call) -> tuple[bytes, dict[str, Any]]:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            raise SimError(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means "
                "you aren't using your HTTP library correctly.)",
            ) from None
        if not isinstance(body, dict):
            raise SimError(400, "The request body must be a JSON object.")
        call.body = body
        return raw, body

    def _meta(self, call: Call, prefix: str, model: str) -> dict[str, Any]:
        return {
            "id": f"{prefix}-sim-{call.seq}",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_sim",
        }

    def _ok(self, call: Call, data: Any) -> web.Response:
        return web.json_response(data, headers={"x-request-id": f"sim-{call.seq}"})

    # ----- chat and legacy completions

    async def chat(self, request: web.Request, call: Call) -> Job:
        raw, body = await self._json(request, call)
        model = _model(body, call)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise SimError(400, "'messages' must be a non-empty array of message objects.", param="messages")
        params.check(body, params.CHAT)
        _int_param(body, "n", 1, 1, 128)
        _int_param(body, "top_logprobs", 0, 0, 20)
        cfg = self.sim.config
        _check_forms(body, cfg.response_formats, cfg.tools, cfg.refuse_status)
        _check_strict(body)
        structured = self.sim.config.structured_outputs
        prompt = chat_prompt_tokens(messages, body)
        max_tokens = answers.max_tokens_of(body)
        params.check_context(prompt, max_tokens)
        plan = answers.plan_chat(body, prompt, structured=structured)
        cached = plan.cached_tokens = int(prompt * cfg.cached_prompt_share)
        call.prompt_tokens = prompt
        call.completion_tokens = plan.completion_tokens
        call.n_inputs = 1
        stream = bool(body.get("stream"))

        async def respond(request: web.Request, call: Call, fault: str | None) -> web.StreamResponse:
            p = plan if fault is None else answers.plan_chat(body, prompt, fault, structured=structured)
            p.cached_tokens = cached
            call.completion_tokens = p.completion_tokens
            meta = self._meta(call, "chatcmpl", model)
            if stream:
                chunks = answers.chat_chunks(p, body, meta, truncated=fault == "truncated_stream")
                return await self.sim.stream(request, call, chunks)
            await self.sim.sleep(call, self.sim.config.latency_per_token_s * p.completion_tokens)
            return self._ok(call, answers.chat_response(p, body, meta))

        charge = prompt + (max_tokens if max_tokens is not None else plan.completion_tokens)
        return Job(raw, charge, respond, chat=True, stream=stream)

    async def completions(self, request: web.Request, call: Call) -> Job:
        raw, body = await self._json(request, call)
        model = _model(body, call)
        req = completions.parse(body, self.sim.config.strict_models)
        choices = completions.plan(req)
        call.prompt_tokens = req.prompt_tokens
        call.completion_tokens = sum(len(c.tokens) for c in choices)
        call.n_inputs = len(req.prompts)

        async def respond(request: web.Request, call: Call, fault: str | None) -> web.StreamResponse:
            meta = self._meta(call, "cmpl", model)
            if req.stream:
                return await self.sim.stream(request, call, completions.chunks(req, choices, meta))
            await self.sim.sleep(call, self.sim.config.latency_per_token_s * call.completion_tokens)
            return self._ok(call, completions.response(req, choices, meta))

        charge = req.prompt_tokens + req.max_tokens * len(choices)
        return Job(raw, charge, respond, stream=req.stream)

    # ----- the Responses API

    async def responses(self, request: web.Request, call: Call) -> Job:
        raw, body = await self._json(request, call)
        _model(body, call)
        req = responses.Request(body)
        cfg = self.sim.config
        if body.get("tools") and not cfg.tools:
            raise SimError(cfg.refuse_status, "'tools' is not supported by this server", param="tools")
        plan = req.plan(structured=cfg.structured_outputs, cached_share=cfg.cached_prompt_share)
        call.prompt_tokens = req.input_tokens
        call.completion_tokens = plan.completion_tokens
        call.n_inputs = 1

        async def respond(request: web.Request, call: Call, fault: str | None) -> web.StreamResponse:
            p = (
                plan
                if fault is None
                else req.plan(fault, structured=cfg.structured_outputs, cached_share=cfg.cached_prompt_share)
            )
            call.completion_tokens = p.completion_tokens
            if req.stream:
                events = responses.events(req, p, call.seq, truncated=fault == "truncated_stream")
                return await self.sim.stream(request, call, events, named=True)
            await self.sim.sleep(call, cfg.latency_per_token_s * p.completion_tokens)
            return self._ok(call, responses.response_object(req, p, call.seq))

        out = req.max_output_tokens if req.max_output_tokens is not None else plan.completion_tokens
        return Job(raw, req.input_tokens + out, respond, chat=True, stream=req.stream)

    # ----- embeddings

    async def embeddings(self, request: web.Request, call: Call) -> Job:
        raw, body = await self._json(request, call)
        call.model = body.get("model") if isinstance(body.get("model"), str) else None
        params.check(body, params.EMBEDDINGS)
        model, inputs, tokens, dims, fmt = embeddings.parse_request(body)
        total = sum(tokens)
        call.prompt_tokens = total
        call.n_inputs = len(inputs)

        async def respond(request: web.Request, call: Call, fault: str | None) -> web.StreamResponse:
            await self.sim.sleep(call, self.sim.config.latency_per_input_token_s * total)
            return self._ok(call, embeddings.embeddings_response(model, inputs, dims, fmt, total))

        return Job(raw, total, respond)

    # ----- transcriptions

    async def transcriptions(self, request: web.Request, call: Call) -> Job:
        if not request.content_type.startswith("multipart/"):
            raise SimError(400, "The request must be multipart/form-data with a 'file' field.", param="file")
        limit = self.sim.config.max_upload_bytes
        fields: dict[str, Any] = {}
        granularities: list[str] = []
        data: bytes | None = None
        ext = ""
        call.body = fields
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader):
                continue
            name = part.name or ""
            if name == "file":
                fname = part.filename or ""
                fields["file_name"] = fname
                ext = fname.rsplit(".", 1)[-1].lower() if "." in fname else ""
                if ext not in audio.AUDIO_EXTENSIONS:
                    raise SimError(
                        400,
                        f"Invalid file format. Supported formats: {audio.AUDIO_EXTENSIONS}",
                        param="file",
                        code="invalid_value",
                    )
                buf = bytearray()
                while chunk := await part.read_chunk(256 * 1024):
                    buf += chunk
                    if len(buf) > limit:
                        fields["file_size"] = len(buf)
                        raise SimError(
                            413,
                            f"Maximum content size limit ({limit}) exceeded ({len(buf)} bytes read)",
                            code="request_too_large",
                        )
                data = bytes(buf)
                fields["file_size"] = len(data)
                fields["file_sha256"] = hashlib.sha256(data).hexdigest()
            elif name in ("timestamp_granularities[]", "timestamp_granularities"):
                granularities.append(await part.text())
                fields["timestamp_granularities[]"] = granularities
            else:
                fields[name] = await part.text()
        if data is None:
            raise SimError(400, "'file' is a required property; upload the audio as a 'file' form field.", param="file")
        params.check_form(fields)
        model = _model(fields, call)
        response_format = fields.get("response_format") or "json"
        audio.check_format(model, response_format)
        try:
            temperature = float(fields.get("temperature") or 0.0)
        except ValueError:
            raise SimError(400, "Invalid 'temperature': expected a number.", param="temperature") from None
        if not 0 <= temperature <= 1:
            raise SimError(
                400,
                f"Invalid 'temperature': decimal out of range. Expected a value between 0 and 1, "
                f"but got {temperature} instead.",
                param="temperature",
                code="decimal_above_max_value",
            )
        duration = await audio.audio_duration(data, ext)
        fields["duration_s"] = round(duration, 3)
        call.n_inputs = 1
        language = fields.get("language")

        async def respond(request: web.Request, call: Call, fault: str | None) -> web.StreamResponse:
            assert data is not None
            ctype, payload = audio.transcription_body(
                data,
                duration,
                response_format,
                language,
                granularities,
                temperature,
                self.sim.config.transcript_style,
            )
            text = payload if isinstance(payload, str) else payload["text"]
            call.completion_tokens = count_tokens(text)
            fields["answer_sha256"] = hashlib.sha256(text.encode()).hexdigest()  # in the record: what was said
            await self.sim.sleep(call, self.sim.config.latency_per_audio_s * duration)
            if isinstance(payload, str):
                return web.Response(text=payload, content_type=ctype, headers={"x-request-id": f"sim-{call.seq}"})
            return self._ok(call, payload)

        return Job(json.dumps(fields, ensure_ascii=False).encode(), 0, respond)

    # ----- images, models, unknown paths

    async def images(self, request: web.Request, call: Call) -> Job:
        raw, body = await self._json(request, call)
        call.model = body.get("model") if isinstance(body.get("model"), str) else "dall-e-2"
        req = images.parse(body)
        call.n_inputs = req.n
        base = str(request.url.origin())

        async def respond(request: web.Request, call: Call, fault: str | None) -> web.StreamResponse:
            await self.sim.sleep(call)
            return self._ok(call, images.response(req, base))

        return Job(raw, 0, respond, images=req.n)

    async def image_file(self, request: web.Request) -> web.Response:
        """GET of an image URL answer (no key needed, as the real signed URLs); fails transiently first
        `image_download_failures` times per image."""
        name = request.match_info["name"]
        seen = self.downloads.get(name, 0)
        self.downloads[name] = seen + 1
        if seen < self.sim.config.image_download_failures:
            return web.Response(status=self.sim.config.image_download_status, text="simulated download failure")
        return web.Response(body=images.png(name.removesuffix(".png")), content_type="image/png")

    def _model_obj(self, model: str) -> dict[str, Any]:
        owner = "openai" if model.startswith(("gpt", "text-embedding", "whisper", "dall-e")) else "system"
        created = 1_680_000_000 + int(hashlib.sha256(model.encode()).hexdigest()[:6], 16) % 40_000_000
        return {"id": model, "object": "model", "created": created, "owned_by": owner}

    async def models(self, request: web.Request, call: Call) -> Job:
        if not self.sim.config.models_list:
            raise SimError(404, "Not Found")

        async def respond(request: web.Request, call: Call, fault: str | None) -> web.StreamResponse:
            return self._ok(call, {"object": "list", "data": [self._model_obj(m) for m in self.sim.models]})

        return Job(b"", 0, respond)

    async def model(self, request: web.Request, call: Call) -> Job:
        model = request.match_info["model_id"]
        call.model = model
        if model not in self.sim.models:
            raise SimError(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                code="model_not_found",
            )

        async def respond(request: web.Request, call: Call, fault: str | None) -> web.StreamResponse:
            return self._ok(call, self._model_obj(model))

        return Job(b"", 0, respond)

    async def unknown(self, request: web.Request, call: Call) -> Job:
        raise SimError(404, f"Invalid URL ({request.method} {request.path})")
