"""``backport-timeout`` (DESIGN §12): the time limit of each notification's POST, checked when subscribing; a receiver
slower than it is a transient failure, retried with the outbox's backoff. A real loopback receiver: timeouts are the
HTTP client's, which a mocked transport never reaches."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.routing.config import RoutingTable
from gateway.store import Database, UnitOfWork
from tests.notify.test_subscriptions import BACKPORT, FHIR_JSON, create, deliver, subscription

TIMEOUT = f"{BACKPORT}/backport-timeout"


class SlowReceiver:
    """An HTTP/1.1 endpoint on 127.0.0.1 that answers 200 after the next of ``delays`` (seconds; then at once)."""

    def __init__(self, delays: list[float]) -> None:
        self.delays = delays
        self.received = 0
        self.url = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
            await reader.readexactly(int(length.group(1)) if length else 0)
            self.received += 1
            delay = self.delays.pop(0) if self.delays else 0
            if delay:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(reader.read(1), delay)  # b"" at once when the gateway gives up
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the gateway gave up waiting
        finally:
            writer.close()


@pytest.fixture
async def slow() -> AsyncIterator[SlowReceiver]:
    receiver = SlowReceiver([4.0])
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    receiver.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
    async with server:
        yield receiver
        server.close()


def _timeout(value: Any) -> dict[str, Any]:
    return {"url": TIMEOUT, "valueUnsignedInt": value}


async def test_a_receiver_slower_than_the_timeout_is_retried(
    client: httpx.AsyncClient, database: Database, routing: RoutingTable, slow: SlowReceiver
) -> None:
    created = await create(client, subscription(endpoint=slow.url, extension=[_timeout(1)]))
    started = time.monotonic()
    await deliver(database, routing)  # the handshake: the receiver would answer after 4 s
    waited = time.monotonic() - started
    async with UnitOfWork(database, write=False) as uow:
        (handshake,) = await uow.outbox.entries()
    assert handshake.status == "pending" and handshake.attempts == 1  # a transient failure: retried
    assert "timeout" in (handshake.last_error or "")
    assert waited < 3.0  # gave up after the Subscription's second (~1 s), not the receiver's 4 s (client's: 5 s)
    await deliver(database, routing)  # answered at once now
    assert slow.received == 2
    read = (await client.get(f"/fhir/Subscription/{created['id']}")).json()
    assert read["status"] == "active"


@pytest.mark.parametrize("value", [0, -3, "10", True, 2.5, 2**31, 2**64 - 1])
async def test_a_timeout_that_is_not_whole_seconds_is_refused_naming_it(client: httpx.AsyncClient, value: Any) -> None:
    answer = await client.post("/fhir/Subscription", json=subscription(extension=[_timeout(value)]), headers=FHIR_JSON)
    assert answer.status_code == 422, answer.text
    (issue,) = answer.json()["issue"]
    assert issue["details"]["coding"][0]["code"] == "subscription-invalid"
    assert issue["expression"] == [f"Subscription.channel.extension('{TIMEOUT}')"]


@pytest.mark.parametrize(
    ("name", "kind", "value"),
    [
        ("backport-heartbeat-period", "valueUnsignedInt", 2**31),  # a 500 on PostgreSQL (its integer column)
        ("backport-heartbeat-period", "valueUnsignedInt", 2**64 - 1),
        ("backport-max-count", "valuePositiveInt", 2**31),
        ("backport-max-count", "valuePositiveInt", 0),
        ("backport-max-count", "valuePositiveInt", True),
    ],
)
async def test_a_count_or_period_out_of_its_type_s_range_is_refused_naming_it(
    client: httpx.AsyncClient, name: str, kind: str, value: Any
) -> None:
    """unsignedInt and positiveInt are 32-bit (FHIR): a larger JSON number is no more one than in XML."""
    extension = {"url": f"{BACKPORT}/{name}", kind: value}
    answer = await client.post("/fhir/Subscription", json=subscription(extension=[extension]), headers=FHIR_JSON)
    assert answer.status_code == 422, answer.text
    (issue,) = answer.json()["issue"]
    assert issue["details"]["coding"][0]["code"] == "subscription-invalid"
    assert issue["expression"] == [f"Subscription.channel.extension('{BACKPORT}/{name}')"]


@pytest.mark.parametrize("value", ["\u00b2", "-1", "1.5"])
async def test_events_numbers_that_are_not_ascii_digits_are_refused_naming_them(
    client: httpx.AsyncClient, value: str
) -> None:
    """'²' is a digit to str.isdigit but not to int(): it was a 500."""
    created = await create(client, subscription())
    for name in ("eventsSinceNumber", "eventsUntilNumber"):
        answer = await client.get(f"/fhir/Subscription/{created['id']}/$events", params={name: value})
        assert answer.status_code == 400, answer.text
        assert answer.json()["issue"][0]["expression"] == [name]
