"""Where gates come from: the factory the engine is given (today: one local AdmissionGate per key and URL)."""

from __future__ import annotations

import hashlib

from .job.profiles import ResolvedProvider
from .limits import AdmissionGate
from .ports import Gate


class LocalGates:
    """A `ports.GateFactory`: one in-process AdmissionGate per provider URL and key, so providers that
    share a key and URL share one gate (their limits are the server's for that key)."""

    def __init__(self) -> None:
        self._gates: dict[str, Gate] = {}

    def __call__(self, provider: ResolvedProvider, api_key: str | None) -> Gate:
        ident = hashlib.sha256(f"{provider.base_urls[0]}|{api_key}".encode()).hexdigest()
        if ident not in self._gates:
            self._gates[ident] = local_gate(provider)
        return self._gates[ident]


def local_gate(provider: ResolvedProvider) -> AdmissionGate:
    """An AdmissionGate under the provider's limits."""
    lim = provider.limits
    # Our admission time is not the server's arrival time: network jitter can put two requests
    # a period apart on our clock inside one period on the server's. A small margin on the
    # window absorbs that (about 1% of the rate at a 60 s period).
    margin = min(1.0, 0.01 * lim.period_s + 0.05)
    return AdmissionGate(rpm=lim.fixed("rpm"), tpm=lim.fixed("tpm"), concurrency=lim.concurrency,
                         period_s=lim.period_s + margin, nominal_period_s=lim.period_s,
                         auto=tuple(n for n in ("rpm", "tpm") if getattr(lim, n) == "auto"))
