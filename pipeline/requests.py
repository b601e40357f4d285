"""What to send, as plain data: a request spec any transport (aiohttp, a Ray worker, a batch file) can send.

This module knows no HTTP library: a multipart body names the files it streams, and only the transport
(`transport.py`) turns a spec into library objects, afresh for every attempt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


class StreamAssembler(Protocol):
    """Turns the events of a server-sent-events answer into the body a non-streamed request gets."""

    def feed(self, data: bytes) -> None: ...

    def finish(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class FilePart:
    """A file streamed from disk as one part of a multipart body (never held in memory)."""

    path: Path
    filename: str  # the name the server sees (only its extension matters to servers)
    content_type: str = "application/octet-stream"
    name: str = "file"  # the form field


@dataclass(frozen=True, slots=True)
class Multipart:
    """A multipart/form-data body: text fields in order, then the files."""

    fields: tuple[tuple[str, str], ...] = ()
    files: tuple[FilePart, ...] = ()


@dataclass(frozen=True)
class HttpRequest:
    """What to send: a JSON body (as a dict or already encoded), or a multipart body naming its files."""

    endpoint: str  # e.g. "/chat/completions"
    json_body: dict[str, Any] | None = None
    data: bytes | None = None  # the JSON body already encoded (canonical_json), sent as is
    multipart: Multipart | None = None
    timeout_s: float | None = None  # overrides the provider's timeout (long audio)
    priority: float = 0.0  # a free concurrency slot goes to the highest first (longest audio first)
    # A streamed request (SSE): a new assembler per attempt. The timeout then limits the silence
    # between events, not the whole answer: long generations are what streaming is for.
    stream: Callable[[], StreamAssembler] | None = None
    # GET: fetch `endpoint`, an absolute URL (e.g. a generated image), without the provider's key
    method: str = "POST"

    def preview(self) -> dict[str, Any]:
        """The body as a dict, for showing (a multipart body: its fields, and its files by path)."""
        if self.multipart is not None:
            shown: dict[str, Any] = {f.name: str(f.path) for f in self.multipart.files}
            for k, v in self.multipart.fields:
                if k in shown and isinstance(shown[k], list):
                    shown[k].append(v)
                elif k in shown:
                    shown[k] = [shown[k], v]
                else:
                    shown[k] = v
            return shown
        return dict(self.json_body or {})
