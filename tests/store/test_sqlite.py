"""The embedded SQLite backend: statements run on the event loop's thread, and searches go through the search
index instead of walking every resource of a type. (SQLite only: PostgreSQL plans on its own statistics.)"""

from __future__ import annotations

import sqlite3
import threading

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from gateway.fhir.search import parse_search
from gateway.intake.identity import INS_NIR, RPPS
from gateway.store import Database, UnitOfWork
from gateway.store.database import _InlineSQLiteConnection, _RunAtOnce
from gateway.store.repository import _conditions, _order, rows_in
from gateway.store.tables import resource_identities, resources
from tests.support.databases import USES_POSTGRESQL

pytestmark = pytest.mark.skipif(USES_POSTGRESQL, reason="SQLite's driver and query planner")


async def test_statements_run_without_a_worker_thread(database: Database) -> None:
    await database.engine.dispose()  # a fresh connection is opened below
    threads = threading.active_count()
    async with UnitOfWork(database) as uow:
        stored = uow.resources.add({"resourceType": "Patient", "gender": "female"})
        assert await uow.resources.exists("Patient", stored.id)
        await uow.commit()
    async with UnitOfWork(database, write=False) as uow:
        assert (await uow.resources.get("Patient", stored.id)) is not None
    assert threading.active_count() == threads


async def _plan(database: Database, statement: sa.Select[tuple[object, ...]]) -> list[str]:
    sql = str(statement.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    async with database.engine.connect() as connection:  # no ANALYZE statistics: the plan of a fresh database
        rows = (await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")).all()
    return [str(row[3]) for row in rows]


@pytest.mark.parametrize("descending", [False, True])
async def test_a_search_finds_matches_through_the_index(database: Database, descending: bool) -> None:
    """The opposition look-up at every intake (Consent by patient identifier and status) must not grow with the
    number of Consents stored: matches are fetched by primary key from the search index's rows."""
    params = [("patient:identifier", "urn:oid:1.2.250.1.213.1.4.8|123456789012345"), ("status", "active")]
    if descending:
        params.append(("_sort", "-_lastUpdated"))
    query = parse_search("Consent", params, default_count=100, max_count=100)
    page = await _plan(database, sa.select(resources).where(*_conditions(query)).order_by(*_order(query)).limit(10))
    count = await _plan(database, sa.select(sa.func.count()).select_from(resources).where(*_conditions(query)))
    for plan in (page, count):
        assert any("resources" in step and "(resource_type=? AND id=?)" in step for step in plan), plan
        assert any("ix_search_index_resource_type_param_value" in step for step in plan), plan
        assert not any("ix_resources_resource_type_last_updated_id" in step for step in plan), plan


async def test_a_plain_listing_pages_along_the_last_updated_index(database: Database) -> None:
    query = parse_search("ServiceRequest", [], default_count=20, max_count=100)
    plan = await _plan(database, sa.select(resources).where(*_conditions(query)).order_by(*_order(query)).limit(20))
    assert any("ix_resources_resource_type_last_updated_id" in step for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan


async def test_lookups_by_key_use_the_primary_keys(database: Database) -> None:
    """Intake looks up a referral's national identifiers and the resources holding them in one query each;
    a row-value IN list would make SQLite scan both tables whole, at every intake."""
    i, r = resource_identities.c, resources.c
    keys = [("Patient", INS_NIR, "1"), ("Patient", INS_NIR, "2"), ("Practitioner", RPPS, "3")]
    identities = await _plan(
        database, sa.select(i.resource_id).where(rows_in((i.resource_type, i.system, i.value), keys))
    )
    current = await _plan(
        database, sa.select(resources).where(rows_in((r.resource_type, r.id), [("Patient", "a"), ("Task", "b")]))
    )
    for plan in (identities, current):
        assert plan and not any(step.startswith("SCAN") for step in plan), plan


def test_the_aiosqlite_internals_the_inline_connection_relies_on_are_there() -> None:
    """gateway/store/database.py replaces aiosqlite's private ``_tx`` queue (its ``put_nowait`` runs each call at
    once) and awaits its private ``_connect()``; pyproject.toml pins aiosqlite to versions that have both. A new
    aiosqlite that renames or reshapes them must fail here, loudly, not hang or start a thread in production."""
    import importlib.metadata
    import inspect

    import aiosqlite.core

    major, minor = (int(part) for part in importlib.metadata.version("aiosqlite").split(".")[:2])
    assert (0, 20) <= (major, minor) < (0, 23), "aiosqlite outside the pinned range: re-check database.py"
    source = inspect.getsource(aiosqlite.core.Connection)
    assert "self._tx.put_nowait((future, function))" in source, "aiosqlite no longer queues calls through _tx"
    assert "self._tx.put_nowait((future, self._connector))" in source, "aiosqlite no longer connects through _tx"
    assert inspect.iscoroutinefunction(aiosqlite.core.Connection._connect), "aiosqlite's _connect() changed"
    connection = _InlineSQLiteConnection(lambda: sqlite3.connect(":memory:", check_same_thread=False))
    assert isinstance(connection._tx, _RunAtOnce)
