"""Exact per-key limits: rolling-window requests and tokens, and requests in flight."""

from __future__ import annotations

from collections import deque

from .config import KeyLimits


class KeyLimiter:
    """Limits of one key over a rolling window of `window_s` seconds.

    A request admitted at time t counts in every window (t - window_s, t]; admission needs fewer
    than `rpm` admissions and at most `tpm - charge` tokens in (now - window_s, now], and fewer
    than `concurrency` requests in flight. Rejections consume nothing.
    """

    __slots__ = ("limits", "window_s", "_req", "_tok", "_tok_sum", "in_flight")

    def __init__(self, limits: KeyLimits, window_s: float) -> None:
        self.limits = limits
        self.window_s = window_s
        self._req: deque[float] = deque()
        self._tok: deque[tuple[float, int]] = deque()
        self._tok_sum = 0
        self.in_flight = 0

    def _prune(self, now: float) -> None:
        edge = now - self.window_s
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
        if lim.rpm is not None and len(self._req) >= lim.rpm:
            return "rpm"
        if lim.tpm is not None and self._tok_sum + charge > lim.tpm:
            return "tpm"
        if lim.rpm is not None:
            self._req.append(now)
        if lim.tpm is not None and charge:
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


class LimitBook:
    """The limiters of all keys."""

    def __init__(self, keys: dict[str, KeyLimits] | None, default: KeyLimits, window_s: float) -> None:
        self._keys = keys
        self._default = default
        self._window_s = window_s
        self._by_key: dict[str | None, KeyLimiter] = {}

    def known(self, key: str | None) -> bool:
        return self._keys is None or (key is not None and key in self._keys)

    def get(self, key: str | None) -> KeyLimiter:
        lim = self._by_key.get(key)
        if lim is None:
            limits = self._default if self._keys is None or key not in self._keys else self._keys[key]
            lim = self._by_key[key] = KeyLimiter(limits, self._window_s)
        return lim
