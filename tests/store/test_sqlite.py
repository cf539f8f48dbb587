"""The embedded SQLite backend: statements run on the event loop's thread, and searches go through the search
index instead of walking every resource of a type. (SQLite only: PostgreSQL plans on its own statistics.)"""

from __future__ import annotations

import sqlite3
import threading

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from gateway.fhir.search import parse_search
from gateway.referral.identity import INS_NIR, RPPS
from gateway.store import Database, UnitOfWork
from gateway.store.database import _InlineSQLiteConnection, _RunAtOnce
from gateway.store.repository import KEY_LOOKUP_STATEMENTS, KeyLookup, _count, _holders_by_identity, _matches, _shape
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
    shape, parameters = _shape(query)
    page = await _plan(database, _matches(shape, query.descending, 10, 0).params(parameters))
    count = await _plan(database, _count(shape).params(parameters))
    for plan in (page, count):
        assert any("resources" in step and "(resource_type=? AND id=?)" in step for step in plan), plan
        assert any("ix_search_index_resource_type_param_value" in step for step in plan), plan
        assert not any("ix_resources_resource_type_last_updated_id" in step for step in plan), plan


async def test_a_plain_listing_pages_along_the_last_updated_index(database: Database) -> None:
    query = parse_search("ServiceRequest", [], default_count=20, max_count=100)
    shape, parameters = _shape(query)
    plan = await _plan(database, _matches(shape, query.descending, 20, 0).params(parameters))
    assert any("ix_resources_resource_type_last_updated_id" in step for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan


async def test_lookups_by_key_use_the_primary_keys(database: Database) -> None:
    """Intake looks up the resources holding a referral's national identifiers in one query, delivery fetches
    resources by id in one; a row-value IN list would make SQLite scan the tables whole, at every intake."""
    r = resources.c
    keys = [("Patient", INS_NIR, "1"), ("Patient", INS_NIR, "2"), ("Practitioner", RPPS, "3")]
    identities, parameters = _holders_by_identity(keys)
    current, current_parameters = KeyLookup(resources, [r.resource_type, r.id])([("Patient", "a"), ("Task", "b")])
    for plan in (
        await _plan(database, identities.params(parameters)),
        await _plan(database, current.params(current_parameters)),
    ):
        assert plan and not any(step.startswith("SCAN") for step in plan), plan
    holders = await _plan(database, identities.params(parameters))
    for table in ("resource_identities", "resources"):  # the join too goes by key
        assert any(step.startswith(f"SEARCH {table} ") for step in holders), holders


def test_a_search_statement_is_built_once_per_shape() -> None:
    """Searches that differ only by their values (every intake's opposition look-up) share one statement."""

    def statement(nir: str, status: str) -> tuple[sa.Select[tuple[object, ...]], dict[str, object]]:
        params = [("patient:identifier", f"{INS_NIR}|{nir}"), ("status", status)]
        shape, parameters = _shape(parse_search("Consent", params, default_count=100, max_count=100))
        return _matches(shape, False, 100, 0), parameters

    first, parameters = statement("123456789012345", "active")
    second, _ = statement("223456789012345", "draft")
    assert first is second
    assert parameters == {"p0": "123456789012345", "p1": INS_NIR, "p2": "active"}


def test_a_key_lookup_is_built_once_per_number_of_groups() -> None:
    """Only the values change from one look-up to the next: the statement (and SQLAlchemy's compiled form of
    it) is reused, never rebuilt."""
    i = resource_identities.c
    lookup = KeyLookup([i.resource_id], [i.resource_type, i.system, i.value])
    first, parameters = lookup([("Patient", INS_NIR, "1"), ("Practitioner", RPPS, "3"), ("Patient", INS_NIR, "2")])
    second, _ = lookup([("Organization", "f", "9"), ("Patient", INS_NIR, "4")])
    assert first is second
    assert parameters == {
        "k0_0": "Patient",
        "k0_1": INS_NIR,
        "v0": ["1", "2"],
        "k1_0": "Practitioner",
        "k1_1": RPPS,
        "v1": ["3"],
    }
    assert lookup([("Patient", INS_NIR, "5")])[0] is not first


def test_a_key_lookup_keeps_a_bounded_number_of_statements() -> None:
    """Issue 21 (memory): a statement per number of groups, and a client chooses how many identifier systems its
    bundles carry — kept without bound, bundles of 1 … n systems left n statements in the process."""
    i = resource_identities.c
    lookup = KeyLookup([i.resource_id], [i.resource_type, i.system, i.value])
    built = [lookup([("Patient", f"urn:system:{g}", "1") for g in range(groups)])[0] for groups in range(1, 101)]
    assert len(lookup._statements) == KEY_LOOKUP_STATEMENTS
    assert lookup([("Patient", f"urn:system:{g}", "2") for g in range(100)])[0] is built[-1]  # the newest kept
    assert lookup([("Patient", "urn:system:0", "2")])[0] is not built[0]  # the oldest built again


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


async def test_a_string_search_goes_through_the_index_of_the_folded_strings(database: Database) -> None:
    """That index holds the string rows only (0012): a LIKE on ``folded`` holds for no NULL, so it still serves."""
    query = parse_search("Patient", [("family", "martin")], default_count=20, max_count=100)
    shape, parameters = _shape(query)
    plan = await _plan(database, _matches(shape, query.descending, 20, 0).params(parameters))
    assert any("ix_search_index_resource_type_param_folded" in step for step in plan), plan
