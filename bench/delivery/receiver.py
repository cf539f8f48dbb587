#!/usr/bin/env python3
"""A loopback DAC platform for the delivery benchmark, in a process of its own: a raw asyncio HTTP/1.1 server
(keep-alive) that answers every ``POST …/$process-message`` with 200 at once and notes, for each message, its
MessageHeader id, event, focus and arrival time. ``GET /received?since=N`` returns those notes from the N-th on
(JSON ``[[id, event, focus id, unix time], …]``), ``GET /cpu`` this process's CPU seconds.

No framework: the platform must cost the shared CPU as little as possible, so that the figure measured is the
gateway's, not the receiver's.

    python bench/delivery/receiver.py PORT  (not "platform.py": that name would shadow the standard library's module)
"""

from __future__ import annotations

import asyncio
import sys
import time

import orjson

_ACK = b'{"resourceType":"Bundle","type":"message","entry":[]}'
_RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: application/fhir+json\r\ncontent-length: %d\r\n\r\n%s" % (
    len(_ACK),
    _ACK,
)
received: list[tuple[str, str, str, float]] = []


def _note(body: bytes) -> None:
    header = orjson.loads(body)["entry"][0]["resource"]
    focus = str(header["focus"][0]["reference"]).rsplit("/", 1)[-1]
    received.append((header["id"], header["eventCoding"]["code"], focus, time.time()))


def _answer(path: bytes) -> bytes:
    if path.startswith(b"/received"):
        since = int(path.partition(b"since=")[2] or b"0")
        body = orjson.dumps(received[since:])
    elif path == b"/cpu":
        body = orjson.dumps(time.process_time())
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
                return  # the rest of the body is still on its way
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            method, path, _ = head.split(b"\r\n", 1)[0].split(b" ", 2)
            assert self.transport is not None
            if method == b"POST":
                _note(body)
                self.transport.write(_RESPONSE)
            else:
                self.transport.write(_answer(path))


async def serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(_Connection, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
