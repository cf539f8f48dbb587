"""PostgreSQL settings and pool behaviour the gateway relies on (PostgreSQL only)."""

from __future__ import annotations

import asyncpg
import pytest
import sqlalchemy as sa

import gateway.store.database
from gateway.store import Database
from gateway.store.unit_of_work import connection_lost
from tests.support.databases import USES_POSTGRESQL

pytestmark = pytest.mark.skipif(not USES_POSTGRESQL, reason="PostgreSQL's plan cache and connection pool")


async def test_statements_are_planned_with_their_values(database: Database) -> None:
    """asyncpg prepares every statement; a generic plan cannot see a search's selective value, and the opposition
    look-up at every intake walked every active Consent with one (35 referrals/s against 80 with custom plans)."""
    async with database.engine.connect() as connection:
        mode = (await connection.execute(sa.text("SHOW plan_cache_mode"))).scalar_one()
    assert mode == "force_custom_plan"


async def _backend_pid(database: Database) -> int:
    async with database.engine.connect() as connection:
        pid: int = (await connection.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one()
    return pid


async def _terminate(database_url: str, pid: int) -> None:
    """Close a server process, as a restart would, from a connection outside the pool."""
    other = await asyncpg.connect(database_url)
    try:
        assert await other.fetchval("SELECT pg_terminate_backend($1, 5000)", pid)
    finally:
        await other.close()


async def test_an_idle_connection_the_server_closed_is_replaced_unseen(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pooled connection that died while it waited (server restarted) is pinged at checkout, found dead and
    replaced: the request it was handed to never sees it."""
    database = Database(database_url)
    try:
        killed = await _backend_pid(database)
        await _terminate(database_url, killed)
        monkeypatch.setattr(gateway.store.database, "PING_AFTER_IDLE_SECONDS", 0.0)  # every connection is idle
        assert await _backend_pid(database) != killed
    finally:
        await database.dispose()


async def test_a_connection_used_a_moment_ago_is_not_pinged(database_url: str) -> None:
    """Under load a connection is back in use within milliseconds: no ping (three round trips on asyncpg) before
    each checkout. One that died meanwhile fails its statement, as during the outage, and is replaced."""
    database = Database(database_url)
    try:
        killed = await _backend_pid(database)
        await _terminate(database_url, killed)
        with pytest.raises(sa.exc.DBAPIError) as failure:
            await _backend_pid(database)
        assert connection_lost(failure.value)
        assert await _backend_pid(database) != killed
    finally:
        await database.dispose()
