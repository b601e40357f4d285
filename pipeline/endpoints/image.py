"""The `image` step: /images/generations per row; the images written as files beside the output
(`<output stem>_images/<row id>_<index>.<ext>`), their list of {path, bytes, mime, revised_prompt} in the
output column.

The answer is cached as it came (base64 inside, or URLs); URL answers are then downloaded as further
requests of the row's exchange (same retry rules, each download cached by its URL), so a re-run writes
the files from the cache without a request. Files are written atomically (temporary file + rename) under
names made from the row's own id: a row never writes another row's file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..cache import canonical_json, request_key
from ..calls import CallError, Reply
from ..errors import TransientError
from ..job.model import ImageStep, Limits
from ..pricing import Price
from ..records import Parsed, StepResult
from ..requests import HttpRequest
from ..templating import Template, compile_template
from .base import BadInput, Done, Exchange, Prepared, StepRuntime, load_json

ENDPOINT = "/images/generations"
IMAGE_TYPE = pa.struct(
    [
        pa.field("path", pa.string()),
        pa.field("bytes", pa.int64()),
        pa.field("mime", pa.string()),
        pa.field("revised_prompt", pa.string()),
    ]
)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}


def sniff(data: bytes) -> str:
    """The image's mime type from its first bytes."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return "application/octet-stream"


def file_stem(row_id: Any) -> str:
    """The row id as a file name: unsafe characters replaced, plus a hash of the id when any was (so two
    ids that read alike once sanitised never share a file)."""
    text = str(row_id)
    safe = _UNSAFE.sub("_", text)[:80].lstrip(".") or "_"
    return safe if safe == text else f"{safe}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


@dataclass(frozen=True, slots=True)
class _Image:
    b64: str | None
    url: str | None
    revised_prompt: str | None


@dataclass(frozen=True, slots=True)
class ImageAnswer(Parsed):
    """A generation answer (its images), or a downloaded image's bytes (`blob`)."""

    images: tuple[_Image, ...] = ()
    blob: bytes | None = None


@dataclass(frozen=True, slots=True)
class _ImageAsk(Prepared):
    row_id: str = ""


class ImageRuntime(StepRuntime):
    def __init__(self, spec: ImageStep, cache_ns: str, folder: Path, id_column: str | None) -> None:
        super().__init__(spec.name, spec.output_column, spec.provider, cache_ns)
        self.spec = spec
        self.folder = folder
        self.id_column = id_column
        self._prompt = compile_template(spec.prompt, f"step `{spec.name}`, prompt")
        self._n = int(spec.params.get("n") or 1)

    def templates(self) -> list[Template]:
        return [self._prompt]

    def output_fields(self) -> list[pa.Field]:
        return [pa.field(self.output_column, pa.list_(IMAGE_TYPE))]

    def plan_problems(self, columns: Mapping[str, pa.DataType], limits: Limits) -> list[str]:
        if self.id_column is None:
            return [f"step `{self.name}` (kind: image) names its files by row id: set input.id to a unique column"]
        return []

    def prepare(self, row: Mapping[str, Any]) -> _ImageAsk:
        prompt = self._prompt.render(row)
        row_id = row.get(self.id_column) if self.id_column else None
        if row_id is None:
            raise BadInput(f"step `{self.name}`: the row has no id in `{self.id_column}` to name its image files")
        body = {"model": self.spec.model, "prompt": prompt, **self.spec.params}
        data = canonical_json(body)
        return _ImageAsk(
            HttpRequest(ENDPOINT, json_body=body, data=data),
            tokens=self._n,  # images, held against the provider's ipm (the gate's token dimension)
            cache_key=request_key(self.cache_ns, ENDPOINT, data),
            row_id=str(row_id),
        )

    def parse(self, body: bytes) -> ImageAnswer:
        if body.lstrip()[:1] != b"{":  # a downloaded image (a generation answer is a JSON object)
            if not body:
                raise TransientError("the image download was empty")
            return ImageAnswer({}, None, blob=body)
        obj = load_json(body)
        data = obj.get("data")
        if not isinstance(data, list) or not data or not all(isinstance(d, dict) for d in data):
            raise TransientError(f"answer has no images: {body[:200]!r}")
        images = []
        for d in data:
            b64, url = d.get("b64_json"), d.get("url")
            if not isinstance(b64, str) and not isinstance(url, str):
                raise TransientError(f"an image of the answer has neither b64_json nor url: {str(d)[:200]}")
            rp = d.get("revised_prompt")
            images.append(
                _Image(
                    b64 if isinstance(b64, str) else None,
                    url if isinstance(url, str) else None,
                    rp if isinstance(rp, str) else None,
                )
            )
        return ImageAnswer({}, None, images=tuple(images))

    def row_cost(self, r: StepResult, price: Price) -> float | None:
        images = r.values.get(self.output_column)
        if price.image is None:
            return None if r.status == "ok" else 0.0
        return price.image * len(images or [])

    # ----------------------------------------------------------------- the exchange
    def _downloads(self, answer: ImageAnswer) -> list[Prepared]:
        return [
            Prepared(
                HttpRequest(im.url, method="GET"),
                tokens=0,
                cache_key=request_key(self.cache_ns, "GET", im.url.encode()),
            )
            for im in answer.images
            if im.b64 is None and im.url is not None
        ]

    def _write(self, ask: _ImageAsk, answer: ImageAnswer, blobs: list[bytes], attempts: int, cached: bool) -> Done:
        fetched = iter(blobs)
        out = []
        stem = file_stem(ask.row_id)
        for i, im in enumerate(answer.images):
            if im.b64 is not None:
                try:
                    data = base64.b64decode(im.b64, validate=True)
                except (binascii.Error, ValueError) as exc:
                    return Done(
                        StepResult("error", error=f"image {i}: b64_json does not decode: {exc}", attempts=attempts)
                    )
            else:
                data = next(fetched)
            mime = sniff(data)
            path = self.folder / f"{stem}_{i}.{_EXT.get(mime, 'bin')}"
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
            out.append({"path": str(path), "bytes": len(data), "mime": mime, "revised_prompt": im.revised_prompt})
        return Done(StepResult("ok", {self.output_column: out}, attempts=attempts, cached=cached))

    def exchange(self, first: Prepared) -> Exchange:
        assert isinstance(first, _ImageAsk)
        ((ask, outcome),) = yield [first]
        if isinstance(outcome, CallError):
            return Done(StepResult("error", error=outcome.error.short(), attempts=outcome.attempts))
        answer = outcome.parsed
        assert isinstance(ask, _ImageAsk) and isinstance(answer, ImageAnswer)
        attempts, cached = outcome.attempts, outcome.cached
        downloads = self._downloads(answer)
        blobs: list[bytes] = []
        if downloads:
            replies = yield downloads
            for i, (_, got) in enumerate(replies):
                if isinstance(got, CallError):
                    return Done(
                        StepResult(
                            "error",
                            error=f"downloading image {i}: {got.error.short()}",
                            attempts=attempts + got.attempts,
                        )
                    )
                attempts += got.attempts
                cached = cached and got.cached
                if not isinstance(got.parsed, ImageAnswer) or got.parsed.blob is None:
                    return Done(
                        StepResult(
                            "error",
                            error=f"downloading image {i}: the URL answered JSON, not an image",
                            attempts=attempts,
                        )
                    )
                blobs.append(got.parsed.blob)
        return self._write(ask, answer, blobs, attempts, cached)

    def settle(self, first: Prepared, reply: Reply[Any]) -> Done | None:
        answer = reply.parsed
        if not isinstance(first, _ImageAsk) or not isinstance(answer, ImageAnswer) or self._downloads(answer):
            return None
        return self._write(first, answer, [], reply.attempts, reply.cached)
