#!/usr/bin/env python3
"""A loopback subscriber for the notification benchmark, in a process of its own: a raw asyncio HTTP/1.1 server
(keep-alive) that answers every ``POST /s{n}`` (a Subscription's rest-hook) with 200 — or 503 while ``GET /down``
holds, until ``GET /up`` — and notes, for each event notification, its path, event number, focus id and arrival
time. ``GET /received?since=N`` returns those notes from the N-th on (JSON ``[[path, number, focus id, unix
time], …]``), ``GET /cpu`` this process's CPU seconds.

    python bench/notify/receiver.py PORT
"""

from __future__ import annotations

import asyncio
import sys
import time

import orjson

_OK = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
_DOWN = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
received: list[tuple[str, int, str, float]] = []
state = {"up": True}


def _note(path: bytes, body: bytes) -> None:
    first = orjson.loads(body)["entry"][0]["resource"]
    if first.get("resourceType") != "Parameters":
        return  # a referral message to the platform (the same process plays both)
    for parameter in first["parameter"]:
        if parameter["name"] == "notification-event":
            parts = {part["name"]: part for part in parameter["part"]}
            focus = str(parts["focus"]["valueReference"]["reference"]).rsplit("/", 1)[-1]
            number = int(parts["event-number"]["valueString"])
            received.append((path.decode(), number, focus, time.time()))


def _answer(path: bytes) -> bytes:
    if path.startswith(b"/received"):
        since = int(path.partition(b"since=")[2] or b"0")
        body = orjson.dumps(received[since:])
    elif path == b"/cpu":
        body = orjson.dumps(time.process_time())
    elif path in (b"/up", b"/down"):
        state["up"] = path == b"/up"
        body = b"true"
    else:
        return b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            method, path, _ = head.split(b"\r\n", 1)[0].split(b" ", 2)
            assert self.transport is not None
            if method == b"POST":
                if state["up"]:
                    _note(path, body)
                self.transport.write(_OK if state["up"] else _DOWN)
            else:
                self.transport.write(_answer(path))


async def serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(_Connection, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
