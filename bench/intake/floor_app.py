"""The floor (DESIGN §9): the least a FHIR referral endpoint can do — read the body, parse the Bundle with
fhir.resources (R4B), dump it back, insert it as one JSON row in SQLite (WAL) — served by one uvicorn process.

The gateway's intake is measured against this, side by side, by ``bench/intake/bench_intake.py``. Alone::

    FLOOR_DATABASE=/tmp/floor.db .venv/bin/python -m uvicorn bench.intake.floor_app:app --port 8090
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiosqlite
from fastapi import FastAPI, Request, Response
from fhir.resources.R4B.bundle import Bundle

DATABASE = os.environ.get("FLOOR_DATABASE", "floor.db")


class Store:
    """One aiosqlite connection in autocommit mode: each INSERT is its own transaction, as in the gateway where
    each referral is committed before it is answered. WAL and synchronous=NORMAL, the gateway's settings."""

    connection: aiosqlite.Connection | None = None

    async def open(self, path: str) -> None:
        self.connection = await aiosqlite.connect(path, isolation_level=None)
        for pragma in ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL"):
            await self.connection.execute(pragma)
        await self.connection.execute(
            "CREATE TABLE IF NOT EXISTS referral (id INTEGER PRIMARY KEY, content TEXT NOT NULL)"
        )

    async def insert(self, content: str) -> int:
        assert self.connection is not None
        cursor = await self.connection.execute("INSERT INTO referral (content) VALUES (?)", (content,))
        return cursor.lastrowid or 0

    async def count(self) -> int:
        assert self.connection is not None
        async with self.connection.execute("SELECT count(*) FROM referral") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()


store = Store()


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    await store.open(DATABASE)
    try:
        yield
    finally:
        await store.close()


app = FastAPI(lifespan=lifespan)


@app.post("/fhir")
async def post_referral(request: Request) -> Response:
    bundle = Bundle.model_validate_json(await request.body())
    row_id = await store.insert(bundle.model_dump_json())
    return Response(content=b'{"id":%d}' % row_id, status_code=201, media_type="application/json")


@app.get("/count")
async def count() -> dict[str, int]:
    """How many referrals are stored (the benchmark checks every 2xx left a row)."""
    return {"count": await store.count()}
