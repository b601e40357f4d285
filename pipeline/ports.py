"""The seams of the engine as Protocols: what a gate, a transport and a cache must do, and nothing more.

A `ProviderClient` is typed against these, so a pool of keys, a gate leased from another process or a
test double plugs in without subclassing. Step kinds see a gate only through the read-only `Capacity`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .calls import ProviderClient
    from .engine import RowCounters
    from .errors import RequestError
    from .job.profiles import ResolvedProvider
    from .limits import GateStats, Ticket
    from .requests import HttpRequest
    from .retry import RateHeaders
    from .transport import HttpResponse


class Gate(Protocol):
    """Admission of requests to one provider key (see `limits.AdmissionGate`, the local one)."""

    @property
    def tpm(self) -> int | None: ...

    def check_fits(self, tokens: int) -> None: ...

    def token_share(self, seconds: float = 1.0) -> int | None: ...

    async def admit(self, tokens: int | Callable[[], int], priority: float = 0.0) -> Ticket: ...

    def release(self, ticket: Ticket, actual_tokens: int | None = None, *, rejected: bool = False) -> None: ...

    def observe(self, headers: RateHeaders, ticket: Ticket | None = None) -> None: ...

    def slow_down(
        self, retry_after: float | None = None, *, ticket: Ticket | None = None, concurrency: bool = False
    ) -> None: ...

    def stats(self) -> GateStats: ...

    def waiting(self) -> int:
        """How many callers wait inside `admit` (cheap: read on the packing path, unlike `stats`)."""
        ...

    def refused(self, ticket: Ticket, error: RequestError) -> bool:
        """The key of `ticket` was refused for good (401/403, quota): True when the gate took it out and
        other keys are left (the caller sends again); False for a gate of one key (the run stops)."""
        ...


class GateFactory(Protocol):
    """Gives the gate for a provider and its key; providers sharing a key and URL share one gate."""

    def __call__(self, provider: ResolvedProvider, api_key: str | None) -> Gate: ...


class Transport(Protocol):
    """Sends one attempt of a request (see `transport.Transport`, the aiohttp one)."""

    async def send(self, req: HttpRequest, key: str | None = None) -> HttpResponse: ...

    async def get(self, endpoint: str) -> HttpResponse: ...


class Cache(Protocol):
    """Answers by request key (see `cache.ResponseCache`; `cache.NoCache` when caching is off)."""

    @property
    def enabled(self) -> bool: ...

    def get(self, key: str) -> bytes | None: ...

    def prefetch(self, keys: Iterable[str]) -> None: ...

    async def store(self, key: str, body: bytes) -> None: ...

    async def store_many(self, items: Iterable[tuple[str, bytes]]) -> None: ...

    def delete(self, key: str) -> None: ...

    def close(self) -> None: ...


class RunEngine(Protocol):
    """What the file runner (`executor.Executor`) drives: the row engine (`engine.RowEngine`), or a stand-in
    that runs the rows elsewhere (the Ray backend's pool of workers)."""

    stopping: bool
    abort: BaseException | None
    rows: RowCounters
    counts: dict[str, Counter[str]]
    metrics: dict[str, dict[str, float]]
    clients: dict[str, ProviderClient]

    async def feed(self, batch: list[tuple[int, dict[str, Any]]], emit: Callable[[dict[str, Any]], None]) -> bool: ...

    async def drain(self) -> None: ...

    def halt(self) -> None: ...

    def cancel_all(self) -> None: ...


class Capacity:
    """A read-only view of a provider's gate, for the kinds that size their requests by it."""

    __slots__ = ("_gate",)

    def __init__(self, gate: Gate) -> None:
        self._gate = gate

    @property
    def tpm(self) -> int | None:
        """Tokens per period the gate admits at most (None: no token limit)."""
        return self._gate.tpm

    def token_share(self, seconds: float = 1.0) -> int | None:
        """The token budget of `seconds` at the limits' pace (None: no token limit)."""
        return self._gate.token_share(seconds)

    def busy(self) -> bool:
        """True while requests wait for admission (a batch may then grow instead of going out)."""
        return self._gate.waiting() > 0

    def waiting(self) -> int:
        """How many requests wait for admission (a packed batch may then be formed later)."""
        return self._gate.waiting()
