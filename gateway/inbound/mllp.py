"""The MLLP listener: HL7 v2 over TCP (``0x0B`` message ``0x1C 0x0D``), on the API's event loop.

Each connection is read frame by frame; each frame's message goes to ``take_in_hl7v2`` and its ACK is written back
framed, in order. What is not a message still gets an answer when one can be given, and never stops the listener:

- bytes outside a frame (binary garbage, a sender that does not frame): an AR, then the connection is closed;
- a frame larger than ``max_bytes``: an AR (``body-too-large``), then the connection is closed (the rest of the
  stream cannot be trusted to resynchronise);
- a frame not finished within ``idle_timeout`` seconds: an AR, closed; a peer that closes mid-frame: nothing was
  stored, nothing to answer;
- no frame started within ``wait_timeout`` seconds (a silent peer, or one dribbling blank bytes): closed, nothing
  to answer — a sender that keeps its connection open reconnects, as MLLP senders do;
- a peer whose address is not allowed (``allowed``), or one more than ``max_connections`` open at once: closed at
  once, before a byte is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import Awaitable, Callable, Sequence

import structlog

from gateway.errors import InvalidRequest, Issue, IssueCode
from gateway.inbound.er7 import MAX_MESSAGE_BYTES, AckError, ack

log = structlog.get_logger("gateway.mllp")

START = b"\x0b"
END = b"\x1c\x0d"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Handler = Callable[[bytes], Awaitable[bytes]]


def frame(payload: bytes) -> bytes:
    return START + payload + END


def _refusal(code: IssueCode, message: str) -> bytes:
    return frame(
        ack(
            None,
            "AR",
            [AckError("MSH^1", "102" if code is not IssueCode.BODY_TOO_LARGE else "207", str(code), message)],
        )
    )


def allowed_peer(address: str, allowed: Sequence[Network]) -> bool:
    try:
        peer = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
        peer = peer.ipv4_mapped
    return any(peer in network for network in allowed)


async def _read_frame(
    reader: asyncio.StreamReader, max_bytes: int, idle_timeout: float, wait_timeout: float
) -> bytes | None:
    """The next frame's payload; None at a clean end of stream, or when none starts within ``wait_timeout``.
    Raises InvalidRequest for what is not a frame."""
    try:
        async with asyncio.timeout(wait_timeout):
            first = await reader.read(1)
            while first in (b"\r", b"\n", b" ", b"\t"):
                first = await reader.read(1)
    except TimeoutError:
        return None
    if not first:
        return None
    if first != START:
        raise InvalidRequest(Issue(IssueCode.HL7V2_UNREADABLE, "bytes outside an MLLP frame (0x0B … 0x1C 0x0D)"))
    try:
        async with asyncio.timeout(idle_timeout):
            payload = await reader.readuntil(END)
    except asyncio.LimitOverrunError as exc:
        raise InvalidRequest(
            Issue(IssueCode.BODY_TOO_LARGE, f"the frame is larger than {max_bytes} bytes", None, "too-long")
        ) from exc
    except asyncio.IncompleteReadError:
        return None  # the peer went away mid-frame: nothing stored, nobody to answer
    except TimeoutError as exc:
        raise InvalidRequest(
            Issue(IssueCode.HL7V2_UNREADABLE, f"the frame was not finished within {idle_timeout:g} s", None, "timeout")
        ) from exc
    body = payload[: -len(END)]
    if START in body:
        raise InvalidRequest(Issue(IssueCode.HL7V2_UNREADABLE, "a frame starts inside another (0x0B before 0x1C 0x0D)"))
    return body


async def start_listener(
    handler: Handler,
    host: str,
    port: int,
    allowed: Sequence[Network],
    *,
    max_bytes: int = MAX_MESSAGE_BYTES,
    idle_timeout: float = 30.0,
    wait_timeout: float = 600.0,
    max_connections: int = 64,
    reuse_port: bool = False,
) -> asyncio.Server:
    """Listen on ``host:port``; ``handler`` takes a message's bytes and returns its ACK's."""
    open_connections = 0

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal open_connections
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        open_connections += 1
        try:
            if not allowed_peer(address, allowed):
                log.warning("mllp_peer_refused", peer=address)
                return
            if open_connections > max_connections:
                log.warning("mllp_too_many_connections", peer=address, limit=max_connections)
                return
            while True:
                try:
                    payload = await _read_frame(reader, max_bytes, idle_timeout, wait_timeout)
                except InvalidRequest as exc:
                    issue = exc.issues[0]
                    log.info("mllp_frame_refused", code=str(issue.code))
                    writer.write(_refusal(issue.code, issue.diagnostics))
                    await writer.drain()
                    return
                if payload is None:
                    return
                writer.write(frame(await handler(payload)))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except Exception:  # one connection's failure never stops the listener
            log.exception("mllp_connection_failed")
        finally:
            open_connections -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    return await asyncio.start_server(connection, host, port, limit=max_bytes + 16, reuse_port=reuse_port)
