"""The state of one request in flight (Call) and a validated request awaiting admission (Job)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .config import RequestRecord


class Call:
    """What is known about a request while it is handled; frozen into a RequestRecord at the end."""

    __slots__ = (
        "seq",
        "t_start",
        "method",
        "path",
        "key",
        "model",
        "status",
        "fault",
        "body",
        "prompt_tokens",
        "completion_tokens",
        "n_inputs",
        "factor",
    )

    def __init__(self, seq: int, request: web.Request, factor: float) -> None:
        self.seq = seq
        self.t_start = time.monotonic()
        self.method = request.method
        self.path = request.path
        self.key: str | None = None
        self.model: str | None = None
        self.status = 0
        self.fault: str | None = None
        self.body: dict[str, Any] | None = None
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.n_inputs = 0
        self.factor = factor

    def record(self, t_end: float) -> RequestRecord:
        return RequestRecord(
            self.seq,
            self.t_start,
            t_end,
            self.method,
            self.path,
            self.key,
            self.model,
            self.status,
            self.fault,
            self.body,
            self.prompt_tokens,
            self.completion_tokens,
            self.n_inputs,
        )


Respond = Callable[[web.Request, Call, str | None], Awaitable[web.StreamResponse]]


@dataclass
class Job:
    """A parsed, valid request waiting for admission: its raw body, token charge and answer."""

    raw: bytes
    charge: int
    respond: Respond
    chat: bool = False
    stream: bool = False
    images: int = 0  # images asked for: counted against the key's `ipm`
