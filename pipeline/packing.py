"""The engine's side of a kind that packs many rows into one request (embed): the packer of one step.

Rows of such a step submit their prepared input to the step's `Packer` (one per step and engine). The
packer closes packs with a `batching.Batcher` (count, tokens, linger), builds each pack's request with
the kind's pure `pack_request`, sends it through the provider's client (admission, retries, 429s),
reserves tokens calibrated on earlier answers, writes every row's own cache entry from the kind's pure
`row_entries`, and hands each row the result of the kind's pure `row_results`. Under a token budget,
packs are sized in calibrated tokens to a share of the second and formed late (`PACKS_AHEAD` wait for
admission, the other rows wait unpacked), so that what the answers teach sizes the packs that follow.
A 4xx blaming an input is bisected by the batcher (`batching.splittable` / `blamed_input`). The kind
itself sends nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Generic, Protocol, TypeVar

from .batching import Batcher, Slot, TokenCalibration, apportion, pack_max_tokens
from .budget import Charge
from .calls import CallError, ProviderClient
from .errors import RowError
from .records import Parsed, StepResult
from .requests import HttpRequest

__all__ = ["PackingKind", "Packer"]

P = TypeVar("P")
P_contra = TypeVar("P_contra", contravariant=True)
# Under a token budget, packs are closed only while fewer than this many requests wait for admission (one
# at the head of the queue, one behind it): the rows beyond them are packed once those go, sized by the
# answers in by then.
PACKS_AHEAD = 2


class PackingKind(Protocol[P_contra]):
    """What a packing kind gives the engine: pure functions of its prepared inputs and answers."""

    name: str

    def pack_limits(self, token_share_1s: int | None) -> tuple[int, int, int | None]:
        """(inputs, estimated tokens) at most per pack, and the default pack target in reserved tokens."""
        ...

    def pack_request(self, inputs: Sequence[P_contra]) -> HttpRequest:
        """The one request that asks for every input of a pack."""
        ...

    def parse_pack(self, body: bytes, n: int, estimate: int) -> Parsed:
        """A 2xx answer to a pack of `n` inputs (raises RequestError subclasses when unusable)."""
        ...

    def pack_problem(self, parsed: Parsed) -> str | None:
        """Why a well-formed answer cannot be used by this step's rows (e.g. another vector size)."""
        ...

    def row_entries(self, parsed: Parsed, shares: Sequence[int | None]) -> list[bytes]:
        """Per input, the cache entry a one-input request would have got (with its share of tokens)."""
        ...

    def row_results(
        self, payload: P_contra, parsed: Parsed, index: int, share: int | None, attempts: int, waiters: int
    ) -> list[StepResult]:
        """The results of the rows waiting for input `index` (rows sharing one input: the first
        carries its tokens, so the rows' tokens sum to the answer's usage)."""
        ...


class Packer(Generic[P]):
    """Packs one step's rows into shared requests and sends them (see the module doc)."""

    def __init__(
        self,
        kind: PackingKind[P],
        client: ProviderClient,
        *,
        spawn: Callable[[Coroutine[Any, Any, None]], Any],
        charge: Charge | None,
        linger_s: float,
    ) -> None:
        self.kind = kind
        self.client = client
        self.charge = charge
        self.calibration = TokenCalibration()
        capacity = client.capacity
        items, mbt, self._target = kind.pack_limits(capacity.token_share(1.0))
        paced = self._target is not None
        self.batcher: Batcher[P] = Batcher(
            self._send,
            max_items=items,
            max_tokens=mbt,
            linger_s=linger_s,
            spawn=spawn,
            busy=capacity.busy,
            ahead=PACKS_AHEAD if paced else None,
            waiting=capacity.waiting if paced else lambda: 0,
        )

    def submit(self, key: str, payload: P, tokens: int) -> Awaitable[StepResult]:
        """Queue one row's input; the awaitable gives the row's result."""
        return self.batcher.submit(key, payload, tokens)

    def _resize(self) -> None:
        if self._target is not None:
            # the target follows the second's budget as the gate knows it now: a per-second server's
            # lower limit learned from its 429s makes packs smaller, its recovery larger again
            target = self.kind.pack_limits(self.client.capacity.token_share(1.0))[2]
            if target is not None:
                self._target = target
            # packs are closed by estimate but reserve the calibrated amount: size them so that
            # what they reserve, not what they are estimated at, is the target
            self.batcher.max_tokens = pack_max_tokens(self._target, self.calibration)

    async def _send(self, slots: list[Slot[P]]) -> None:
        """One request for `slots`; store each row's answer, then hand it to its rows."""
        kind = self.kind
        n = len(slots)
        estimate = sum(s.tokens for s in slots)
        request = kind.pack_request([s.payload for s in slots])
        tpm = self.client.capacity.tpm

        def reserve() -> int:
            # asked when the request reaches the head of the admission queue: what earlier answers
            # taught about the provider's counts applies, even to a pack that queued meanwhile
            tokens = self.calibration.reserve(estimate)
            return min(tokens, tpm) if tpm is not None and estimate <= tpm else tokens

        reply = await self.client.call(
            request,
            tokens=reserve,
            cache_key=None,
            parse=lambda b: kind.parse_pack(b, n, estimate),
            completion_charge=0,
            charge=self.charge,
        )
        parsed = reply.parsed
        for s in slots:
            s.attempts += reply.attempts
        problem = kind.pack_problem(parsed)
        if problem is not None:
            raise CallError(RowError(problem), 0)
        usage = parsed.usage
        shares: list[int | None]
        if usage is not None and not usage.estimated:
            self.calibration.observe(estimate, usage.prompt_tokens)
            self._resize()
            shares = list(apportion(usage.prompt_tokens, [s.tokens for s in slots]))
        else:
            shares = [None] * n
        if self.client.cache.enabled:
            # Each row's answer is stored before any row uses it: a re-run (after a crash, or an edit of
            # some rows) finds every row answered here and re-sends only the others, re-packed.
            # (All queued at once, before any wait: a stop arriving meanwhile cannot drop some.)
            entries = kind.row_entries(parsed, shares)
            await self.client.cache.store_many([(s.key, e) for s, e in zip(slots, entries, strict=True)])
        for i, (s, share) in enumerate(zip(slots, shares, strict=True)):
            s.settle(kind.row_results(s.payload, parsed, i, share, s.attempts, len(s.waiters)))
