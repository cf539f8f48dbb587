"""The delivery transport: an origin's concurrent requests spread over pools of at most ``pool_size``
connections, each slot given back when the answer has been read; a failing request gives its slot back too."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import respx

from gateway.routing.delivery import http_client
from gateway.routing.transport import ShardedTransport

PARIS, LYON = "https://dac75.example.org/fhir/$process-message", "https://dac69.example.org/fhir/$process-message"


def _busy(transport: ShardedTransport) -> dict[str, list[int]]:
    return {host: [shard.busy for shard in shards] for (_, host, _), shards in transport._shards.items()}


@respx.mock
async def test_concurrent_requests_spread_over_small_pools_per_origin() -> None:
    release, all_arrived = asyncio.Event(), asyncio.Event()
    arrived = 0

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal arrived
        arrived += 1
        if arrived == 11:
            all_arrived.set()
        await release.wait()
        return httpx.Response(200, content=b"{}")

    respx.post(PARIS).mock(side_effect=slow)
    respx.post(LYON).mock(side_effect=slow)
    transport = ShardedTransport(pool_size=4)
    async with httpx.AsyncClient(transport=transport) as client:
        sending = [asyncio.create_task(client.post(PARIS, content=b"{}")) for _ in range(10)]
        sending.append(asyncio.create_task(client.post(LYON, content=b"{}")))
        await asyncio.wait_for(all_arrived.wait(), 10)
        assert _busy(transport) == {"dac75.example.org": [4, 4, 2], "dac69.example.org": [1]}
        release.set()
        answers = await asyncio.gather(*sending)
        assert [answer.status_code for answer in answers] == [200] * 11
        assert _busy(transport) == {"dac75.example.org": [0, 0, 0], "dac69.example.org": [0]}
        # Later requests reuse the pools: none is added while the existing ones have room.
        await asyncio.gather(*(client.post(PARIS, content=b"{}") for _ in range(8)))
        assert _busy(transport) == {"dac75.example.org": [0, 0, 0], "dac69.example.org": [0]}
    assert transport._shards == {}  # closed with the client


@respx.mock
async def test_the_pools_of_the_least_recently_used_idle_origins_are_forgotten_past_a_bound() -> None:
    """Issue 21 (memory): Subscriptions' endpoints are the clients' URLs; each origin delivered to kept its pools for
    the process's life. Past ``max_origins``, the least recently used origin with nothing under way goes."""
    arrived, release = asyncio.Event(), asyncio.Event()

    async def held(request: httpx.Request) -> httpx.Response:
        arrived.set()
        await release.wait()
        return httpx.Response(200, content=b"{}")

    respx.post(url__regex=r"https://(a|b|c|d)\.example\.org/.*").mock(return_value=httpx.Response(200, content=b"{}"))
    respx.post("https://slow.example.org/notify").mock(side_effect=held)
    transport = ShardedTransport(pool_size=2, max_origins=3)
    async with httpx.AsyncClient(transport=transport) as client:
        pending = asyncio.create_task(client.post("https://slow.example.org/notify", content=b"{}"))
        await asyncio.wait_for(arrived.wait(), 10)
        for host in ("a", "b", "a", "c", "d"):
            assert (await client.post(f"https://{host}.example.org/notify", content=b"{}")).status_code == 200
        # b went when c came (a was used since), a when d came; the slow origin, still sending, stays.
        assert _busy(transport) == {"slow.example.org": [1], "c.example.org": [0], "d.example.org": [0]}
        release.set()
        assert (await pending).status_code == 200
        for host in ("a", "b", "c", "d", "a"):
            await client.post(f"https://{host}.example.org/notify", content=b"{}")
        assert list(_busy(transport)) == ["c.example.org", "d.example.org", "a.example.org"]


@respx.mock
async def test_a_failed_request_gives_its_slot_back() -> None:
    respx.post(PARIS).mock(side_effect=httpx.ConnectError("refused"))
    transport = ShardedTransport(pool_size=2)
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(3):
            with pytest.raises(httpx.ConnectError):
                await client.post(PARIS, content=b"{}")
        assert _busy(transport) == {"dac75.example.org": [0]}


async def test_the_delivery_client_still_goes_through_the_environments_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An egress proxy (HTTP_PROXY) is honoured: the request reaches it in absolute form."""
    seen: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")),
            0,
        )
        await reader.readexactly(length)
        seen.append(head.split(b"\r\n")[0])
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with server, http_client(5.0) as client:
        answer = await client.post("http://platform.invalid/fhir/$process-message", content=b"{}")
    assert answer.status_code == 200
    assert seen == [b"POST http://platform.invalid/fhir/$process-message HTTP/1.1"]
