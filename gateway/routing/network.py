"""The network under httpx for deliveries: an httpcore network backend on asyncio's own transports.

httpcore speaks HTTP (through h11) over a *network backend*; its default, anyio's, wraps each socket operation in
cancel scopes and task look-ups, and answers "is this idle connection readable?" with a ``poll`` system call per
connection per request. Measured in the delivery benchmark, that was a third of what sending a message cost. This
backend keeps httpcore and httpx for all of HTTP (parsing, keep-alive, pools, TLS verification, timeouts and their
exceptions) and gives them the socket through an ``asyncio.Protocol``:

- what arrives is buffered by the protocol, so a read with data waiting is a slice, and "readable" is a look at
  that buffer (the event loop has already seen the peer close an idle connection);
- writes are held until the next read — the request's head and body leave in one ``send``, not two — or until
  ``FLUSH_SIZE`` bytes are held (a large body streams);
- timeouts are timers on the loop, not cancel scopes;
- a host's addresses are raced as anyio did (happy eyeballs, ``CONNECT_RACE_DELAY``): uvloop's
  ``create_connection`` tries them one after the other, each for the whole connect timeout.

It serves HTTP/1.1 as httpcore speaks it — one request at a time per connection, each answer read after its
request was written, by one task — which is what holding writes until the next read and the single waiter rely
on: not HTTP/2 (httpx's ``http2`` stays off for deliveries), nor upgraded or tunnelled streams.
"""

# ruff: noqa: ASYNC109 — httpcore's network interface takes each operation's timeout as a parameter

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
from asyncio.staggered import staggered_race
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

import httpcore
from httpcore import AsyncNetworkBackend, AsyncNetworkStream

SocketOption = tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]

FLUSH_SIZE = 64 * 1024  # bytes of writes held before they are sent without waiting for the next read
READ_HIGH_WATER = 256 * 1024  # bytes received and not yet read at which the socket stops being read
CONNECT_RACE_DELAY = 0.25  # seconds an address is given before the next one is tried beside it (RFC 8305's)

AddressInfo = tuple[int, int, int, str, tuple[Any, ...]]
Resolver = Callable[..., Awaitable[Iterable[AddressInfo]]]  # loop.getaddrinfo's signature


class _Expired(Exception):
    """A wait's timer ran out."""


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(_Expired())


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: what arrived and was not read yet, writes held, and who waits for what."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.received = bytearray()
        self.held: list[bytes] = []
        self.held_size = 0
        self.eof = False
        self.lost: Exception | None = None  # why the connection was lost, if it was by error
        self.closed = False
        self.reading_paused = False
        self.writing_paused = False
        self.waiter: asyncio.Future[None] | None = None  # a read waiting for data, or a write for room
        # Where the exchange stands: whether the connection served a request before this one (it was kept
        # alive), whether any of this request went out, and whether its answer is being read.
        self.reused = False
        self.request_sent = False
        self.answering = False

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= READ_HIGH_WATER and self.transport is not None and not self.reading_paused:
            self.transport.pause_reading()
            self.reading_paused = True
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = self.eof = True
        self.lost = exc
        self._wake()

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    # --- for the stream ---

    def deadline(self, timeout: float | None) -> float | None:
        return None if timeout is None else self.loop.time() + timeout

    async def wait(self, deadline: float | None) -> None:
        """Until the protocol has news (data, end, room to write) or the deadline (loop time) passes
        (``_Expired``): one deadline for a whole read or write, however many wake-ups it takes."""
        waiter = self.waiter = self.loop.create_future()
        timer = self.loop.call_at(deadline, _expire, waiter) if deadline is not None else None
        try:
            await waiter
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()

    def flush(self) -> None:
        if self.held and self.transport is not None and not self.closed:
            self.transport.write(self.held[0] if len(self.held) == 1 else b"".join(self.held))
            self.request_sent = True
        self.held.clear()
        self.held_size = 0

    def stale(self) -> bool:
        """A kept-alive connection the peer closed before any of this request went out (its close crossed our
        look at the idle connection): httpcore's pool sends the request again on another connection when told
        ``ConnectionNotAvailable`` — safe, as the peer received none of it. A new connection is never stale: a
        peer that closes every connection at once is an error, not a reason to try again."""
        return self.reused and not self.request_sent and not self.received and (self.eof or self.closed)


class AsyncioStream(AsyncNetworkStream):
    def __init__(self, connection: _Connection) -> None:
        self._connection = connection

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        connection = self._connection
        connection.answering = True
        if connection.held and connection.stale():
            connection.held.clear()
            raise httpcore.ConnectionNotAvailable()
        connection.flush()  # what was written is the request: it goes now, in one piece
        deadline = connection.deadline(timeout)
        while not connection.received and not connection.eof:
            try:
                await connection.wait(deadline)
            except _Expired:
                raise httpcore.ReadTimeout("timed out reading") from None
        if connection.received:
            data = bytes(connection.received[:max_bytes])
            del connection.received[:max_bytes]
            if connection.reading_paused and len(connection.received) < READ_HIGH_WATER // 4:
                assert connection.transport is not None
                connection.transport.resume_reading()
                connection.reading_paused = False
            return data
        if connection.lost is not None:
            raise httpcore.ReadError(str(connection.lost) or type(connection.lost).__name__) from connection.lost
        return b""  # the peer closed the connection

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        connection = self._connection
        if connection.answering:  # the first write of the next request on a kept-alive connection
            connection.answering = connection.request_sent = False
            connection.reused = True
        if connection.stale():
            connection.held.clear()
            raise httpcore.ConnectionNotAvailable()
        if connection.closed:
            raise httpcore.WriteError("the connection is closed")
        connection.held.append(buffer)
        connection.held_size += len(buffer)
        if connection.held_size < FLUSH_SIZE:
            return
        connection.flush()
        deadline = connection.deadline(timeout)
        while connection.writing_paused and not connection.closed:
            try:
                await connection.wait(deadline)
            except _Expired:
                raise httpcore.WriteTimeout("timed out writing") from None
        if connection.lost is not None:  # lost by error while the writes were waiting for room
            raise httpcore.WriteError(str(connection.lost) or type(connection.lost).__name__) from connection.lost

    async def aclose(self) -> None:
        connection = self._connection
        connection.held.clear()
        connection.held_size = 0
        transport = connection.transport
        if transport is None:
            return
        if transport.get_extra_info("ssl_object") is not None:
            # Closed at once, without waiting (up to 30 s) for the peer's close_notify — as anyio did: the
            # answers' lengths are framed by HTTP, so nothing is lost, and a hung peer holds no socket.
            transport.abort()
        else:
            transport.close()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> AsyncNetworkStream:
        connection = self._connection
        connection.flush()
        assert connection.transport is not None
        if connection.closed or connection.eof:  # a handshake would wait for a peer that is gone
            await self.aclose()
            raise httpcore.ConnectError("the connection closed before the TLS handshake")
        try:
            async with asyncio.timeout(timeout):
                transport = await connection.loop.start_tls(
                    connection.transport, connection, ssl_context, server_hostname=server_hostname
                )
        except TimeoutError:
            await self.aclose()
            raise httpcore.ConnectTimeout("timed out during the TLS handshake") from None
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            await self.aclose()
            raise httpcore.ConnectError(str(exc)) from exc
        except BaseException:
            await self.aclose()
            raise
        if transport is None:  # the peer closed the connection during the handshake
            await self.aclose()
            raise httpcore.ConnectError("the connection closed during the TLS handshake")
        connection.transport = transport
        return self

    def get_extra_info(self, info: str) -> Any:
        connection = self._connection
        if info == "is_readable":  # an idle connection that is "readable" was closed by the peer
            return bool(connection.received) or connection.eof
        if connection.transport is None:
            return None
        name = {"ssl_object": "ssl_object", "client_addr": "sockname", "server_addr": "peername", "socket": "socket"}
        return connection.transport.get_extra_info(name[info]) if info in name else None


class AsyncioBackend(AsyncNetworkBackend):
    def __init__(self, resolver: Resolver | None = None) -> None:
        self._resolver = resolver  # loop.getaddrinfo unless given (tests give hosts addresses of their own)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        local = (local_address, 0) if local_address else None
        try:
            async with asyncio.timeout(timeout):
                resolve = self._resolver or loop.getaddrinfo
                addresses = _interleaved(await resolve(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP))
                if not addresses:
                    raise OSError(f"{host} has no address")
                attempts = [functools.partial(_connect, loop, address, local) for address in addresses]
                connection, _, errors = await staggered_race(attempts, CONNECT_RACE_DELAY)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"timed out connecting to {host}:{port}") from None
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        if connection is None:
            error = next((e for e in reversed(errors) if e is not None), None)
            raise httpcore.ConnectError(str(error) if error else f"could not connect to {host}:{port}") from error
        _set_options(connection, socket_options)  # asyncio already sets TCP_NODELAY
        return AsyncioStream(connection)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[SocketOption] | None = None
    ) -> AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        connection = _Connection(loop)
        try:
            async with asyncio.timeout(timeout):
                await loop.create_unix_connection(lambda: connection, path)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"timed out connecting to {path}") from None
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        _set_options(connection, socket_options)
        return AsyncioStream(connection)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def _connect(loop: asyncio.AbstractEventLoop, address: AddressInfo, local: tuple[str, int] | None) -> _Connection:
    family, _, proto, _, sockaddr = address
    connection = _Connection(loop)
    await loop.create_connection(
        lambda: connection, sockaddr[0], sockaddr[1], family=family, proto=proto, local_addr=local
    )
    return connection


def _interleaved(addresses: Iterable[AddressInfo]) -> list[AddressInfo]:
    """The resolver's addresses, families alternating from the first one's (RFC 8305 §4): a broken IPv6 route
    costs one race delay, not every IPv6 address's."""
    families: dict[int, list[AddressInfo]] = {}
    for address in dict.fromkeys(addresses):
        families.setdefault(address[0], []).append(address)
    rounds = [list(group) for group in families.values()]
    ordered: list[AddressInfo] = []
    while any(rounds):
        for group in rounds:
            if group:
                ordered.append(group.pop(0))
    return ordered


def _set_options(connection: _Connection, socket_options: Iterable[SocketOption] | None) -> None:
    if not socket_options or connection.transport is None:
        return
    sock = connection.transport.get_extra_info("socket")
    for option in socket_options:
        sock.setsockopt(*option)
