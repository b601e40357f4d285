"""Packing rows into shared requests: batches closed by count, tokens or a linger; bad inputs split out.

A step that sends many rows in one request (embeddings) hands each row to a `Batcher` and awaits the row's
future. The batcher keeps one open batch; it closes it when it holds `max_items` inputs or `max_tokens`
estimated tokens, or when no row has joined for `linger_s` (loop time) and no earlier batch of the
provider is still queueing for admission. A closed batch goes out as one request through the step's `send`
in a background task. When the server rejects the packed request as bad (a 4xx blaming the input), the
batch is split to find the bad inputs: the one the server's message names, or else halves, recursively;
only the bad rows fail, with the server's message, and the extra requests show in the rows' attempts.

Packs are closed by a cheap estimate of their tokens (which over-counts), but under a token budget they
are meant to hold a target in real tokens (a tenth of a second's share, so that whole packs fill a
per-second server's window): `TokenCalibration` learns the ratio from answers and `pack_max_tokens` turns
the target into the estimate a pack is closed at. For that to reach the packs, they are formed late:
with `ahead`, only that many closed batches wait for admission and the other rows wait unpacked, so
rows that arrive all at once (faster than the budget lets them out) are not all packed before the
first answer. (`FirstCount`: `pipeline estimate`'s stand-in for the first answers.)
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .calls import CallError, Stopped
from .errors import RequestError, RowError, TooLargeError
from .records import StepResult

__all__ = [
    "Batcher",
    "FirstCount",
    "Slot",
    "TokenCalibration",
    "apportion",
    "blamed_input",
    "pack_max_tokens",
    "splittable",
]

P = TypeVar("P")
# While earlier batches queue for admission, an idle open batch is looked at every this many lingers.
BUSY_RECHECK_LINGERS = 4
# `pipeline estimate` counts a step's first inputs exactly until their estimate reaches this share of a
# pack's target, and packs the rest as the run does once its first answers have calibrated it.
FIRST_COUNT_SHARE = 0.5

# Where servers name the offending input of a list: OpenAI `'$.input[3]'` / `input[3]`, FastAPI
# `"loc": ["body", "input", 3]`, pydantic-style `input.3`.
_BLAME = re.compile(r"""input(?:\[(\d+)\]|",\s*(\d+)|\.(\d+))""")


@dataclass(eq=False)
class Slot(Generic[P]):
    """One input of a packed request and the rows waiting for it (rows with the same key share one input).

    `attempts` counts the requests this input went out in, retries and splits included; `send` adds a
    successful call's attempts before settling, the batcher adds a failed call's.
    """

    key: str
    payload: P
    tokens: int
    waiters: list[asyncio.Future[StepResult]] = field(default_factory=list)
    attempts: int = 0

    def live(self) -> bool:
        """Whether any row still waits for this input (rows of a stopping run are cancelled)."""
        return any(not f.done() for f in self.waiters)

    def settle(self, results: Sequence[StepResult] | StepResult) -> None:
        """Hand every waiting row its result (one for all, or one per waiter in order)."""
        for i, fut in enumerate(self.waiters):
            if not fut.done():
                fut.set_result(results if isinstance(results, StepResult) else results[i])

    def abandon(self, exc: BaseException) -> None:
        for fut in self.waiters:
            if not fut.done():
                fut.set_exception(exc)


# One packed request for the slots: settles every slot (after adding the call's attempts), or raises
# CallError (the batcher splits or fails the rows), Stopped or FatalError (passed on to the rows).
SendFn = Callable[[list[Slot[P]]], Awaitable[None]]
SpawnFn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]


def splittable(err: RequestError) -> bool:
    """Whether a failed packed request may succeed for some of its inputs if sent apart.

    A 4xx that blames the input (or names no field) can come from one bad input; one that blames another
    field (`dimensions`, `model`, `encoding_format`) is wrong for every input, so splitting only repeats it.
    A request over the provider's token budget fits once split.
    """
    if isinstance(err, TooLargeError):
        return True
    return isinstance(err, RowError) and err.status >= 400 and err.param in (None, "input")


def blamed_input(err: RequestError, n: int) -> int | None:
    """The position of the input a server's message names (`input[3]`), when it names exactly one."""
    found = {int(next(g for g in m.groups() if g is not None)) for m in _BLAME.finditer(err.message)}
    if len(found) == 1:
        (i,) = found
        if 0 <= i < n:
            return i
    return None


def _signature(err: RequestError) -> str:
    # request ids differ between otherwise identical answers
    return f"{err.status}|{err.code}|{err.message.split('(request id', 1)[0]}"


def apportion(total: int, weights: Sequence[int]) -> list[int]:
    """Split a request's `total` tokens over its inputs in proportion to `weights`; the parts sum to total."""
    if not weights:
        return []
    wsum = sum(weights)
    exact = [total * w / wsum for w in weights] if wsum > 0 else [total / len(weights)] * len(weights)
    parts = [math.floor(x) for x in exact]
    order = sorted(range(len(parts)), key=lambda i: exact[i] - parts[i], reverse=True)
    for i in order[: total - sum(parts)]:
        parts[i] += 1
    return parts


class TokenCalibration:
    """How the provider's token counts compare with our estimates, to reserve what it will charge.

    The estimate that packs batches (a cheap heuristic) over-counts by design, and the gate's pacer
    charges what is reserved: reserving the raw estimate would pace real tokens at ~70% of the budget.
    So a request reserves its estimate times the largest actual/estimated ratio of the last few answers
    (plus 1%): a shift in the text mix raises the reservation at once and lowers it only slowly. Until
    an answer has come back, the raw estimate is reserved. The gate corrects every reservation from the
    answer's usage either way.
    """

    def __init__(self, window: int = 8, margin: float = 1.01, lo: float = 0.2, hi: float = 2.0) -> None:
        self._ratios: deque[float] = deque(maxlen=window)
        self._margin = margin
        self._lo = lo
        self._hi = hi

    def observe(self, estimated: int, actual: int) -> None:
        """Record one answer: our estimate of its tokens and the provider's count."""
        if estimated > 0 and actual > 0:
            self._ratios.append(actual / estimated)

    @property
    def factor(self) -> float:
        if not self._ratios:
            return 1.0
        return min(self._hi, max(self._lo, max(self._ratios) * self._margin))

    def reserve(self, estimated: int) -> int:
        """Tokens to reserve for a request estimated at `estimated`."""
        return max(1, math.ceil(estimated * self.factor)) if estimated > 0 else 0


def pack_max_tokens(target: int, calibration: TokenCalibration) -> int:
    """The estimate a pack is closed at so that it reserves (about) `target` tokens."""
    return max(1, int(target / calibration.factor))


class FirstCount(Generic[P]):
    """Counts a step's first inputs exactly, once their estimate reaches FIRST_COUNT_SHARE of `target`
    (where no answer can calibrate the packs: `pipeline estimate`).

    `count` gives the exact tokens of some inputs (None: no vocabulary for them); it runs once.
    """

    def __init__(self, target: int, count: Callable[[Sequence[P]], int | None]) -> None:
        self._want = FIRST_COUNT_SHARE * target
        self._count = count
        self._inputs: list[P] = []
        self._estimate = 0

    def add(self, payload: P, tokens: int) -> tuple[int, int | None] | None:
        """Add one input; once enough are in, (their estimate, their exact count or None)."""
        self._inputs.append(payload)
        self._estimate += tokens
        if self._estimate < self._want:
            return None
        inputs, self._inputs = self._inputs, []
        return self._estimate, self._count(inputs)


class Batcher(Generic[P]):
    """Packs submitted inputs into batches and sends each batch as one request (see the module doc).

    `ahead`: full batches are closed only while fewer than this many of its requests wait for
    admission (`waiting` tells the provider's, plus batches closed whose request has not set out yet;
    None: no bound). The rows beyond
    them wait unpacked and are looked at again every few lingers: a batch is sized with what the answers
    so far taught (`max_tokens` may change meanwhile), not with what was known when its rows arrived.
    """

    def __init__(
        self,
        send: SendFn[P],
        *,
        max_items: int,
        max_tokens: int,
        linger_s: float,
        spawn: SpawnFn,
        busy: Callable[[], bool] = lambda: False,
        ahead: int | None = None,
        waiting: Callable[[], int] = lambda: 0,
    ) -> None:
        if max_items < 1 or max_tokens < 1:
            raise ValueError(f"max_items and max_tokens must be >= 1, got {max_items} and {max_tokens}")
        self._send = send
        self.max_items = max_items
        self.max_tokens = max_tokens
        self.linger_s = linger_s
        self.ahead = ahead
        self._waiting = waiting  # requests waiting for admission
        self._spawn = spawn
        self._busy = busy  # True while earlier requests still queue for admission: a batch can keep growing
        self._open: dict[str, Slot[P]] = {}  # rows not yet in a closed batch, in arrival order
        self._open_tokens = 0
        self._last_add = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._queued = 0  # closed batches whose request has not set out yet
        # Until a first request has come back, the others queue before the gate (a provider's first
        # request goes alone): count those whose request set out instead of the gate's waiting ones.
        self._answered = False
        self._unanswered = 0
        self.batches = 0  # batches closed (first requests, before any split)

    def submit(self, key: str, payload: P, tokens: int) -> asyncio.Future[StepResult]:
        """Queue one input; the future gets the row's result. Inputs with the same key are sent once."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[StepResult] = loop.create_future()
        slot = self._open.get(key)
        if slot is not None:
            slot.waiters.append(fut)
            return fut
        self._open[key] = Slot(key, payload, tokens, [fut])
        self._open_tokens += tokens
        self._last_add = loop.time()
        self._close_full()
        if self._open and self._timer is None:
            self._timer = loop.call_later(self.linger_s, self._linger_over)
        return fut

    def _full(self) -> bool:
        return len(self._open) >= self.max_items or self._open_tokens >= self.max_tokens

    def _held(self) -> bool:
        if self.ahead is None:
            return False
        # Of the requests waiting for admission, at most those of this batcher's that set out and are not
        # answered yet are its own (another step's queue on the same provider does not starve it).
        waiting = min(self._waiting(), self._unanswered) if self._answered else self._unanswered
        return self._queued + waiting >= self.ahead

    def _close_full(self) -> None:
        """Close every full batch the open rows make, while fewer than `ahead` wait for admission."""
        while self._open and self._full() and not self._held():
            self._close(self._take())

    def _take(self) -> list[Slot[P]]:
        """The first open rows that make one batch (at least one row)."""
        out: list[Slot[P]] = []
        tokens = 0
        for s in self._open.values():
            if out and (len(out) >= self.max_items or tokens + s.tokens > self.max_tokens):
                break
            out.append(s)
            tokens += s.tokens
        for s in out:
            del self._open[s.key]
        self._open_tokens -= tokens
        return out

    def _linger_over(self) -> None:
        self._timer = None
        self._close_full()
        if not self._open:
            return
        loop = asyncio.get_running_loop()
        if self._full():  # held: full batches wait for the ones ahead of them to be admitted
            self._timer = loop.call_later(self.linger_s * BUSY_RECHECK_LINGERS, self._linger_over)
            return
        idle = loop.time() - self._last_add
        if idle < self.linger_s:  # rows are still coming: let it grow
            self._timer = loop.call_later(max(self.linger_s - idle, self.linger_s / 2), self._linger_over)
            return
        if self._busy() or self._held():
            # This batch would only queue behind others: let it grow, and look again later (the
            # provider is the bottleneck meanwhile; a look every few ms would only cost CPU).
            self._timer = loop.call_later(self.linger_s * BUSY_RECHECK_LINGERS, self._linger_over)
            return
        self._close(self._take())
        if self._open:
            self._timer = loop.call_later(self.linger_s, self._linger_over)

    def flush(self) -> None:
        """Close the open rows (if any) into batches and send them, each in a background task."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._open:
            self._close(self._take())

    def _close(self, slots: list[Slot[P]]) -> None:
        self.batches += 1
        self._queued += 1
        self._spawn(self._guarded(slots, self._run(slots)))

    async def _guarded(self, slots: list[Slot[P]], work: Coroutine[Any, Any, None]) -> None:
        """Run `work`; whatever stops it reaches the rows still waiting on `slots`."""
        try:
            await work
        except asyncio.CancelledError:
            for s in slots:
                s.abandon(Stopped())  # the run is stopping: the rows stay to do
            raise
        except BaseException as exc:  # Stopped, FatalError, or a bug: the rows' tasks pass it on
            for s in slots:
                s.abandon(exc)

    async def _run(self, slots: list[Slot[P]]) -> None:
        self._queued -= 1  # its request sets out (and counts among the waiting ones)
        live = [s for s in slots if s.live()]
        if not live:
            return
        self._unanswered += 1
        try:
            err = await self._send_once(live)
        finally:
            self._unanswered -= 1
            self._answered = True
        if err is not None:
            await self._recover(live, err)

    async def _send_once(self, slots: list[Slot[P]]) -> RequestError | None:
        try:
            await self._send(slots)
        except CallError as exc:
            for s in slots:
                s.attempts += exc.attempts
            return exc.error
        return None

    def _fail(self, slots: list[Slot[P]], err: RequestError) -> None:
        for s in slots:
            s.settle(StepResult("error", error=err.short(), attempts=s.attempts))

    async def _recover(self, slots: list[Slot[P]], err: RequestError) -> None:
        """The packed request for `slots` failed with `err`: find and fail only the bad inputs."""
        if len(slots) == 1 or not splittable(err):
            self._fail(slots, err)
            return
        bad = blamed_input(err, len(slots))
        if bad is not None:
            self._fail([slots[bad]], err)
            rest = [s for i, s in enumerate(slots) if i != bad and s.live()]
            if rest:
                again = await self._send_once(rest)
                if again is not None:
                    await self._recover(rest, again)
            return
        mid = len(slots) // 2
        halves = [slots[:mid], slots[mid:]]
        errors = await self._send_apart(halves)
        failed = [(h, e) for h, e in zip(halves, errors, strict=True) if e is not None]
        if len(failed) == 2 and _signature(failed[0][1]) == _signature(failed[1][1]) == _signature(err):
            # Both halves fail as the whole did: the request is wrong, not one input (or every input is).
            for h, e in failed:
                self._fail(h, e)
            return
        await self._apart([self._recover(h, e) for h, e in failed], [h for h, _ in failed])

    async def _send_apart(self, groups: list[list[Slot[P]]]) -> list[RequestError | None]:
        """Send each group as its own request, at the same time; the errors, in order."""
        errors: list[RequestError | None] = [None] * len(groups)

        async def one(i: int, group: list[Slot[P]]) -> None:
            errors[i] = await self._send_once(group)

        await self._apart([one(i, g) for i, g in enumerate(groups)], groups)
        return errors

    async def _apart(self, works: list[Coroutine[Any, Any, None]], groups: list[list[Slot[P]]]) -> None:
        # Each in its own tracked task, so a stop spares the ones whose request is on the wire.
        tasks = [self._spawn(self._guarded(g, w)) for w, g in zip(works, groups, strict=True)]
        if tasks:
            await asyncio.wait(tasks)
