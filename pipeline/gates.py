"""Where gates come from: the factory the engine is given (today: one local AdmissionGate per key and URL)."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence

from .job.profiles import ResolvedProvider
from .keypool import make_gate
from .limits import AdmissionGate
from .ports import Gate


class LocalGates:
    """A `ports.GateFactory`: one in-process AdmissionGate per provider URL and key, so providers that
    share a key and URL share one gate (their limits are the server's for that key). A provider with a
    key pool (`key_pools`: provider name -> its keys) gets a `keypool.KeyPool`: a gate per key."""

    def __init__(self, key_pools: Mapping[str, Sequence[str]] | None = None) -> None:
        self._gates: dict[str, Gate] = {}
        self._pools = dict(key_pools or {})

    def __call__(self, provider: ResolvedProvider, api_key: str | None) -> Gate:
        pool = self._pools.get(provider.name)
        # An images-per-minute provider's gate counts images where others count tokens: it never shares
        # a gate with a token-counting provider of the same URL and key.
        unit = f"ipm={provider.limits.ipm}" if provider.limits.ipm is not None else "tokens"
        who = list(pool) if pool else api_key
        ident = hashlib.sha256(f"{provider.base_urls[0]}|{who}|{unit}".encode()).hexdigest()
        if ident not in self._gates:
            new_gate = functools.partial(local_gate, provider)
            self._gates[ident] = make_gate(provider.name, pool, new_gate) if pool else new_gate()
        return self._gates[ident]


def local_gate(provider: ResolvedProvider) -> AdmissionGate:
    """An AdmissionGate under the provider's limits."""
    lim = provider.limits
    # Our admission time is not the server's arrival time: network jitter can put two requests
    # a period apart on our clock inside one period on the server's. A small margin on the
    # window absorbs that (about 1% of the rate at a 60 s period).
    margin = min(1.0, 0.01 * lim.period_s + 0.05)
    # ipm (images per minute): image requests reserve their `n` images as tokens, so the token dimension
    # holds images for a provider that sets ipm (it may not set tpm as well)
    tpm = lim.ipm if lim.ipm is not None else lim.fixed("tpm")
    return AdmissionGate(
        rpm=lim.fixed("rpm"),
        tpm=tpm,
        concurrency=lim.concurrency,
        period_s=lim.period_s + margin,
        nominal_period_s=lim.period_s,
        auto=tuple(n for n in ("rpm", "tpm") if getattr(lim, n) == "auto"),
        images=lim.ipm is not None,
    )
