"""The only aiohttp client user: send one request to a provider, map network failures to our errors."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import aiohttp

from .errors import ConnectError, TransientError
from .job.profiles import ResolvedProvider
from .logs import event
from .requests import HttpRequest, Multipart, StreamAssembler

__all__ = ["HttpRequest", "HttpResponse", "StreamAssembler", "Transport", "new_session"]

log = logging.getLogger(__name__)

# After falling over to a backup URL, try the primary again after this long.
PRIMARY_RETRY_S = 60.0


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    url: str = ""


class Transport:
    """Sends requests to one provider's URLs; falls over to backups on connection errors and 5xx."""

    def __init__(self, provider: ResolvedProvider, api_key: str | None, session: aiohttp.ClientSession) -> None:
        self.provider = provider
        self._session = session
        self._headers = {k: v for k, v in provider.headers}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._json_headers = {**self._headers, "Content-Type": "application/json"}
        self._by_key: dict[tuple[int, str], dict[str, str]] = {}  # key pools: headers per key
        # Proxies from the environment, decided once: aiohttp's trust_env re-reads the environment and
        # ~/.netrc on every request, which costs more than the rest of the request on a fast server.
        self._proxies = {u: _env_proxy(u) for u in provider.base_urls}
        # per (limit, streamed): ClientTimeout is immutable, made once instead of per request
        self._timeouts: dict[tuple[float, bool], aiohttp.ClientTimeout] = {}
        self._url_index = 0
        self._left_primary_at: float | None = None
        self.failovers = 0

    @property
    def current_url(self) -> str:
        return self.provider.base_urls[self._url_index]

    def _pick_url(self) -> tuple[int, str]:
        if (
            self._url_index
            and self._left_primary_at is not None
            and asyncio.get_running_loop().time() - self._left_primary_at >= PRIMARY_RETRY_S
        ):
            self._url_index = 0
            self._left_primary_at = None
        return self._url_index, self.provider.base_urls[self._url_index]

    def mark_failing(self, index: int) -> None:
        """The URL at `index` failed (connection error or 5xx): later attempts use the next one."""
        urls = self.provider.base_urls
        if len(urls) > 1 and index == self._url_index:
            self._url_index = (index + 1) % len(urls)
            self.failovers += 1
            self._left_primary_at = asyncio.get_running_loop().time() if self._url_index else None
            event(
                log,
                logging.WARNING,
                "provider.failover",
                provider=self.provider.name,
                from_url=urls[index],
                to_url=urls[self._url_index],
            )

    def _keyed(self, headers: dict[str, str], key: str) -> dict[str, str]:
        """`headers` sending `key` instead of the transport's own (key pools: the ticket's key)."""
        cached = self._by_key.get((id(headers), key))
        if cached is None:
            cached = self._by_key[(id(headers), key)] = {**headers, "Authorization": f"Bearer {key}"}
        return cached

    async def send(self, req: HttpRequest, key: str | None = None) -> HttpResponse:
        """One attempt. Returns any HTTP answer; raises ConnectError / TransientError without one.

        `key`: the API key to send instead of the transport's own (a key pool's ticket names it)."""
        if req.method == "GET":
            return await self.fetch(req.endpoint, req.timeout_s or self.provider.timeout_s)
        index, base = self._pick_url()
        url = base + req.endpoint
        limit = req.timeout_s or self.provider.timeout_s
        timeout = self._timeouts.get((limit, req.stream is not None))
        if timeout is None:
            if req.stream is not None:
                timeout = aiohttp.ClientTimeout(
                    total=None, sock_read=limit, sock_connect=self.provider.connect_timeout_s
                )
            else:
                timeout = aiohttp.ClientTimeout(total=limit, sock_connect=self.provider.connect_timeout_s)
            self._timeouts[(limit, req.stream is not None)] = timeout
        opened: list[IO[bytes]] = []
        try:
            if req.multipart is not None:
                data: Any = _form(req.multipart, opened)
                headers = self._headers
            else:
                data = req.data
                if data is None:
                    data = json.dumps(req.json_body, ensure_ascii=False, separators=(",", ":")).encode()
                if len(data) > 1 << 20:
                    data = io.BytesIO(data)  # aiohttp streams file-likes; raw bytes over 1 MiB block the loop
                headers = self._json_headers
            if key is not None:  # key pools (issue 10b): the request carries its ticket's key
                headers = self._keyed(headers, key)
            async with self._session.post(
                url, data=data, headers=headers, timeout=timeout, proxy=self._proxies.get(base)
            ) as resp:
                # (the content type parsed only for a streamed request: a header parse per answer saved)
                if req.stream is not None and 200 <= resp.status < 300 and resp.content_type == "text/event-stream":
                    body = await _read_events(resp, req.stream())
                else:
                    body = await resp.read()
                if resp.status >= 500:
                    self.mark_failing(index)
                return HttpResponse(resp.status, body, resp.headers, url)
        except aiohttp.ClientConnectorError as exc:
            self.mark_failing(index)
            raise ConnectError(f"cannot connect to {base}: {exc.os_error or exc}") from exc
        except TimeoutError as exc:
            raise TransientError(f"no answer from {base} within {limit:g}s (timeout)") from exc
        except aiohttp.ServerDisconnectedError as exc:
            raise TransientError(f"{base} closed the connection without an answer") from exc
        except (aiohttp.ClientPayloadError, aiohttp.ClientResponseError) as exc:
            raise TransientError(f"broken response from {base}: {exc}") from exc
        except aiohttp.ClientError as exc:
            self.mark_failing(index)
            raise TransientError(f"network error talking to {base}: {type(exc).__name__}: {exc}") from exc
        finally:
            for f in opened:
                with contextlib.suppress(OSError):
                    f.close()

    async def fetch(self, url: str, limit: float) -> HttpResponse:
        """GET an absolute URL (a generated image): no API key is sent, it may be another host's."""
        timeout = aiohttp.ClientTimeout(total=limit, sock_connect=self.provider.connect_timeout_s)
        try:
            async with self._session.get(url, timeout=timeout, proxy=_env_proxy(url)) as resp:
                return HttpResponse(resp.status, await resp.read(), resp.headers, url)
        except aiohttp.ClientConnectorError as exc:
            raise ConnectError(f"cannot connect to {url}: {exc.os_error or exc}") from exc
        except TimeoutError as exc:
            raise TransientError(f"no answer from {url} within {limit:g}s (timeout)") from exc
        except aiohttp.ClientError as exc:
            raise TransientError(f"GET {url} failed: {type(exc).__name__}: {exc}") from exc

    async def get(self, endpoint: str) -> HttpResponse:
        """A GET (e.g. /models) against the current URL."""
        index, base = self._pick_url()
        timeout = aiohttp.ClientTimeout(total=self.provider.connect_timeout_s + 30)
        try:
            async with self._session.get(
                base + endpoint, headers=self._headers, timeout=timeout, proxy=self._proxies.get(base)
            ) as resp:
                return HttpResponse(resp.status, await resp.read(), resp.headers, base + endpoint)
        except aiohttp.ClientConnectorError as exc:
            self.mark_failing(index)
            raise ConnectError(f"cannot connect to {base}: {exc.os_error or exc}") from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise TransientError(f"GET {base + endpoint} failed: {type(exc).__name__}: {exc}") from exc


def _form(body: Multipart, opened: list[IO[bytes]]) -> aiohttp.FormData:
    """The multipart body of one attempt; its files are opened here (closed by the caller after the
    attempt) and read in chunks by aiohttp as it sends, so a file is never held in memory."""
    form = aiohttp.FormData()
    for name, value in body.fields:
        form.add_field(name, value)
    for part in body.files:
        f = part.path.open("rb")
        opened.append(f)
        form.add_field(part.name, f, filename=part.filename, content_type=part.content_type)
    return form


async def _read_events(resp: aiohttp.ClientResponse, assembler: StreamAssembler) -> bytes:
    """Read an SSE body (`data:` lines, events ended by a blank line, `[DONE]` last) into one body."""
    pending = bytearray()
    data: list[bytes] = []

    def line(raw: bytes) -> bool:
        raw = raw.rstrip(b"\r")
        if not raw:  # end of an event
            if data:
                payload = b"\n".join(data)
                data.clear()
                if payload.strip() == b"[DONE]":
                    return True
                assembler.feed(payload)
        elif raw.startswith(b"data:"):
            data.append(raw[6:] if raw[5:6] == b" " else raw[5:])
        return False  # comments (":"), event:, id:, retry: lines carry nothing we need

    async for chunk in resp.content.iter_any():
        pending += chunk
        while (i := pending.find(b"\n")) >= 0:
            raw = bytes(pending[:i])
            del pending[: i + 1]
            if line(raw):
                return assembler.finish()
    for raw in (bytes(pending), b""):  # a last event without its blank line
        if line(raw):
            break
    return assembler.finish()


def _env_proxy(url: str) -> str | None:
    """The proxy the environment asks for `url` (HTTPS_PROXY, HTTP_PROXY, NO_PROXY), if any."""
    host = urllib.parse.urlsplit(url).hostname or ""
    proxies = urllib.request.getproxies()
    if not proxies or urllib.request.proxy_bypass(host):
        return None
    return proxies.get(urllib.parse.urlsplit(url).scheme)


def new_session(max_connections: int) -> aiohttp.ClientSession:
    """One session per run; the connector allows the largest concurrency plus room for backups."""
    connector = aiohttp.TCPConnector(limit=max_connections, limit_per_host=0, ttl_dns_cache=300)
    return aiohttp.ClientSession(connector=connector, trust_env=False)
