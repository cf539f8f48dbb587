"""The HTTP transport deliveries go through: httpx's own transport, in small pools, several per destination.

httpcore's connection pool looks at every connection it holds each time a request starts or a response ends (to
drop expired ones — a ``poll`` per idle socket — and to count the idle ones for each of them). That is cheap for
the handful of connections a client usually keeps, and dominant for a worker with 16 or 64 deliveries in flight:
measured on loopback with a 14 KB message, 0.57 ms of CPU per request at 4 connections in one pool, 1.18 ms at 16
and 1.77 ms at 64. Spreading the same connections over pools of ``POOL_SIZE`` keeps it at about 0.55 ms whatever
the concurrency, with httpx still doing all of HTTP (timeouts, keep-alive, TLS, exceptions).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import httpcore
import httpx

from gateway.routing.network import AsyncioBackend

POOL_SIZE = 4  # connections per pool: past this, httpcore's per-request bookkeeping grows faster than the work
#: Origins whose pools are kept. Subscriptions' endpoints and senders' callbacks are URLs the clients choose: without
#: a bound every origin ever delivered to would keep its pools for the process's life (issue 21: memory). Past it,
#: the least recently used origins with nothing under way are closed and forgotten (opened again if used again).
MAX_ORIGINS = 256


class _Shard:
    """One of an origin's pools, and how many of its requests are under way (answer not yet read to the end)."""

    __slots__ = ("busy", "transport")

    def __init__(self, transport: httpx.AsyncHTTPTransport) -> None:
        self.transport = transport
        self.busy = 0


class _Releasing(httpx.AsyncByteStream):
    """The answer's body, which gives its shard's slot back once read and closed."""

    def __init__(self, stream: httpx.AsyncByteStream, shard: _Shard) -> None:
        self._stream = stream
        self._shard: _Shard | None = shard

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            if self._shard is not None:  # aclose may be called more than once
                self._shard.busy -= 1
                self._shard = None


def asyncio_transport(limits: httpx.Limits, ssl_context: ssl.SSLContext) -> httpx.AsyncHTTPTransport:
    """httpx's transport, over httpcore's connection pool on the asyncio network backend (``network``). httpx
    takes no network backend, so its pool is replaced by the same pool built with ours: httpx still turns requests,
    answers and httpcore's exceptions into its own."""
    transport = httpx.AsyncHTTPTransport(limits=limits, verify=ssl_context)
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=ssl_context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=AsyncioBackend(),
    )
    return transport


class ShardedTransport(httpx.AsyncBaseTransport):
    """``httpx.AsyncHTTPTransport``s of at most ``pool_size`` connections each, opened per origin as the
    concurrency to that origin needs them; a request goes to the origin's least busy pool."""

    def __init__(
        self, pool_size: int = POOL_SIZE, keepalive_expiry: float = 5.0, max_origins: int = MAX_ORIGINS
    ) -> None:
        self._limits = httpx.Limits(
            max_connections=pool_size, max_keepalive_connections=pool_size, keepalive_expiry=keepalive_expiry
        )
        self._pool_size = pool_size
        self._max_origins = max_origins
        self._shards: dict[tuple[str, str, int | None], list[_Shard]] = {}  # least recently used first
        self._ssl_context: ssl.SSLContext | None = None  # made once, at the first pool (loading CAs costs)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        origin = (url.scheme, url.host, url.port)
        shards = self._shards.pop(origin, None)
        forgotten = self._forget_idle_origins() if shards is None else []
        shards = self._shards[origin] = [] if shards is None else shards  # last: the most recently used
        shard = min(shards, key=lambda s: s.busy, default=None)
        if shard is None or shard.busy >= self._pool_size:
            if self._ssl_context is None:
                self._ssl_context = httpx.create_ssl_context()  # as httpx's default: certifi, SSL_CERT_FILE/DIR
            shard = _Shard(asyncio_transport(self._limits, self._ssl_context))
            shards.append(shard)
        shard.busy += 1
        try:
            for idle in forgotten:
                await idle.transport.aclose()
            response = await shard.transport.handle_async_request(request)
        except BaseException:
            shard.busy -= 1
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_Releasing(response.stream, shard),
            extensions=response.extensions,
        )

    def _forget_idle_origins(self) -> list[_Shard]:
        """Room for one more origin: the pools of the least recently used idle origins beyond ``max_origins``,
        taken out (closed by the caller). An origin with a request under way is kept."""
        over = len(self._shards) + 1 - self._max_origins
        if over <= 0:
            return []
        idle = [origin for origin, shards in self._shards.items() if not any(s.busy for s in shards)][:over]
        return [shard for origin in idle for shard in self._shards.pop(origin)]

    async def aclose(self) -> None:
        for shards in self._shards.values():
            for shard in shards:
                await shard.transport.aclose()
        self._shards.clear()
