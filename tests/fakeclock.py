"""A virtual-time event loop for tests: when the loop is idle its clock jumps to the next timer."""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["VirtualClockLoop", "run_virtual", "virtual_time"]

T = TypeVar("T")

# A real clock always moves between two turns of the loop. Without this tick a timer computed to
# fire "now" (float rounding in a rate limiter, say) would be re-armed at the same instant forever.
_TICK = 1e-9


class _JumpingSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """Polls real I/O without blocking; if nothing is ready, advances the loop's clock instead."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualClockLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None or timeout <= 0 or self.loop is None:
            # None means no timer is pending: only real I/O (threads, sockets) can wake the loop.
            return super().select(timeout)
        events = super().select(0)
        if not events:
            self.loop.advance_to_next_timer(timeout)
        return events


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """Event loop whose `time()` is virtual: `asyncio.sleep(3600)` finishes at once in wall time.

    Real I/O still works (it is polled without blocking before every jump), but a test that waits
    for a thread or a socket sees virtual time race ahead meanwhile; use it for timer-driven code.
    """

    def __init__(self, start: float = 0.0) -> None:
        selector = _JumpingSelector()
        super().__init__(selector)
        selector.loop = self
        self._now = float(start)

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by `seconds` (never backward)."""
        if seconds > 0:
            self._now += seconds

    def advance_to_next_timer(self, timeout: float) -> None:
        """Jump to the earliest timer, exactly, so `sleep(until - now)` lands on `until` itself."""
        # `_scheduled` is BaseEventLoop's timer heap (stable since 3.4; cancelled heads are already
        # dropped when this runs). `now + timeout` alone can land an ulp short of the timer.
        scheduled = getattr(self, "_scheduled", None)
        if scheduled:
            self._now = max(self._now, scheduled[0].when())
        else:
            self.advance(timeout)

    def call_at(self, when, callback, *args, context=None):  # type: ignore[no-untyped-def,override]
        return super().call_at(max(when, self._now + _TICK), callback, *args, context=context)


def run_virtual(coro: Coroutine[Any, Any, T], *, start: float = 0.0, timeout: float | None = 7 * 86400.0) -> T:
    """Run `coro` on a fresh `VirtualClockLoop` starting at `start` and return its result.

    `timeout` is virtual seconds: a deadlock (everyone waiting, no timer left) would otherwise block
    the real selector forever; with the guard timer pending, the clock jumps to it and TimeoutError
    is raised at once.
    """

    async def guarded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    with asyncio.Runner(loop_factory=lambda: VirtualClockLoop(start)) as runner:
        return runner.run(guarded())


def virtual_time() -> float:
    """The running loop's clock (virtual under `run_virtual`)."""
    return asyncio.get_running_loop().time()
