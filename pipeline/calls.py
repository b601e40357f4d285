"""One logical API call: cache, admission under the provider's limits, attempts with backoff, parse."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

from .budget import BudgetReached, Charge, Spend
from .errors import (
    ConcurrencyLimited,
    FatalError,
    RateLimited,
    RequestError,
    RetryableError,
    RowError,
    TooLargeError,
)
from .job.model import Retry
from .limits import RequestTooLarge, Ticket
from .logs import event
from .ports import Cache, Capacity, Gate, Transport
from .records import Parsed
from .requests import HttpRequest
from .retry import backoff_delay, classify, parse_rate_headers

if TYPE_CHECKING:
    from .transport import HttpResponse

T = TypeVar("T", bound=Parsed)

log = logging.getLogger(__name__)

# A 429 costs a row time, not one of its attempts; past this many 429s for one call they count again,
# so a server that refuses forever still fails rows (and its identical failures stop the run).
MAX_FREE_429S = 20

# Downloads of generated images (GETs of absolute URLs, often another host's CDN) at once, per provider
# client. They are not API calls: they take no admission from the provider's limits (a download
# counted against an image model's low requests/min would halve its throughput), only this cap.
DOWNLOADS_AT_ONCE = 16


@dataclass
class RunStats:
    """Counters shared by every call of a run (read by progress snapshots)."""

    requests: int = 0
    downloads: int = 0  # generated images fetched from their URLs (not API calls: outside the limits)
    cache_hits: int = 0
    retries: int = 0
    rate_limited: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    repairs: int = 0  # re-asks of invalid answers in the rows finished (chat steps with a schema)
    spend: Spend = field(default_factory=Spend)  # cost so far, and the budget when there is one


@dataclass(frozen=True, slots=True)
class Reply(Generic[T]):
    parsed: T
    attempts: int
    cached: bool


class Stopped(Exception):
    """The run is stopping: no new attempt starts (the row stays to do)."""


# what one attempt ended with, and the admission ticket it used (a 429 tells the gate which one)
_Outcome = tuple[Reply[T] | RequestError, Ticket]


class CallError(Exception):
    """A call that ended without an answer; `error` is the last attempt's error."""

    def __init__(self, error: RequestError, attempts: int) -> None:
        super().__init__(error.short())
        self.error = error
        self.attempts = attempts


class ProviderClient:
    """Everything that talks to one provider key goes through here."""

    def __init__(
        self,
        transport: Transport,
        gate: Gate,
        cache: Cache,
        retry: Retry,
        stats: RunStats,
        *,
        rng: random.Random | None = None,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.transport = transport
        self.gate = gate
        self.capacity = Capacity(gate)  # what step kinds may know of the gate
        self.cache = cache
        self.retry = retry
        self.stats = stats
        self._rng = rng or random.Random()
        self._stopping = stopping
        # tasks with a request on the wire: a graceful stop lets them finish (their answer is paid for)
        self.inflight: set[asyncio.Task[object]] = set()
        # The first request to a provider goes alone: a bad key then costs one request, not a burst.
        self._probe_lock = asyncio.Lock()
        self._verified = False
        self._key_asked = False
        self._fatal: FatalError | None = None
        self._downloading: asyncio.Semaphore | None = None  # made in the running loop, on the first download

    @property
    def name(self) -> str:
        """The provider's name (in log events)."""
        provider = getattr(self.transport, "provider", None)  # test doubles may have none
        return str(getattr(provider, "name", "?"))

    async def verify_key(self) -> None:
        """Prove the key with a free GET /models, so long requests need not wait for a first one alone.

        Only a 2xx counts: keys scoped to some endpoints may be refused /models and still transcribe,
        so any other answer leaves the first real request as the probe. Asked once per client.
        """
        if self._verified or self._key_asked:
            return
        async with self._probe_lock:
            if self._fatal is not None:
                raise self._fatal
            if self._verified or self._key_asked:
                return
            self._key_asked = True
            try:
                resp = await self.transport.get("/models")
            except RequestError:
                return
            if 200 <= resp.status < 300:
                self._verified = True

    def cached(self, key: str, parse: Callable[[bytes], T]) -> T | None:
        """The parsed cached answer for `key`, or None (an unparseable entry is dropped)."""
        body = self.cache.get(key)
        return None if body is None else self.parse_cached(key, body, parse)

    def parse_cached(self, key: str, body: bytes, parse: Callable[[bytes], T]) -> T | None:
        """`body`, the cached answer for `key`, parsed; None when it does not parse (it is dropped)."""
        try:
            parsed = parse(body)
        except RequestError:
            self.cache.delete(key)
            return None
        self.stats.cache_hits += 1
        return parsed

    async def call(
        self,
        req: HttpRequest,
        *,
        tokens: int | Callable[[], int],
        cache_key: str | None,
        parse: Callable[[bytes], T],
        completion_charge: int | None = None,
        check_cache: bool = True,
        hand_back: Callable[[RequestError], bool] | None = None,
        charge: Charge | None = None,
    ) -> Reply[T]:
        """Send until an answer parses, the row's request is shown bad, or attempts run out.

        Raises CallError (row fails), or FatalError (run stops). `completion_charge` is what the
        provider counts for the completion at admission (max_tokens when set): the reservation is
        corrected to prompt tokens from `usage` plus that, or plus the real completion when None.
        `tokens` may be a function, asked when the request reaches the head of the admission queue.
        `hand_back(error)` True: the caller handles that failure itself (e.g. re-sends the row in another
        form): CallError at once, no retry.
        `charge` prices the request: its worst case is held against the run's budget before it is sent
        (CallError with BudgetReached when it does not fit), its cost from `usage` counted after.
        """
        if cache_key is not None and check_cache:
            hit = self.cached(cache_key, parse)
            if hit is not None:
                return Reply(hit, 0, True)
        if req.method == "GET":
            return await self._download(req, cache_key, parse)
        try:
            self.gate.check_fits(tokens if isinstance(tokens, int) else tokens())
        except RequestTooLarge as exc:
            raise CallError(TooLargeError(str(exc)), 0) from exc

        attempt = limited = 0
        while True:
            attempt += 1
            if self._stopping():
                raise Stopped()
            if self._fatal is not None:
                raise self._fatal
            try:
                send = functools.partial(
                    self._attempt, req, tokens, cache_key, parse, completion_charge, attempt, charge
                )
                # (verified, the common case: `_probed` would only await the attempt, one coroutine more)
                result, ticket = await (send() if self._verified else self._probed(send))
            except BudgetReached as exc:
                raise CallError(exc, attempt - 1) from None
            if isinstance(result, Reply):
                return result
            err = result
            # key pools (issue 10b): a refused key leaves the pool and the call goes on with another one
            # (a gate over several keys: a KeyPool, or the Ray backend's leased gate over a pool)
            if isinstance(err, FatalError) and self.gate.refused(ticket, err):
                attempt -= 1
                continue
            if isinstance(err, FatalError):
                self._fatal = err
                raise err
            if hand_back is not None and hand_back(err):
                raise CallError(err, attempt)
            if isinstance(err, RowError) or not isinstance(err, RetryableError):
                raise CallError(err, attempt)
            if isinstance(err, RateLimited):
                self.stats.rate_limited += 1
                event(log, logging.INFO, "provider.rate_limited", provider=self.name, retry_after=err.retry_after)
                self.gate.slow_down(err.retry_after, ticket=ticket, concurrency=isinstance(err, ConcurrencyLimited))
                limited += 1
                if limited <= MAX_FREE_429S:
                    # The gate's pause and pace do the waiting; the attempt was not spent.
                    attempt -= 1
                    self.stats.retries += 1
                    continue
            if attempt >= self.retry.max_attempts:
                event(
                    log, logging.INFO, "request.gave_up", provider=self.name, attempts=attempt, error=err.short()[:300]
                )
                raise CallError(err, attempt)
            # a 429's Retry-After is enforced by the gate's pause
            await self._back_off(err, attempt, "request.retry", not isinstance(err, RateLimited))

    async def _back_off(self, err: RequestError, attempt: int, what: str, retry_after: bool) -> None:
        """Wait before another attempt after `err`: the backoff, or the server's Retry-After when longer
        (`retry_after`: when the caller does not wait it elsewhere). Counted and logged as `what`."""
        self.stats.retries += 1
        wait = backoff_delay(attempt, base=self.retry.backoff_base_s, cap=self.retry.backoff_cap_s, rng=self._rng)
        if retry_after and err.retry_after is not None:
            wait = max(wait, err.retry_after)
        event(
            log,
            logging.INFO,
            what,
            provider=self.name,
            attempt=attempt,
            wait_s=round(wait, 3),
            status=err.status,
            error=err.short()[:300],
        )
        await asyncio.sleep(wait)

    def _parsed(self, cache_key: str | None, body: bytes, parse: Callable[[bytes], T]) -> T | RequestError:
        """`parse(body)` of an answer just stored under `cache_key`; when it does not parse, its error,
        and the entry is dropped (a broken answer is not replayed)."""
        try:
            return parse(body)
        except RequestError as exc:
            if cache_key is not None:
                self.cache.delete(cache_key)
            return exc

    async def _download(self, req: HttpRequest, cache_key: str | None, parse: Callable[[bytes], T]) -> Reply[T]:
        """GET an absolute URL (a generated image) until it parses: the retry rules of any request
        (a 429's Retry-After is waited here, it pauses nothing else), at most DOWNLOADS_AT_ONCE at a
        time, outside the provider's admission gate and budget (a download is not an API call)."""
        if self._downloading is None:
            self._downloading = asyncio.Semaphore(DOWNLOADS_AT_ONCE)
        attempt = 0
        while True:
            attempt += 1
            if self._stopping():
                raise Stopped()
            if self._fatal is not None:
                raise self._fatal
            err: RequestError
            async with self._downloading:
                if self._stopping():  # (the stop began while this download waited for its turn)
                    raise Stopped()
                self.stats.downloads += 1
                try:
                    # (a graceful stop lets it finish: the image was paid for, its URL may expire before
                    # a re-run could fetch it again)
                    resp = await self._send(req)
                except RequestError as exc:
                    err = exc
                else:
                    if 200 <= resp.status < 300:
                        if cache_key is not None:
                            await self.cache.store(cache_key, resp.body)
                        parsed = self._parsed(cache_key, resp.body, parse)
                        if not isinstance(parsed, RequestError):
                            return Reply(parsed, attempt, False)
                        err = parsed
                    else:
                        err = classify(resp.status, resp.body, resp.headers)
            # a refused key means nothing here (no key is sent): only the status's own class counts
            if not isinstance(err, RetryableError) or attempt >= self.retry.max_attempts:
                raise CallError(err, attempt)
            await self._back_off(err, attempt, "download.retry", True)  # (nothing else waits a 429 out)

    async def _probed(self, attempt: Callable[[], Awaitable[_Outcome[T]]]) -> _Outcome[T]:
        """Run one attempt; the very first one of a provider goes alone, so a bad key costs one request."""
        if not self._verified:
            async with self._probe_lock:
                if self._fatal is not None:
                    raise self._fatal
                if not self._verified:
                    result, ticket = await attempt()
                    self._verified = not isinstance(result, FatalError)
                    return result, ticket
        return await attempt()

    async def _send(self, req: HttpRequest, key: str | None = None) -> HttpResponse:
        """Send `req` (with the pooled key `key`), its task counted in `inflight` meanwhile: a graceful
        stop lets a request on the wire finish, since what the server answers is paid for."""
        task = asyncio.current_task()
        if task is not None:
            self.inflight.add(task)
        try:
            return await (self.transport.send(req) if key is None else self.transport.send(req, key))
        finally:
            if task is not None:
                self.inflight.discard(task)

    async def _attempt(
        self,
        req: HttpRequest,
        tokens: int | Callable[[], int],
        cache_key: str | None,
        parse: Callable[[bytes], T],
        completion_charge: int | None,
        attempt: int,
        charge: Charge | None = None,
    ) -> _Outcome[T]:
        spend = self.stats.spend
        hold = None
        if spend.limit is not None:  # held before the gate: a refused request takes no admission slot
            worst = charge.worst(tokens if isinstance(tokens, int) else tokens(), completion_charge) if charge else None
            hold = spend.hold(worst)
        cost: float | None = None  # unknown: the hold counts (a request lost on the way may be billed)
        ticket = await self.gate.admit(tokens, req.priority)
        actual: int | None = None
        unsent = False
        try:
            # A stop that began while this request waited for its admission: it is not sent. (A task
            # the stop does not cancel itself, e.g. a piece of a split file, whose row's task cancels
            # it a turn later, could otherwise be admitted in between and go on the wire after the stop.)
            if self._stopping():
                unsent, cost = True, 0.0
                raise Stopped()
            self.stats.requests += 1
            try:
                resp = await self._send(req, ticket.key)  # key pools (issue 10b): a pooled ticket names the key
            except RequestError as exc:
                return exc, ticket
            rate = parse_rate_headers(resp.headers)
            if rate is not None:
                self.gate.observe(rate, ticket)
            if not 200 <= resp.status < 300:
                cost = 0.0  # refused answers are not billed
                err = classify(resp.status, resp.body, resp.headers)
                if isinstance(err, RateLimited):
                    self.gate.release(ticket, rejected=True)  # refused: the server counted nothing
                return err, ticket
            if cache_key is not None:
                await self.cache.store(cache_key, resp.body)  # before parsing: nothing paid for is lost
            parsed = self._parsed(cache_key, resp.body, parse)
            if isinstance(parsed, RequestError):
                return parsed, ticket
            usage = parsed.usage
            if charge is not None:
                cost = charge.fixed(tokens if isinstance(tokens, int) else 0)
                if cost is None and usage is not None:
                    cost = charge.actual(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)
            if usage is not None:
                self.stats.prompt_tokens += usage.prompt_tokens
                self.stats.completion_tokens += usage.completion_tokens
                if not usage.estimated:
                    completion = usage.completion_tokens if completion_charge is None else completion_charge
                    actual = usage.prompt_tokens + completion
            return Reply(parsed, attempt, False), ticket
        finally:
            self.gate.release(ticket, actual, rejected=unsent)  # (unsent: nothing counted, all given back)
            spend.settle(hold, cost)
