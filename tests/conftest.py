"""Fixtures shared by the whole suite: one migrated database per session (SQLite or PostgreSQL, from
GATEWAY_DATABASE_URL), emptied before each test, the ASGI app with an httpx client on it, and the independent FHIR
validators (one Node process per session, started when a test first needs it)."""

from __future__ import annotations

import json
import os
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
from tests.support.fhir_validators import SESSION, FhirValidators, summary_lines, unavailable_reason

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
    # Authentication off, as in development: the tests of authentication and visibility turn it on themselves.
    return Settings(database_url=database_url, max_body_bytes=200_000, auth="off")


@pytest.fixture
def app(settings: Settings, database: Database, routing: RoutingTable) -> FastAPI:
    return create_app(settings, database, routing)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test") as c:
        yield c


@pytest.fixture(scope="session")
def fhir_validators() -> Iterator[FhirValidators | None]:
    """The Node validator process, once per session; None (checks off) when Node or its packages are missing —
    a failure under CI, which installs them."""
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"independent FHIR validators unavailable under CI: {reason}")
        yield None
        return
    validators = FhirValidators.start()
    SESSION.append(validators)
    yield validators
    late = validators.collect()  # messages that arrived after the last test that collected
    validators.close()
    if late.failures:
        pytest.fail("emitted after the last test, invalid:\n" + "\n".join(late.failures), pytrace=False)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = summary_lines()
    if lines:
        terminalreporter.section("independent FHIR validators (npm fhir, @medplum/core)")
        for line in lines:
            terminalreporter.write_line(line)
