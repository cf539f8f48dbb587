"""Fixtures shared by the whole suite: one migrated database per session (SQLite or PostgreSQL, from
GATEWAY_DATABASE_URL), emptied before each test, and the ASGI app with an httpx client on it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from gateway import Settings, create_app
from gateway.config import EXAMPLE_ROUTING
from gateway.routing.config import RoutingTable, load_routing
from gateway.store import Database
from gateway.store.migrate import upgrade
from gateway.store.tables import ALL_TABLES
from tests.support.databases import drop_scratch_database, scratch_database_url

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES / name).read_text())
    return data


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = scratch_database_url(tmp_path_factory.mktemp("db"))
    upgrade(url)
    yield url
    drop_scratch_database(url)


@pytest.fixture(scope="session")
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url)
    yield db
    await db.dispose()


@pytest.fixture(autouse=True)
async def _empty_tables(request: pytest.FixtureRequest) -> None:
    if "database" not in request.fixturenames:
        return
    db: Database = request.getfixturevalue("database")
    async with db.engine.begin() as connection:
        for table in ALL_TABLES:
            await connection.execute(sa.delete(table))


@pytest.fixture(scope="session")
def routing() -> RoutingTable:
    return load_routing(EXAMPLE_ROUTING)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, max_body_bytes=200_000)


@pytest.fixture
def app(settings: Settings, database: Database, routing: RoutingTable) -> FastAPI:
    return create_app(settings, database, routing)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test") as c:
        yield c
