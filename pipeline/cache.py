"""Response cache on disk (diskcache), keyed by the canonical request; never holds an API key."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import secrets
import struct
import time
import zlib
from collections.abc import Iterable, Iterator
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
    """Raw response bodies by request key. Stored as soon as they arrive, before parsing.

    An answer is first appended to this process's answer log (`answers-*.log` in the cache folder:
    one `write` per turn of the event loop) and kept in memory; answers move from the log into the
    diskcache store in one SQLite transaction per batch (`MOVE_AFTER_S`, `MOVE_ENTRIES`, `MOVE_BYTES`,
    whichever comes first, and at `close`), then the log is emptied. A commit per answer cost ~280 us
    (12 WAL page writes and 6 lock calls), more than the rest of a request.

    Durability is unchanged: diskcache runs SQLite in WAL mode with synchronous=NORMAL (no fsync at
    commit) and writes large values to files without fsync, so a commit survived a killed process but
    not necessarily a power loss; a `write` to the log is the same. Each live log is held with an
    exclusive `flock`; a log nobody holds was left by a dead process (killed, crashed, or a move that
    failed) and is moved into the store by the next cache opened on the folder. A record cut short at a
    log's end (killed mid-write) is dropped, the records before it are kept. Moving twice (a kill
    between the commit and the emptying) stores the same answers again."""

    enabled = True

    MOVE_AFTER_S = 1.0  # an answer waits at most this long in the log (loop time) before its move
    MOVE_ENTRIES = 512
    MOVE_BYTES = 8 * 1024**2  # and memory held by answers not yet moved stays below this

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
        self._logged: dict[str, bytes] = {}  # in this process's log, not yet moved into the store
        self._logged_bytes = 0
        self._log: Path | None = None  # this process's log, created at the first store
        self._log_fd = -1
        self._log_size = 0  # bytes of whole records in the log
        self._move_timer: asyncio.TimerHandle | None = None
        self._move_loop: asyncio.AbstractEventLoop | None = None
        self._error: DiskError | None = None  # a move that failed: raised by every later store and `close`
        self._closed = False
        try:
            self._take_over_dead_logs()
        except BaseException:
            self._dc.close()
            raise

    def get(self, key: str) -> bytes | None:
        if key in self._ahead:
            return self._ahead.pop(key)
        body = self._logged.get(key)
        if body is not None:
            return body
        value = self._dc.get(key)
        return value if isinstance(value, bytes) else None

    def prefetch(self, keys: Iterable[str]) -> None:
        """Read the entries of `keys` in a few queries, for the next `get` of each (a re-run answered
        from the cache otherwise pays one SQLite query per row). What `prefetch` read before and
        nobody asked for is dropped. Falls back to one `get` per key if the query fails."""
        self._ahead = {}
        logged = self._logged
        keys = [k for k in dict.fromkeys(keys) if k not in logged]  # (`get` finds those in memory)
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
        """Store an answer that just arrived; returns once it is in the log (see `store_many`)."""
        await self.store_many(((key, body),))

    async def store_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        """Store answers that just arrived (e.g. one entry per row of a packed request); returns once
        they are written to the log, as safe from a killed process as a commit was.

        Answers arriving in the same turn of the event loop are written with one `write` (group
        commit), and no caller goes on (parses, writes its row) before its answer is written. Every
        entry is queued before the first wait: a caller cancelled while waiting (a stopping run) still
        gets them all written. Raises DiskError if the write failed, or if an earlier move into the
        store failed (the answers are kept in the log; the run stops as on a failed write)."""
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
            self._append(_chunked_records(pending))
        except Exception as exc:
            error = DiskError(self.directory, exc)
            for *_, fut in pending:
                if not fut.done():
                    fut.set_exception(error)
            return
        logged, ahead = self._logged, self._ahead
        size = self._logged_bytes
        for key, body, _ in pending:
            logged[key] = body
            size += len(body)
            if ahead:
                ahead.pop(key, None)  # (a `prefetch` before the answer came said "missing")
        self._logged_bytes = size
        failed = self._error
        for *_, fut in pending:
            if not fut.done():
                if failed is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(failed)
        if len(logged) >= self.MOVE_ENTRIES or size >= self.MOVE_BYTES:
            self._move()
        else:
            loop = asyncio.get_running_loop()
            if self._move_timer is None or self._move_loop is not loop:
                if self._move_timer is not None:
                    self._move_timer.cancel()
                self._move_timer = loop.call_later(self.MOVE_AFTER_S, self._move)
                self._move_loop = loop

    def _append(self, chunks: Iterable[bytes]) -> None:
        """Append whole records to this process's log, chunk by chunk; on failure, cut the log back to
        the whole records it had before (none of these count)."""
        if self._log_fd < 0:
            self._open_log()
        written = 0
        try:
            for data in chunks:
                done = os.write(self._log_fd, data)
                if done < len(data):  # (a regular file writes short only when it runs out of space)
                    view = memoryview(data)
                    while done < len(data):
                        done += os.write(self._log_fd, view[done:])
                written += len(data)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._log_fd, self._log_size)
            raise
        self._log_size += written

    def _open_log(self) -> None:
        """Create this process's log, locked before its name can be seen (no other cache takes a new
        log for a dead one)."""
        token = f"{os.getpid()}-{secrets.token_hex(4)}"
        hidden = self.directory / f"tmp-answers-{token}"
        fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            log = self.directory / f"answers-{token}.log"
            os.rename(hidden, log)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(hidden)
            raise
        self._log, self._log_fd, self._log_size = log, fd, 0

    def _move(self) -> None:
        """Move the answers of this process's log into the store (one transaction), then empty the log.
        A failure keeps them in the log and in memory; the next store and `close` raise it."""
        if self._move_timer is not None:
            self._move_timer.cancel()
            self._move_timer = None
        if self._log_size == 0:
            return
        try:
            self._commit(self._logged)
        except DiskError as exc:
            if self._error is None:
                self._error = exc
            return
        self._logged = {}
        self._logged_bytes = 0
        try:
            os.ftruncate(self._log_fd, 0)
        except OSError as exc:  # the answers are stored: a later move of this log stores them again
            if self._error is None:
                self._error = DiskError(self._log or self.directory, exc)
            return
        self._log_size = 0

    def _commit(self, stored: dict[str, bytes], deleted: Iterable[str] = ()) -> None:
        """Delete `deleted` and store `stored` in the diskcache store, in one transaction."""
        try:
            with self._dc.transact():
                for key in deleted:
                    self._dc.delete(key)
                for key, body in stored.items():
                    self._dc.set(key, body)
        except Exception as exc:  # sqlite: OperationalError (disk full, I/O error); files: OSError
            raise DiskError(self.directory, exc) from exc

    def _take_over_dead_logs(self) -> None:
        """Move into the store every log left by a process that no longer holds it (paid answers)."""
        for path in sorted(self.directory.glob("answers-*.log")):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:  # another cache took it over meanwhile
                continue
            except OSError as exc:
                raise DiskError(path, exc) from exc
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live process's log
                try:
                    if os.stat(path).st_ino != os.fstat(fd).st_ino:
                        continue
                except FileNotFoundError:  # taken over (and removed) before this cache got the lock
                    continue
                self._commit(*replay(_read_all(fd)))
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            finally:
                os.close(fd)

    def delete(self, key: str) -> None:
        if key in self._logged:
            self._logged_bytes -= len(self._logged.pop(key))
        if self._log_size:  # a later take-over of the log must not bring the entry back
            try:
                self._append((b"".join(_record_parts(_DELETE, key, b"")),))
            except OSError as exc:
                raise DiskError(self.directory, exc) from exc
        self._dc.delete(key)

    def stats(self) -> CacheStats:
        """Entries and size, counting this process's answers not yet moved (another live process's
        are counted once moved, within `MOVE_AFTER_S`)."""
        self._move()
        if self._error is not None:
            raise self._error
        return CacheStats(str(self.directory), len(self._dc), int(self._dc.volume()))

    def clear(self) -> int:
        unmoved = sum(1 for key in self._logged if key not in self._dc)
        self._logged = {}
        self._logged_bytes = 0
        self._ahead = {}
        if self._log_size:
            try:
                os.ftruncate(self._log_fd, 0)
            except OSError as exc:
                raise DiskError(self._log or self.directory, exc) from exc
            self._log_size = 0
        return unmoved + int(self._dc.clear())

    def close(self) -> None:
        """Move what is left in the log, evict over the size limit, close. Raises DiskError if a move
        failed (the answers stay in the log, moved by the next cache opened here)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._move()
            if self._error is None:
                with contextlib.suppress(Exception):
                    self._dc.cull()
        finally:
            self._dc.close()
            if self._log_fd >= 0:
                if self._log_size == 0 and self._log is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(self._log)  # (under the lock: nobody else is reading it)
                os.close(self._log_fd)
                self._log_fd = -1
        if self._error is not None:
            raise self._error


# The answer log: records of a header (magic, operation, key length, body length, crc32 of key and
# body), the key (ASCII) and the body. A record whose magic, length or crc does not hold ends the log.
_MAGIC = b"PLA1"
_HEAD = struct.Struct("<4sBxHII")
_PUT = 0
_DELETE = 1


def _record_parts(op: int, key: str, body: bytes) -> tuple[bytes, bytes, bytes]:
    """A log record as its header, key and body, to be written one after the other."""
    k = key.encode()
    return _HEAD.pack(_MAGIC, op, len(k), len(body), zlib.crc32(body, zlib.crc32(k))), k, body


_CHUNK_BYTES = 1 << 20


def _chunked_records(pending: list[tuple[str, bytes, Any]]) -> Iterator[bytes]:
    """A loop turn's answers as log records, joined into writes of about 1 MB: one turn may bring
    several packs' answers (tens of MB of vectors), which joined into one write were copied twice
    (record, then the join) while the answers themselves were still held."""
    parts: list[bytes] = []
    size = 0
    for key, body, _ in pending:
        record = _record_parts(_PUT, key, body)
        parts += record
        size += len(record[0]) + len(record[1]) + len(body)
        if size >= _CHUNK_BYTES:
            yield b"".join(parts)
            parts, size = [], 0
    if parts:
        yield b"".join(parts)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def read_log(data: bytes) -> list[tuple[int, str, bytes]]:
    """The whole records at the start of a log, in order: (operation, key, body); a torn or damaged
    record ends it."""
    out = []
    pos, head, end = 0, _HEAD.size, len(data)
    while pos + head <= end:
        magic, op, klen, blen, crc = _HEAD.unpack_from(data, pos)
        stop = pos + head + klen + blen
        if magic != _MAGIC or op not in (_PUT, _DELETE) or stop > end:
            break
        k = data[pos + head : pos + head + klen]
        body = data[pos + head + klen : stop]
        if zlib.crc32(body, zlib.crc32(k)) != crc:
            break
        try:
            key = k.decode()
        except UnicodeDecodeError:
            break
        out.append((op, key, body))
        pos = stop
    return out


def replay(data: bytes) -> tuple[dict[str, bytes], set[str]]:
    """What a log leaves: the answers stored and the keys deleted (last operation on a key wins)."""
    stored: dict[str, bytes] = {}
    deleted: set[str] = set()
    for op, key, body in read_log(data):
        if op == _PUT:
            stored[key] = body
            deleted.discard(key)
        else:
            stored.pop(key, None)
            deleted.add(key)
    return stored, deleted


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
