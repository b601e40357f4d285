"""Response cache on disk (diskcache), keyed by the canonical request; never holds an API key."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diskcache
import orjson

from .errors import DiskError, JobError


def canonical_json(body: dict[str, Any]) -> bytes:
    """The request body as sent and as keyed: sorted keys, no whitespace, UTF-8 (orjson: 15x json's speed)."""
    try:
        return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:  # a value YAML or a template produced that JSON cannot carry
        raise JobError(f"request body is not JSON-serialisable: {exc}") from exc


def request_key(provider: str, endpoint: str, blob: bytes, extra: str = "") -> str:
    """sha256 of the provider, the endpoint and the canonical body (never the API key).

    `extra` carries what the JSON body does not show (for audio: the file content hash).
    """
    h = key_state(provider, endpoint, extra).copy()
    h.update(blob)
    return h.hexdigest()


def key_state(provider: str, endpoint: str, extra: str = "") -> hashlib._Hash:
    """The sha256 state of `request_key` before the body (copy it before updating it)."""
    start = _KEY_STARTS.get((provider, endpoint, extra))
    if start is None:
        start = hashlib.sha256(f"{provider}\x00{endpoint}\x00{extra}\x00".encode())
        if len(_KEY_STARTS) < 1024:  # (audio keys carry a file hash in `extra`: not worth keeping)
            _KEY_STARTS[(provider, endpoint, extra)] = start
    return start


# sha256 states after each (provider, endpoint, extra) prefix: a key costs one copy and the body's hash
_KEY_STARTS: dict[tuple[str, str, str], hashlib._Hash] = {}


@dataclass(frozen=True)
class CacheStats:
    directory: str
    entries: int
    size_bytes: int


class ResponseCache:
    """Raw response bodies by request key. Stored as soon as they arrive, before parsing."""

    enabled = True

    def __init__(self, directory: str | Path, size_limit_gb: float = 50.0) -> None:
        self.directory = Path(directory)
        try:
            self._dc = diskcache.Cache(
                str(self.directory),
                size_limit=int(size_limit_gb * 1024**3),
                eviction_policy="least-recently-stored",  # reads never write: hits stay cheap
                statistics=False,
                # eviction runs once per run (`close`), not inside every write on the hot path
                cull_limit=0,
                # diskcache maps 64 MB and caches 32 MB of the database by default, and both count
                # as the process's memory: keep them small, the OS page cache does the rest
                sqlite_mmap_size=0,
                sqlite_cache_size=2048,
            )
        except OSError as exc:
            raise DiskError(self.directory, exc) from exc
        except Exception as exc:
            raise JobError(f"cannot open the cache folder {self.directory}: {exc}") from exc
        self._pending: list[tuple[str, bytes, asyncio.Future[None]]] = []
        self._flush_scheduled = False
        self._ahead: dict[str, bytes | None] = {}  # read by `prefetch`, each handed out once

    def get(self, key: str) -> bytes | None:
        if key in self._ahead:
            return self._ahead.pop(key)
        value = self._dc.get(key)
        return value if isinstance(value, bytes) else None

    def prefetch(self, keys: Iterable[str]) -> None:
        """Read the entries of `keys` in a few queries, for the next `get` of each (a re-run answered
        from the cache otherwise pays one SQLite query per row). What `prefetch` read before and
        nobody asked for is dropped. Falls back to one `get` per key if the query fails."""
        self._ahead = {}
        keys = list(dict.fromkeys(keys))
        select = (
            "SELECT key, mode, filename, value FROM Cache WHERE raw = 1 AND key IN ({}) "
            "AND (expire_time IS NULL OR expire_time > ?)"
        )
        try:
            for lo in range(0, len(keys), 500):
                part = keys[lo : lo + 500]
                found = {}
                rows = self._dc._sql(select.format(",".join("?" * len(part))), (*part, time.time())).fetchall()
                fetch = self._dc._disk.fetch
                for key, mode, filename, value in rows:
                    # (an answer kept in the database: as diskcache's `fetch` returns it, without the call)
                    body = (
                        value
                        if mode == diskcache.core.MODE_RAW and type(value) is bytes
                        else fetch(mode, filename, value, False)
                    )
                    if isinstance(body, bytes):
                        found[key] = body
                for key in part:
                    self._ahead[key] = found.get(key)
        except Exception:  # diskcache internals changed, a file vanished: ask one by one
            self._ahead = {}

    async def store(self, key: str, body: bytes) -> None:
        """Store an answer that just arrived; returns once it is committed (see `store_many`)."""
        await self.store_many(((key, body),))

    async def store_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        """Store answers that just arrived (e.g. one entry per row of a packed request); returns once
        they are committed.

        Answers arriving in the same turn of the event loop are committed in one transaction (group
        commit): a commit per answer costs more than the rest of a request on a fast server, and no
        caller goes on (parses, writes its row) before its answer is on disk. Every entry is queued
        before the first wait: a caller cancelled while waiting (a stopping run) still gets them all
        committed."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._pending.extend((key, body, fut) for key, body in items)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        await fut

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        self._flush_scheduled = False
        try:
            with self._dc.transact():
                for key, body, _ in pending:
                    self._dc.set(key, body)
        except Exception as exc:
            # sqlite reports a full disk or an I/O error as OperationalError, the file system as OSError
            error = DiskError(self.directory, exc)
            for *_, fut in pending:
                if not fut.done():
                    fut.set_exception(error)
        else:
            for *_, fut in pending:
                if not fut.done():
                    fut.set_result(None)

    def delete(self, key: str) -> None:
        self._dc.delete(key)

    def stats(self) -> CacheStats:
        return CacheStats(str(self.directory), len(self._dc), int(self._dc.volume()))

    def clear(self) -> int:
        return int(self._dc.clear())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._dc.cull()
        self._dc.close()


class NoCache:
    """Stands in when `cache.enabled: false`."""

    enabled = False

    def get(self, key: str) -> bytes | None:
        return None

    def prefetch(self, keys: Iterable[str]) -> None:
        return None

    async def store(self, key: str, body: bytes) -> None:
        return None

    async def store_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        return None

    def delete(self, key: str) -> None:
        return None

    def close(self) -> None:
        return None
