"""A loopback DAC platform for the benchmark: answers every delivery (``POST …/$process-message``) with 200 and
a minimal response message, and counts them (``GET /count``). A bare ASGI app, so that it costs the shared CPU as
little as possible while the gateway under test delivers the referrals it takes in."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_ACK = b'{"resourceType":"Bundle","type":"message","entry":[]}'
_received = 0


async def _respond(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/fhir+json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    global _received
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = bool(message.get("more_body", False))
    if scope["method"] == "GET" and scope["path"] == "/count":
        await _respond(send, 200, b'{"count":%d}' % _received)
        return
    if scope["method"] == "POST":
        _received += 1
        await _respond(send, 200, _ACK)
        return
    await _respond(send, 405, b"{}")
