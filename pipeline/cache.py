"""Response cache on disk (diskcache), keyed by the canonical request; never holds an API key."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diskcache

from .errors import JobError


def canonical_key(provider: str, endpoint: str, body: dict[str, Any], extra: str = "") -> str:
    """sha256 of the request as sent (sorted keys, no whitespace), the provider and the endpoint.

    `extra` carries what the JSON body does not show (for audio: the file content hash).
    """
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    h = hashlib.sha256()
    h.update(f"{provider}\x00{endpoint}\x00{extra}\x00".encode())
    h.update(blob.encode())
    return h.hexdigest()


@dataclass(frozen=True)
class CacheStats:
    directory: str
    entries: int
    size_bytes: int


class ResponseCache:
    """Raw response bodies by request key. Stored as soon as they arrive, before parsing."""

    def __init__(self, directory: str | Path, size_limit_gb: float = 50.0) -> None:
        self.directory = Path(directory)
        try:
            self._dc = diskcache.Cache(
                str(self.directory),
                size_limit=int(size_limit_gb * 1024**3),
                eviction_policy="least-recently-stored",  # reads never write: hits stay cheap
                statistics=False,
            )
        except Exception as exc:
            raise JobError(f"cannot open the cache folder {self.directory}: {exc}") from exc

    def get(self, key: str) -> bytes | None:
        value = self._dc.get(key)
        return value if isinstance(value, bytes) else None

    def put(self, key: str, body: bytes) -> None:
        self._dc.set(key, body)

    def delete(self, key: str) -> None:
        self._dc.delete(key)

    def stats(self) -> CacheStats:
        return CacheStats(str(self.directory), len(self._dc), int(self._dc.volume()))

    def clear(self) -> int:
        return int(self._dc.clear())

    def close(self) -> None:
        self._dc.close()


class NoCache:
    """Stands in when `cache.enabled: false`."""

    def get(self, key: str) -> bytes | None:
        return None

    def put(self, key: str, body: bytes) -> None:
        return None

    def delete(self, key: str) -> None:
        return None

    def close(self) -> None:
        return None
