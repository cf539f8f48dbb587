"""A body that does not arrive in time is a 408 OperationOutcome, whatever pace it trickles at."""

from __future__ import annotations

import asyncio

import orjson
from fastapi import FastAPI
from starlette.types import Message

from gateway import Settings, create_app
from gateway.routing.config import RoutingTable
from gateway.store import Database


async def _post_slowly(app: FastAPI, chunks: list[bytes], pause: float) -> tuple[int, dict[str, object]]:
    """POST /fhir as a client sending one chunk per ``pause`` seconds, straight through ASGI."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/fhir", "raw_path": b"/fhir", "root_path": "", "query_string": b"", "server": ("test", 80),
        "client": ("127.0.0.1", 1), "headers": [(b"content-type", b"application/fhir+json"), (b"host", b"test")],
    }  # fmt: skip
    pending = list(chunks)
    sent: list[Message] = []

    async def receive() -> Message:
        if not pending:
            await asyncio.sleep(3600)  # a client that stopped sending but keeps the connection
        await asyncio.sleep(pause)
        chunk = pending.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: Message) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), timeout=30)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, orjson.loads(body)


async def test_a_trickled_body_ends_in_408(database_url: str, database: Database, routing: RoutingTable) -> None:
    app = create_app(Settings(database_url=database_url, body_timeout=0.5, auth="off"), database, routing)
    status, outcome = await _post_slowly(app, [b"{"] * 1000, pause=0.01)
    assert status == 408
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["details"]["coding"][0]["code"] == "body-timeout"  # type: ignore[index]


async def test_a_stalled_body_ends_in_408(database_url: str, database: Database, routing: RoutingTable) -> None:
    app = create_app(Settings(database_url=database_url, body_timeout=0.5, auth="off"), database, routing)
    status, _ = await _post_slowly(app, [b'{"resourceType":'], pause=0)
    assert status == 408
