"""The run's HTTP session, opened by the first request: a run the cache answers whole opens none and does
not even import aiohttp (~0.15 s of start-up, and an SSL context)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from .job.profiles import ResolvedProvider
    from .requests import HttpRequest
    from .transport import HttpResponse, Transport


class LazySession:
    """One aiohttp session per run, made on first use; `close` closes it if it was made."""

    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self._session: Any = None

    def get(self) -> Any:
        if self._session is None:
            from .transport import new_session

            self._session = new_session(self.max_connections)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


class LazyTransport:
    """A `transport.Transport` made (with the session) when the first request goes out."""

    def __init__(self, provider: ResolvedProvider, api_key: str | None, session: LazySession) -> None:
        self.provider = provider
        self._api_key = api_key
        self._session = session
        self._transport: Transport | None = None

    @property
    def real(self) -> Transport:
        if self._transport is None:
            from .transport import Transport

            self._transport = Transport(self.provider, self._api_key, self._session.get())
        return self._transport

    def send(self, req: HttpRequest, key: str | None = None) -> Coroutine[Any, Any, HttpResponse]:
        # the real transport's coroutine itself, not one more around it: every suspension of a request
        # on the wire passes through each coroutine layer twice
        return self.real.send(req) if key is None else self.real.send(req, key)

    async def get(self, endpoint: str) -> HttpResponse:
        return await self.real.get(endpoint)
