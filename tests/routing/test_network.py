"""The asyncio network backend under httpx (``gateway.routing.network``), against real loopback servers, on
asyncio's own event loop and on uvloop's (what ``gateway serve`` and ``gateway worker`` run): answers whole and
intact however large, keep-alive, a connection the server closed while idle, timeouts and refusals as httpx's
exceptions, TLS with verification — and a request's head and body sent in one write."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.routing.network import CONNECT_RACE_DELAY, FLUSH_SIZE, AsyncioBackend, AsyncioStream, _Connection
from gateway.routing.transport import asyncio_transport

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def run_on(loop: str, scenario: Callable[[], Awaitable[None]]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(asyncio.wait_for(scenario(), 30))


def _client(
    ssl_context: ssl.SSLContext | None = None,
    timeout: float | httpx.Timeout = 5.0,
    backend: AsyncioBackend | None = None,
) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=4, keepalive_expiry=5.0)
    transport = asyncio_transport(limits, ssl_context or ssl.create_default_context())
    if backend is not None:
        transport._pool._network_backend = backend
    return httpx.AsyncClient(transport=transport, timeout=timeout)


class _Server:
    """A loopback HTTP/1.1 server: reads each request whole (Content-Length), hands it to ``answer``, and writes
    what that returns (or nothing, for ``None``); counts connections and requests."""

    def __init__(self, answer: Callable[[bytes, bytes], bytes | None], *, close_after_answer: bool = False) -> None:
        self.answer = answer
        self.close_after_answer = close_after_answer
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                body = await reader.readexactly(length)
                self.requests.append((head, body))
                answer = self.answer(head, body)
                if answer is None:
                    await asyncio.sleep(3600)
                    return
                writer.write(answer)
                await writer.drain()
                if self.close_after_answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_context)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()


def _ok(body: bytes = b"{}") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


@pytest.mark.parametrize("loop", LOOPS)
def test_requests_and_answers_arrive_whole_over_kept_alive_connections(loop: str) -> None:
    large = bytes(range(256)) * 4096  # 1 MiB each way: several flushes, the socket's flow control both ways

    async def scenario() -> None:
        server = _Server(lambda head, body: _ok(body[::-1]))
        port = await server.start()
        async with _client() as client:
            for body in (b'{"small": true}', large, b"{}"):
                response = await client.post(f"http://127.0.0.1:{port}/fhir/$process-message", content=body)
                assert response.status_code == 200
                assert response.content == body[::-1]
        assert [body for _, body in server.requests] == [b'{"small": true}', large, b"{}"]
        assert server.connections == 1  # one connection, kept alive from one request to the next
        await server.stop()

    run_on(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_connection_the_server_closed_while_idle_is_not_reused(loop: str) -> None:
    async def scenario() -> None:
        server = _Server(lambda head, body: _ok(), close_after_answer=True)  # no "Connection: close" said
        port = await server.start()
        async with _client() as client:
            for _ in range(3):
                response = await client.post(f"http://127.0.0.1:{port}/x", content=b"{}")
                assert response.status_code == 200
                await asyncio.sleep(0.05)  # the server's close reaches the idle connection
        assert server.connections == 3
        await server.stop()

    run_on(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_server_that_never_answers_is_a_read_timeout(loop: str) -> None:
    async def scenario() -> None:
        server = _Server(lambda head, body: None)
        port = await server.start()
        async with _client(timeout=0.3) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.post(f"http://127.0.0.1:{port}/x", content=b"{}")
        assert len(server.requests) == 1  # the request was sent whole before the wait
        await server.stop()

    run_on(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_refused_connection_is_a_connect_error(loop: str) -> None:
    async def scenario() -> None:
        server = _Server(lambda head, body: _ok())
        port = await server.start()
        await server.stop()
        assert server.server is not None
        await server.server.wait_closed()
        async with _client() as client:
            with pytest.raises(httpx.ConnectError):
                await client.post(f"http://127.0.0.1:{port}/x", content=b"{}")

    run_on(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_server_closing_mid_answer_is_a_protocol_error(loop: str) -> None:
    async def scenario() -> None:
        truncated = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"
        server = _Server(lambda head, body: truncated, close_after_answer=True)
        port = await server.start()
        async with _client() as client:
            with pytest.raises(httpx.RemoteProtocolError):  # h11: the peer closed before the body ended
                await client.post(f"http://127.0.0.1:{port}/x", content=b"{}")
        await server.stop()

    run_on(loop, scenario)


@contextmanager
def _certificate(tmp_path: Path) -> Iterator[tuple[ssl.SSLContext, ssl.SSLContext]]:
    """A self-signed certificate for 127.0.0.1 and localhost: (server context, client context trusting it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dac-test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    yield server, client


@pytest.mark.parametrize("loop", LOOPS)
def test_tls_with_a_verified_certificate(loop: str, tmp_path: Path) -> None:
    with _certificate(tmp_path) as (server_context, client_context):

        async def scenario() -> None:
            server = _Server(lambda head, body: _ok(body))
            port = await server.start(server_context)
            async with _client(client_context) as client:
                for body in (b'{"tls": 1}', b"x" * (3 * FLUSH_SIZE)):
                    response = await client.post(f"https://localhost:{port}/fhir/$process-message", content=body)
                    assert response.status_code == 200 and response.content == body
            # An unknown certificate is refused, and said so as a connection error.
            async with _client(ssl.create_default_context()) as client:
                with pytest.raises(httpx.ConnectError):
                    await client.post(f"https://localhost:{port}/x", content=b"{}")
            await server.stop()

        run_on(loop, scenario)


class _RecordingTransport:
    """Stands for asyncio's transport: what was written, in how many writes."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def close(self) -> None:
        pass


async def test_a_request_head_and_body_leave_in_one_write_at_the_first_read() -> None:
    connection = _Connection(asyncio.get_running_loop())
    recording = _RecordingTransport()
    connection.connection_made(recording)  # type: ignore[arg-type]
    stream = AsyncioStream(connection)
    await stream.write(b"POST /x HTTP/1.1\r\ncontent-length: 2\r\n\r\n")
    await stream.write(b"{}")
    assert recording.writes == []  # held until the answer is awaited
    connection.data_received(b"HTTP/1.1 200 OK\r\n")
    assert await stream.read(65536) == b"HTTP/1.1 200 OK\r\n"
    assert recording.writes == [b"POST /x HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}"]
    # A body larger than FLUSH_SIZE is not held whole: it goes as it is written.
    await stream.write(b"a" * FLUSH_SIZE)
    assert recording.writes[1:] == [b"a" * FLUSH_SIZE]
    assert stream.get_extra_info("is_readable") is False
    connection.eof_received()
    assert stream.get_extra_info("is_readable") is True  # an idle connection the peer closed
    assert await stream.read(10) == b""


def test_the_backend_is_what_the_delivery_client_uses() -> None:
    """If httpx changes how its transport holds its pool, this fails (rather than silently going back to anyio)."""
    limits = httpx.Limits(max_connections=2)
    transport = asyncio_transport(limits, ssl.create_default_context())
    assert isinstance(transport._pool._network_backend, AsyncioBackend)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_reset_mid_answer_is_a_read_error(loop: str) -> None:
    async def scenario() -> None:
        async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(2)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{")
            await writer.drain()
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
            writer.transport.abort()

        server = await asyncio.start_server(reset, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with _client() as client:
            with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
                await client.post(f"http://127.0.0.1:{port}/x", content=b"{}")
        server.close()

    run_on(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_hosts_addresses_are_raced_when_the_first_does_not_answer(loop: str) -> None:
    """A host with two addresses, the first a black hole (its accept queue is full: SYNs go unanswered): the
    second is tried CONNECT_RACE_DELAY later, beside it, and answers — not after the whole connect timeout."""

    async def scenario() -> None:
        server = _Server(lambda head, body: _ok())
        port = await server.start()
        hole = socket.socket()
        hole.bind(("127.0.0.2", port))
        hole.listen(0)
        fillers = []
        for _ in range(8):  # fill the accept queue
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.2", port))
            fillers.append(filler)
        await asyncio.sleep(0.2)

        async def resolve(host: str, port_: int, **_: Any) -> list[tuple[Any, ...]]:
            assert host == "dac.test"
            return [
                (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.2", port_)),
                (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", port_)),
            ]

        started = asyncio.get_running_loop().time()
        timeout = httpx.Timeout(10.0, connect=5.0)
        async with _client(timeout=timeout, backend=AsyncioBackend(resolver=resolve)) as client:
            response = await client.post(f"http://dac.test:{port}/x", content=b"{}")
        assert response.status_code == 200
        assert asyncio.get_running_loop().time() - started < CONNECT_RACE_DELAY + 2.0  # not the 5 s connect timeout
        assert server.connections == 1
        for filler in fillers:
            filler.close()
        hole.close()
        await server.stop()

    run_on(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_tls_to_a_peer_that_already_closed_fails_at_once(loop: str, tmp_path: Path) -> None:
    """The server accepts, then closes before the handshake (a busy loop, a load balancer): a connection error
    now, not a handshake waiting out the connect timeout."""

    async def scenario() -> None:
        async def close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        server = await asyncio.start_server(close, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5.0)
        await asyncio.sleep(0.2)  # the close arrives before the handshake starts
        started = asyncio.get_running_loop().time()
        with pytest.raises(httpcore.ConnectError):
            await stream.start_tls(ssl.create_default_context(), "localhost", timeout=5.0)
        assert asyncio.get_running_loop().time() - started < 1.0
        server.close()

    run_on(loop, scenario)


async def test_a_wait_has_one_deadline_however_often_it_is_woken() -> None:
    """Data arriving while a write waits for room does not restart its timeout."""
    connection = _Connection(asyncio.get_running_loop())
    recording = _RecordingTransport()
    connection.connection_made(recording)  # type: ignore[arg-type]
    connection.pause_writing()
    stream = AsyncioStream(connection)

    async def chatter() -> None:
        for _ in range(20):
            await asyncio.sleep(0.05)
            connection.data_received(b"x")

    chatting = asyncio.create_task(chatter())
    started = asyncio.get_running_loop().time()
    with pytest.raises(httpcore.WriteTimeout):
        await stream.write(b"a" * FLUSH_SIZE, timeout=0.3)
    assert asyncio.get_running_loop().time() - started < 0.6
    chatting.cancel()


async def test_a_kept_alive_connection_closed_before_the_request_left_is_given_up_for_another() -> None:
    """The peer's close crossed our look at the idle connection: none of the next request went out, so httpcore's
    pool is told the connection is not available and sends it on another (ConnectionNotAvailable)."""
    for closed_before in ("write", "read"):
        connection = _Connection(asyncio.get_running_loop())
        recording = _RecordingTransport()
        connection.connection_made(recording)  # type: ignore[arg-type]
        stream = AsyncioStream(connection)
        await stream.write(b"POST /1 HTTP/1.1\r\n\r\n")
        connection.data_received(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        assert await stream.read(65536)
        if closed_before == "write":
            connection.eof_received()
            with pytest.raises(httpcore.ConnectionNotAvailable):
                await stream.write(b"POST /2 HTTP/1.1\r\n\r\n")
        else:
            await stream.write(b"POST /2 HTTP/1.1\r\n\r\n")
            connection.eof_received()
            with pytest.raises(httpcore.ConnectionNotAvailable):
                await stream.read(65536)
        assert recording.writes == [b"POST /1 HTTP/1.1\r\n\r\n"]  # nothing of the second request was sent


async def test_a_new_connection_closed_at_once_is_an_error_not_a_retry() -> None:
    """A peer that closes every connection before the first request must not make the pool try again forever."""
    connection = _Connection(asyncio.get_running_loop())
    recording = _RecordingTransport()
    connection.connection_made(recording)  # type: ignore[arg-type]
    stream = AsyncioStream(connection)
    connection.eof_received()
    await stream.write(b"POST /1 HTTP/1.1\r\n\r\n")
    assert await stream.read(65536) == b""  # h11 then says the server disconnected: an error, retried later
