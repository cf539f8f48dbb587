"""The MLLP listener on a real TCP socket, in this process, with the gateway's own HL7 v2 intake behind it: ACKs
framed and in order, every bad frame refused with an AR and the connection closed, the listener still serving
the next client; peers outside the allow-list closed at once. Framing under hypothesis: however a frame is split
across TCP writes, the same message arrives."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.inbound.mllp import END, START, frame, start_listener
from gateway.inbound.service import IntakeContext, take_in_hl7v2
from gateway.routing.config import RoutingTable
from gateway.store import Database
from tests.support.fuzz import fuzz_settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "hl7v2"
LOOPBACK = [ipaddress.ip_network("127.0.0.0/8")]


@pytest.fixture
async def listener(database: Database, routing: RoutingTable) -> AsyncIterator[int]:
    context = IntakeContext(database, routing, "http://gateway.test/fhir")

    async def handle(payload: bytes) -> bytes:
        return (await take_in_hl7v2(payload, context)).ack

    server = await start_listener(handle, "127.0.0.1", 0, LOOPBACK, max_bytes=64_000, idle_timeout=1.0)
    yield server.sockets[0].getsockname()[1]
    server.close()


async def exchange(port: int, data: bytes, frames: int = 1) -> list[bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        answers = []
        for _ in range(frames):
            answer = await asyncio.wait_for(reader.readuntil(END), 10)
            assert answer.startswith(START)
            answers.append(answer[1:-2])
        return answers
    finally:
        writer.close()


def msa(ack: bytes) -> list[str]:
    return next(line for line in ack.decode("latin-1").split("\r") if line.startswith("MSA")).split("|")


async def test_two_messages_on_one_connection_two_acks_in_order(listener: int, client: httpx.AsyncClient) -> None:
    first = (EXAMPLES / "ref-i12-discharge.hl7").read_bytes()
    second = (EXAMPLES / "invalid-ins-key.hl7").read_bytes()
    answers = await exchange(listener, frame(first) + frame(second), 2)
    assert msa(answers[0])[1:3] == ["AA", "CH3R-MSG-000451"]
    assert msa(answers[1])[1:3] == ["AE", "CH3R-MSG-000452"]
    found = (await client.get("/fhir/ServiceRequest", params={"_summary": "count"})).json()
    assert found["total"] == 1


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\x00\x01garbage\xff" * 10, "hl7v2-unreadable"),  # outside a frame
        (START + b"MSH|^~\\&|" + b"x" * 70_000 + END, "body-too-large"),
        (START + b"\x00\xff\xfe binary" + END, "hl7v2-unreadable"),
        (START + b"MSH|^~\\&|A" + START + b"MSH" + END, "hl7v2-unreadable"),  # a frame inside a frame
        (START + b"MSH|^~\\&|A|B", "hl7v2-unreadable"),  # never finished: the idle timeout
    ],
)
async def test_bad_frames_get_an_ar_and_the_listener_serves_the_next(
    listener: int, data: bytes, code: str, client: httpx.AsyncClient
) -> None:
    (answer,) = await exchange(listener, data)
    assert msa(answer)[1] == "AR"
    assert f"|{code}^^dac-issue|" in answer.decode("latin-1")
    (after,) = await exchange(listener, frame((EXAMPLES / "ref-i12-discharge.hl7").read_bytes()))
    assert msa(after)[1] == "AA"


async def test_a_peer_closing_mid_frame_stores_nothing(listener: int, client: httpx.AsyncClient) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", listener)
    writer.write(START + (EXAMPLES / "ref-i12-discharge.hl7").read_bytes())  # no 0x1C 0x0D
    await writer.drain()
    writer.close()
    (after,) = await exchange(listener, frame((EXAMPLES / "invalid-ins-key.hl7").read_bytes()))
    assert msa(after)[1] == "AE"
    found = (await client.get("/fhir/ServiceRequest", params={"_summary": "count"})).json()
    assert found["total"] == 0


async def test_a_peer_not_allowed_is_closed_at_once(database: Database, routing: RoutingTable) -> None:
    async def never(_: bytes) -> bytes:
        raise AssertionError("a refused peer's message was read")

    server = await start_listener(never, "127.0.0.1", 0, [ipaddress.ip_network("10.0.0.0/8")])
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        writer.write(frame(b"MSH|^~\\&|A"))
        with contextlib.suppress(ConnectionResetError):  # closed with the frame unread: as good as an end
            assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
    finally:
        server.close()


@pytest.mark.fuzz
@fuzz_settings(40)
@given(st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=8))
async def test_a_frame_split_anywhere_is_one_message(cuts: list[int]) -> None:
    received: list[bytes] = []

    async def handle(payload: bytes) -> bytes:
        received.append(payload)
        return b"MSH|^~\\&\rMSA|AA|1\r"

    server = await start_listener(handle, "127.0.0.1", 0, LOOPBACK)
    message = (EXAMPLES / "ref-i12-discharge.hl7").read_bytes()
    data = frame(message) * 2
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        position = 0
        for cut in [*cuts, len(data)]:
            writer.write(data[position : position + cut])
            await writer.drain()
            position += cut
        for _ in range(2):
            await asyncio.wait_for(reader.readuntil(END), 5)
        writer.close()
    finally:
        server.close()
    assert received == [message, message]


async def closed_by_server(reader: asyncio.StreamReader, deadline: float = 5.0) -> bool:
    """Whether the server ends the connection within ``deadline`` seconds, whatever it writes first."""
    try:
        async with asyncio.timeout(deadline):
            while await reader.read(4096):
                pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


async def test_a_peer_that_starts_no_frame_is_closed(database: Database, routing: RoutingTable) -> None:
    """Slowloris: a peer connected and silent, or dribbling blank bytes, no longer holds its connection forever."""

    async def never(_: bytes) -> bytes:
        raise AssertionError("no frame was sent")

    server = await start_listener(never, "127.0.0.1", 0, LOOPBACK, idle_timeout=1.0, wait_timeout=0.5)
    port = server.sockets[0].getsockname()[1]
    try:
        silent_reader, silent = await asyncio.open_connection("127.0.0.1", port)
        dribbling_reader, dribbling = await asyncio.open_connection("127.0.0.1", port)

        async def dribble() -> None:
            with contextlib.suppress(ConnectionError):
                for _ in range(50):
                    dribbling.write(b" ")
                    await dribbling.drain()
                    await asyncio.sleep(0.1)

        dribbler = asyncio.create_task(dribble())
        assert await closed_by_server(silent_reader)
        assert await closed_by_server(dribbling_reader)
        dribbler.cancel()
        silent.close()
        dribbling.close()
    finally:
        server.close()


async def test_connections_beyond_the_cap_are_closed_at_once(database: Database, routing: RoutingTable) -> None:
    context = IntakeContext(database, routing, "http://gateway.test/fhir")

    async def handle(payload: bytes) -> bytes:
        return (await take_in_hl7v2(payload, context)).ack

    server = await start_listener(handle, "127.0.0.1", 0, LOOPBACK, max_connections=2)
    port = server.sockets[0].getsockname()[1]
    try:
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        extra_reader, extra = await asyncio.open_connection("127.0.0.1", port)
        assert await closed_by_server(extra_reader)
        extra.close()
        # The connections held are served; once one is gone, a new one is too.
        reader, writer = held[0]
        writer.write(frame((EXAMPLES / "invalid-ins-key.hl7").read_bytes()))
        answer = await asyncio.wait_for(reader.readuntil(END), 10)
        assert msa(answer[1:-2])[1] == "AE"
        for _, writer in held:
            writer.close()
            await writer.wait_closed()
        deadline = asyncio.get_running_loop().time() + 5
        while True:  # the server sees the two ends a moment later
            try:
                (again,) = await exchange(port, frame((EXAMPLES / "invalid-ins-key.hl7").read_bytes()))
                break
            except (asyncio.IncompleteReadError, ConnectionError):
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.05)
        assert msa(again)[1] == "AE"
    finally:
        server.close()
