"""Exact per-key limits: rolling-window requests and tokens, requests in flight, and what to tell the client."""

from __future__ import annotations

import math
from collections import deque

from .config import KeyLimits


def fmt_duration(seconds: float) -> str:
    """A reset duration as OpenAI writes it: `20ms`, `1s`, `1.5s`, `6m0s`."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{int(rest)}s"


class KeyLimiter:
    """Limits of one key over a rolling window of `period_s` seconds.

    The key's limits are per `window_s` (per minute as a rule); they are enforced over `period_s`
    (window_s unless the server counts per second) at `scale` of their value (a server whose real
    limits are lower than the job says), so a limit of N per window_s admits N * scale * period_s /
    window_s per period_s. A request admitted at time t counts in every window (t - period_s, t];
    admission needs room for it in (now - period_s, now], and fewer than `concurrency` requests in
    flight. Rejections consume nothing.
    """

    __slots__ = (
        "limits",
        "window_s",
        "period_s",
        "_rpm",
        "_tpm",
        "_per_minute",
        "_req",
        "_tok",
        "_tok_sum",
        "in_flight",
    )

    def __init__(self, limits: KeyLimits, window_s: float, period_s: float | None = None, scale: float = 1.0) -> None:
        self.limits = limits
        self.window_s = window_s
        self.period_s = period_s or window_s
        ratio = scale * self.period_s / window_s
        self._rpm = limits.rpm * ratio if limits.rpm is not None else None
        self._tpm = limits.tpm * ratio if limits.tpm is not None else None
        self._per_minute = 60.0 / self.period_s  # enforced figures -> per-minute figures for headers
        self._req: deque[float] = deque()
        self._tok: deque[tuple[float, int]] = deque()
        self._tok_sum = 0
        self.in_flight = 0

    def _prune(self, now: float) -> None:
        edge = now - self.period_s
        req = self._req
        while req and req[0] <= edge:
            req.popleft()
        tok = self._tok
        while tok and tok[0][0] <= edge:
            self._tok_sum -= tok.popleft()[1]

    def try_admit(self, now: float, charge: int) -> str | None:
        """Admit a request charging `charge` tokens; return None, or which limit refused it."""
        lim = self.limits
        self._prune(now)
        if lim.concurrency is not None and self.in_flight >= lim.concurrency:
            return "concurrency"
        if self._rpm is not None and len(self._req) + 1 > self._rpm + 1e-9:
            return "rpm"
        if self._tpm is not None and self._tok_sum + charge > self._tpm + 1e-9:
            return "tpm"
        if self._rpm is not None:
            self._req.append(now)
        if self._tpm is not None and charge:
            self._tok.append((now, charge))
            self._tok_sum += charge
        self.in_flight += 1
        return None

    def release(self) -> None:
        self.in_flight -= 1

    def used(self, now: float) -> tuple[int, int]:
        """Requests and tokens counted in the window ending at `now`."""
        self._prune(now)
        return len(self._req), self._tok_sum

    def enforced(self) -> tuple[float | None, float | None]:
        """The limits as enforced: per period_s, scaled."""
        return self._rpm, self._tpm

    def retry_after(self, now: float, which: str, charge: int) -> float | None:
        """Seconds until a request refused by `which` (rpm or tpm) would fit, all else unchanged."""
        self._prune(now)
        if which == "rpm" and self._rpm is not None and self._req:
            k = min(len(self._req) - 1, max(0, len(self._req) - int(self._rpm + 1e-9)))
            return max(0.0, self._req[k] + self.period_s - now)
        if which == "tpm" and self._tpm is not None:
            excess = self._tok_sum + charge - self._tpm
            for t, n in self._tok:
                excess -= n
                if excess <= 1e-9:
                    return max(0.0, t + self.period_s - now)
        return None

    def headers(self, now: float) -> dict[str, str]:
        """OpenAI-style x-ratelimit-* headers: limits per minute; remaining and reset of the enforced window."""
        self._prune(now)
        out: dict[str, str] = {}
        if self._rpm is not None:
            out["x-ratelimit-limit-requests"] = str(int(self._rpm * self._per_minute + 1e-9))
            out["x-ratelimit-remaining-requests"] = str(max(0, int(self._rpm + 1e-9) - len(self._req)))
            out["x-ratelimit-reset-requests"] = fmt_duration(self._req[0] + self.period_s - now if self._req else 0)
        if self._tpm is not None:
            out["x-ratelimit-limit-tokens"] = str(int(self._tpm * self._per_minute + 1e-9))
            out["x-ratelimit-remaining-tokens"] = str(max(0, int(self._tpm - self._tok_sum)))
            first = self._tok[0][0] if self._tok else None
            out["x-ratelimit-reset-tokens"] = fmt_duration(first + self.period_s - now if first is not None else 0)
        return out


class LimitBook:
    """The limiters of all keys."""

    def __init__(
        self,
        keys: dict[str, KeyLimits] | None,
        default: KeyLimits,
        window_s: float,
        period_s: float | None = None,
        scale: float = 1.0,
    ) -> None:
        self._keys = keys
        self._default = default
        self._window_s = window_s
        self._period_s = period_s
        self._scale = scale
        self._by_key: dict[str | None, KeyLimiter] = {}

    def known(self, key: str | None) -> bool:
        return self._keys is None or (key is not None and key in self._keys)

    def get(self, key: str | None) -> KeyLimiter:
        lim = self._by_key.get(key)
        if lim is None:
            limits = self._default if self._keys is None or key not in self._keys else self._keys[key]
            lim = self._by_key[key] = KeyLimiter(limits, self._window_s, self._period_s, self._scale)
        return lim
