"""The floor of DESIGN §9: a bare FastAPI endpoint that parses a referral with fhir.resources, dumps it back,
and inserts it as one JSON row in SQLite. What any gateway must at least do; the gateway is measured against it.

Run: python -m uvicorn bench.floor_app:app --port 8090   (FLOOR_DB: the SQLite file, default ./floor.db)
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiosqlite
from fastapi import FastAPI, Request, Response
from fhir.resources.R4B.bundle import Bundle

DATABASE = os.environ.get("FLOOR_DB", "floor.db")
connection: aiosqlite.Connection | None = None


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    global connection
    connection = await aiosqlite.connect(DATABASE, isolation_level=None)
    await connection.execute("PRAGMA journal_mode=WAL")
    await connection.execute("PRAGMA synchronous=NORMAL")
    await connection.execute("CREATE TABLE IF NOT EXISTS referral (id INTEGER PRIMARY KEY, content TEXT NOT NULL)")
    Bundle.model_validate({"resourceType": "Bundle", "type": "transaction"})  # warm up, as the gateway does
    yield
    await connection.close()


app = FastAPI(lifespan=lifespan)


@app.post("/fhir")
async def post_referral(request: Request) -> Response:
    bundle = Bundle.model_validate_json(await request.body())
    content = bundle.model_dump_json()
    assert connection is not None
    try:
        await connection.execute("INSERT INTO referral (content) VALUES (?)", (content,))
    except sqlite3.Error:
        return Response(status_code=500)
    return Response('{"resourceType":"OperationOutcome","issue":[]}', 201, media_type="application/fhir+json")
