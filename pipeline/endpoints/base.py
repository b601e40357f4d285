"""What every step kind shares, and the protocol of a sans-I/O kind: a row becomes request specs, replies
become a result or further requests; the engine (not the kind) looks up the cache, admits and sends."""

from __future__ import annotations

import asyncio
import copy
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping
from dataclasses import dataclass
from typing import Any, Self

import orjson
import pyarrow as pa

from ..budget import Charge
from ..calls import CallError, ProviderClient, Reply
from ..errors import JobError, PipelineError, RequestError, TransientError
from ..job.model import Limits
from ..pricing import Price
from ..records import Parsed, StepResult
from ..requests import HttpRequest
from ..retry import classify
from ..sinks import FinalColumn
from ..templating import NullValue, RenderError, Template


class BadInput(ValueError):
    """This row's input cannot be sent (not text, too long, ...): the row fails, nothing is sent."""


def cached_tokens(usage: dict[str, Any], details: str) -> int:
    """The prompt tokens a usage object says were served from the provider's prompt cache
    (`usage[details].cached_tokens`: prompt_tokens_details in chat, input_tokens_details in Responses)."""
    d = usage.get(details)
    n = d.get("cached_tokens") if isinstance(d, dict) else None
    return n if isinstance(n, int) and n > 0 else 0


def load_json(body: bytes) -> dict[str, Any]:
    """Parse a 2xx body; a broken body is transient, an `error` inside a 200 is classified as such."""
    try:
        obj = orjson.loads(body)
    except ValueError as exc:
        raise TransientError(f"malformed JSON in a 200 answer: {body[:120]!r}") from exc
    if not isinstance(obj, dict):
        raise TransientError(f"unexpected answer (not a JSON object): {body[:120]!r}")
    if "error" in obj and obj["error"] and not obj.get("choices") and not obj.get("data"):
        raise classify(200, body, {})
    return obj


@dataclass(frozen=True, slots=True)
class Prepared:
    """One row's request, ready to send."""

    request: HttpRequest
    tokens: int  # reserved against the provider's token budget
    cache_key: str | None
    completion_charge: int | None = None
    prompt_estimate: int = 0  # our own count, reported when the server sends no usage
    priced: Charge | None = None  # how this request is priced, when not as the step's (e.g. by its audio)


# What came of one request: its reply (from the cache or the server), or the failure that ended it.
Outcome = Reply[Any] | CallError


@dataclass(frozen=True, slots=True)
class Done:
    """The end of a row's exchange: its result, cached answers not to keep, re-asks made."""

    result: StepResult
    drop: tuple[str, ...] = ()  # cache keys of answers not kept for replay (e.g. invalid ones)
    repairs: int = 0
    store: tuple[tuple[str, bytes], ...] = ()  # answers to keep (key, body), e.g. a split file's joined one


@dataclass(frozen=True, slots=True)
class Local:
    """Local work a row needs between its requests (reading a file, splitting it): the engine awaits
    `work()` and sends its value back (expected failures are values too); `cleanup` (if any) is
    awaited when the row's step ends, however it ends (e.g. removing the pieces of a split file)."""

    work: Callable[[], Awaitable[Any]]
    cleanup: Callable[[], Awaitable[None]] | None = None


@dataclass(frozen=True, slots=True)
class Lookup:
    """Ask the cache for `key`: the engine sends back the cached reply (parsed by the step's `parse`) or None."""

    key: str


@dataclass(frozen=True, slots=True)
class ProveKey:
    """Prove the provider's key with a free request before long uploads (asked once per client); the
    engine sends back None."""


# What a row may need besides requests.
Need = Local | Lookup | ProveKey

# A row's exchange with the server: yields the requests it needs (all may go at once), receives per
# request the one actually sent (it may have been re-sent otherwise) and its outcome; returns Done.
# It may also yield a `Need`, and then receives what the engine found.
Exchange = Generator[list[Prepared] | Need, Any, Done]


class StepRuntime(ABC):
    """A step kind: builds requests from rows and turns replies into results; sends nothing itself.

    The engine drives `exchange` for each row (see engine.RowEngine): it answers requests from the
    cache where it can, sends the others through the provider's client, and hands back what came of
    them; a kind that packs many rows into one request (`packs_rows`) has its rows sent by the
    engine's packer (see packing.py). Local work (reading or splitting a file) is a `Local` need the
    engine awaits; the kind never touches the client, the cache or a gate.
    """

    # The run's side, set only on the copy `bind` makes for one engine (a plan's steps stay plain data):
    client: ProviderClient  # the provider's client
    # starts a task the engine tracks like a row task (see `spawn`)
    spawner: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]] | None = None
    charge: Charge | None = None  # how the step's requests are priced (None: no price known for its model)
    _ahead: dict[int, Prepared | StepResult] | None = None  # rows prepared by `prefetch`, by id
    _keys: dict[int, tuple[Mapping[str, Any], str]] | None = None  # rows keyed by `prefetch`: (row, key) by id

    def __init__(self, name: str, output_column: str, provider: str, cache_ns: str) -> None:
        self.name = name
        self.output_column = output_column
        self.provider = provider
        self.cache_ns = cache_ns  # provider identity in cache keys ("apiyi", "apiyi@sim", ...)

    def bind(
        self,
        client: ProviderClient,
        spawner: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]],
        charge: Charge | None,
    ) -> Self:
        """A copy of this step for one run: bound to the run's client, with the run's state fresh (the
        step itself is not changed, so one plan can be run by several engines, or rebuilt elsewhere)."""
        run = copy.copy(self)
        run.client = client
        run.spawner = spawner
        run.charge = charge
        run._ahead = run._keys = None
        run._fresh()
        return run

    def _fresh(self) -> None:
        """Start the state one run keeps (on the copy `bind` made); kinds with such state extend it."""
        return None

    @abstractmethod
    def templates(self) -> list[Template]:
        """Every template of the step (checked against the columns before the run)."""

    @abstractmethod
    def output_fields(self) -> list[pa.Field]:
        """The step's own value columns (status/error/... columns are added by the sink)."""

    def notes(self) -> list[str]:
        """Things worth telling before a run that are not errors (e.g. a schema sent without strict mode)."""
        return []

    def identity(self) -> str:
        """What decides the output but is not in the job file itself (e.g. a schema file's content)."""
        return ""

    @abstractmethod
    def prepare(self, row: Mapping[str, Any]) -> Prepared:
        """Render the row into a request (raises NullValue / RenderError)."""

    def draft(self, row: Mapping[str, Any]) -> Prepared:
        """`prepare` for the engine's cache pass: a kind may leave out what only a request that is sent
        needs (chat: the prompt's token count), for `current` to fill in before it is sent."""
        return self.prepare(row)

    @abstractmethod
    def parse(self, body: bytes) -> Parsed:
        """Turn a 2xx body into output values; raise RequestError subclasses when unusable."""

    # True for a kind that packs many rows into one request (see `packing.PackingKind` for what it then
    # gives the engine): a row the cache does not answer goes to the step's packer, not to `exchange`.
    packs_rows: bool = False

    # True when the requests of one yielded list go at once, each in its own task (a stop lets those on
    # the wire finish); otherwise one after the other, in the row's task.
    sends_at_once: bool = False

    # Names of the counters this kind adds up per step (its results carry them in `StepResult.metrics`):
    # the engine starts them at 0 and sums them, progress snapshots show them.
    counters: tuple[str, ...] = ()

    def rows_in_flight_hint(self, concurrency: int | None) -> int | None:
        """Rows this step needs in flight to keep `concurrency` requests busy (a step that packs rows
        into shared requests needs many); None when the executor's default window is enough."""
        return None

    def plan_problems(self, columns: Mapping[str, pa.DataType], limits: Limits) -> list[str]:
        """Checks that need the types of the columns available to the step or its provider's limits;
        run by the plan before any request. Messages name the step."""
        return []

    def final_columns(self) -> list[FinalColumn]:
        """Value columns whose final type the sink decides from the finished rows (e.g. a vector size);
        the others keep their `output_fields()` type."""
        return []

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Start a background task of this step (e.g. a request shared by many rows). Under the executor
        a stop cancels it like a row task unless its request is on the wire, and the run waits for it."""
        if self.spawner is not None:
            return self.spawner(coro)
        return asyncio.ensure_future(coro)

    def prefetch(self, rows: list[dict[str, Any]]) -> None:
        """Key `rows` ahead (`quick_key`, else `draft`) and read their cached answers in one go: the next
        `first_key` / `request_for` of each row (the same dict, unchanged) uses them. For the first step
        of a batch of input rows."""
        self._ahead = self._keys = None
        keys: dict[int, tuple[Mapping[str, Any], str]] = {}
        ahead: dict[int, Prepared | StepResult] = {}
        for r in rows:
            key = self.quick_key(r)
            if key is not None:
                keys[id(r)] = (r, key)
            else:
                ahead[id(r)] = self._prepare_or_result(r)
        self._ahead, self._keys = ahead, keys
        self.client.cache.prefetch(
            [
                *(key for _, key in keys.values()),
                *(p.cache_key for p in ahead.values() if isinstance(p, Prepared) and p.cache_key is not None),
            ]
        )

    def quick_key(self, row: Mapping[str, Any]) -> str | None:
        """The cache key of the row's first request (exactly `draft(row).cache_key`) without building the
        request, for the engine's cache pass; None: the kind has no such shortcut for this row (the
        engine builds the request)."""
        return None

    def first_key(self, row: Mapping[str, Any]) -> str | None:
        """`quick_key(row)`, as `prefetch` computed it for this row if it did."""
        if self._keys:
            ahead = self._keys.pop(id(row), None)
            if ahead is not None and ahead[0] is row:  # (the entry holds the row: its id is not reused)
                return ahead[1]
        return self.quick_key(row)

    def request_for(self, row: Mapping[str, Any]) -> Prepared | StepResult:
        """The row's first request, or its result when nothing is to be sent (skipped, bad input)."""
        return self._prepare_or_result(row)

    def _prepare_or_result(self, row: Mapping[str, Any]) -> Prepared | StepResult:
        if self._ahead:
            ahead = self._ahead.pop(id(row), None)
            if ahead is not None:
                return ahead
        try:
            return self.draft(row)
        except NullValue as exc:
            return StepResult.skipped(str(exc))
        except RenderError as exc:
            return StepResult("error", error=f"template: {exc}")
        except BadInput as exc:
            return StepResult("error", error=str(exc))
        except Exception as exc:  # anything else one row's values trip fails that row, not the run
            if isinstance(exc, PipelineError) and not isinstance(exc, JobError):
                raise
            return StepResult("error", error=f"cannot build the request: {type(exc).__name__}: {exc}")

    def row_cost(self, r: StepResult, price: Price) -> float | None:
        """What a row's result cost at `price` (None: unknown). Token-priced kinds: its usage."""
        if r.prompt_tokens is None and r.completion_tokens is None:
            return None if r.status == "ok" else 0.0
        return price.tokens(r.prompt_tokens, r.completion_tokens, r.cached_tokens)

    def _result(self, prep: Prepared, parsed: Parsed, attempts: int, cached: bool) -> StepResult:
        u = parsed.usage
        return StepResult(
            "ok",
            parsed.values,
            attempts=attempts,
            prompt_tokens=(prep.prompt_estimate if u.estimated else u.prompt_tokens) if u else None,
            completion_tokens=u.completion_tokens if u else None,
            cached=cached,
            tokens_estimated=bool(u and u.estimated),
            cached_tokens=u.cached_tokens if u else 0,
        )

    # ----------------------------------------------------------------- the exchange (sans-I/O)
    def exchange(self, first: Prepared) -> Exchange:
        """The requests of one row and its result. Plain kinds: one request, its answer is the result."""
        ((ask, outcome),) = yield [first]
        if isinstance(outcome, CallError):
            return Done(StepResult("error", error=outcome.error.short(), attempts=outcome.attempts))
        return Done(self._result(ask, outcome.parsed, outcome.attempts, outcome.cached))

    def settle(self, first: Prepared, reply: Reply[Any]) -> Done | None:
        """The row's end when the first request's (cached) reply settles it, without starting the
        exchange (cache replays of whole jobs go through here); None: run the exchange."""
        return Done(self._result(first, reply.parsed, reply.attempts, reply.cached))

    def replay(self, first: Prepared | None, body: bytes) -> StepResult | None:
        """A shortcut for the engine's cache pass: what `settle` makes of `body` as the cached answer to
        `first`, when the kind can tell it without the objects in between (its common answer); None:
        the engine parses and settles it the long way. Must equal that way's result exactly. `first` is
        None when the engine found the answer by `quick_key` and built no request: a kind whose result
        needs the request returns None then."""
        return None

    def current(self, ask: Prepared) -> Prepared:
        """`ask` as the server takes it now (a kind may rebuild it when what the server accepts changed),
        complete (a `draft` counted); the engine sends only what this returns."""
        return ask

    def serial(self, ask: Prepared) -> asyncio.Lock | None:
        """A lock to send `ask` under, alone, while the way to send it is still being found; None: none."""
        return None

    def takes_over(self, ask: Prepared, err: RequestError, cuts: int) -> bool:
        """Whether a failed attempt of `ask` is answered by the kind (`instead`) rather than retried as
        it is (`cuts`: this request's cut streams so far)."""
        return False

    def instead(self, ask: Prepared, err: RequestError) -> Prepared | RequestError:
        """What to send after `ask` was taken over with `err`; or the error that fails the row."""
        return err

    def answered(self, ask: Prepared) -> None:
        """`ask` got an answer: what the kind learned about the server holds (e.g. a form that works)."""
        return None
