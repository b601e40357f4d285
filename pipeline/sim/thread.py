"""SimulatorThread: a Simulator on its own event loop in a daemon thread, for synchronous callers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from types import TracebackType
from typing import Any

from .config import FaultRule, RequestRecord, SimConfig
from .server import Simulator


class SimulatorThread:
    """Runs a Simulator in a background thread; use as a context manager or start()/stop()."""

    def __init__(self, config: SimConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sim = Simulator(config)
        self.host = host
        self.port = port
        self.url: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready: Future[str] = Future()
        self._lock = threading.Lock()

    def start(self) -> str:
        """Start the server thread; return the base url."""
        if self._thread is not None:
            raise RuntimeError("SimulatorThread already started")
        self._thread = threading.Thread(target=self._main, name="pipeline-sim", daemon=True)
        self._thread.start()
        self.url = self._ready.result(timeout=30)
        return self.url

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            try:
                url = loop.run_until_complete(self.sim.start(self.host, self.port))
            except BaseException as e:
                self._ready.set_exception(e)
                return
            self._ready.set_result(url)
            loop.run_forever()
            loop.run_until_complete(self.sim.stop())
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    def stop(self) -> None:
        """Stop the server and join the thread (idempotent)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        loop = self._loop
        if loop is not None and thread.is_alive() and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)

    def _call(self, fn: Any, *args: Any) -> Any:
        loop = self._loop
        if loop is None or self._thread is None:
            return fn(*args)

        async def run() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout=30)

    @property
    def records(self) -> list[RequestRecord]:
        """A snapshot copy of the records."""
        records: list[RequestRecord] = self._call(lambda: list(self.sim.records))
        return records

    def in_flight(self, path_suffix: str = "") -> int:
        """Requests being answered now whose path ends with `path_suffix`."""
        n: int = self._call(self.sim.in_flight, path_suffix)
        return n

    def set_faults(self, faults: Iterable[FaultRule | dict[str, Any]]) -> None:
        self._call(self.sim.set_faults, list(faults))

    def reset_records(self) -> None:
        self._call(self.sim.reset_records)

    def __enter__(self) -> SimulatorThread:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
