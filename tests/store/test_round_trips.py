"""What a referral costs in statements: on PostgreSQL each is a round trip, and a round trip costs the gateway a
socket write and a wake-up of the server process — more CPU than the rows themselves (issue #7 item 7)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy import event

from gateway.store import Database
from gateway.store.repository import PendingWrites
from gateway.store.tables import referral_members, resource_identities, search_index
from gateway.store.unit_of_work import UnitOfWork
from tests.conftest import load_example
from tests.support.databases import USES_POSTGRESQL

FHIR_JSON = {"content-type": "application/fhir+json"}
#: A new referral's statements: the idempotency look-up, the look-up of the people and organisations it names,
#: the opposition look-up, the look-up of the live Subscriptions its changes may notify (gateway.notify), then its
#: writes (PostgreSQL: one statement; SQLite: BEGIN IMMEDIATE and one executemany per table, which cost no round
#: trip).
MAX_STATEMENTS = 5 if USES_POSTGRESQL else 12


@pytest.fixture
def statements(database: Database) -> Iterator[list[str]]:
    """The SQL of every statement the database is sent, while the test runs."""
    sent: list[str] = []

    def record(*args: Any) -> None:
        sent.append(" ".join(str(args[2]).split()))

    event.listen(database.engine.sync_engine, "before_cursor_execute", record)
    yield sent
    event.remove(database.engine.sync_engine, "before_cursor_execute", record)


async def test_a_new_referral_costs_few_statements(client: httpx.AsyncClient, statements: list[str]) -> None:
    referral = load_example("referral-hospital-nurse.json")
    answer = await client.post("/fhir", json=referral, headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text
    assert len(statements) <= MAX_STATEMENTS, "\n".join(statements)
    if USES_POSTGRESQL:
        writes = [s for s in statements if not s.startswith("SELECT")]
        assert len(writes) == 1, writes
        assert writes[0].startswith("WITH ") and "INSERT INTO search_index" in writes[0]


async def test_a_flush_writes_every_table_and_every_row(database: Database, statements: list[str]) -> None:
    """Several rows in each of several tables, NULLs included: all written, in one statement on PostgreSQL."""
    pending = PendingWrites()
    pending.add(resource_identities, {"resource_type": "Patient", "system": "s", "value": "1", "resource_id": "p1"})
    pending.add(resource_identities, {"resource_type": "Patient", "system": "s", "value": "2", "resource_id": "p2"})
    index_row = {"resource_type": "Patient", "resource_id": "p1", "param": "name", "value": "Dupont"}
    pending.add(search_index, index_row | {"system": None})
    pending.add(search_index, index_row | {"system": None, "value": "Durand"})
    pending.add(referral_members, {"resource_type": "Patient", "resource_id": "p1", "service_request_id": "sr1"})
    async with database.engine.begin() as connection:
        await pending.flush(connection)
    assert not pending.rows
    if USES_POSTGRESQL:
        assert len(statements) == 1, statements
    async with database.engine.connect() as connection:
        identities = (await connection.execute(sa.select(resource_identities.c.value))).scalars().all()
        names = (await connection.execute(sa.select(search_index.c.value, search_index.c.system))).all()
        members = (await connection.execute(sa.select(referral_members.c.resource_id))).scalars().all()
    assert sorted(identities) == ["1", "2"]
    assert sorted(names) == [("Dupont", None), ("Durand", None)]
    assert members == ["p1"]


@pytest.fixture
def begins(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every transaction asyncpg begins (a BEGIN round trip each), while the test runs."""
    begun: list[str] = []
    start = asyncpg.transaction.Transaction.start

    async def counted(self: asyncpg.transaction.Transaction) -> None:
        begun.append("BEGIN")
        await start(self)

    monkeypatch.setattr(asyncpg.transaction.Transaction, "start", counted)
    return begun


@pytest.mark.skipif(not USES_POSTGRESQL, reason="PostgreSQL's transactions begin when a unit of work first writes")
async def test_a_new_referral_sends_no_begin_nor_commit(client: httpx.AsyncClient, begins: list[str]) -> None:
    """Its look-ups run on their own and its writes are one statement: atomic without a transaction around it."""
    answer = await client.post("/fhir", json=load_example("referral-hospital-nurse.json"), headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text
    assert begins == []
    service_request = next(e for e in answer.json()["entry"] if "/ServiceRequest/" in e["fullUrl"])
    read = await client.get("/fhir/" + service_request["response"]["location"].split("/_history")[0])
    assert read.status_code == 200


async def test_a_write_after_reads_is_rolled_back_with_the_unit_of_work(database: Database, begins: list[str]) -> None:
    """Reads first (on their own, on PostgreSQL), then an immediate write: the write begins the transaction, and
    the unit of work's failure rolls it back."""
    async with UnitOfWork(database) as uow:
        created = uow.resources.add({"resourceType": "Organization", "name": "A"})
        await uow.commit()
    begins.clear()
    with pytest.raises(RuntimeError):
        async with UnitOfWork(database) as uow:
            current = await uow.resources.get("Organization", created.id)
            assert current is not None
            assert await uow.resources.update(current, {"resourceType": "Organization", "name": "B"}) is not None
            raise RuntimeError("boom")
    if USES_POSTGRESQL:
        assert begins == ["BEGIN"]
    async with UnitOfWork(database, write=False) as uow:
        after = await uow.resources.get("Organization", created.id)
    assert after is not None and after.version_id == 1 and after.content["name"] == "A"


async def test_a_pooled_connection_is_given_back_ordinary(database: Database) -> None:
    """A unit of work's connection returns to the pool as it came: the next plain user gets a transaction that
    its rollback undoes, not autocommit."""
    for _ in range(3):  # the pool hands the same connection back
        async with UnitOfWork(database, write=False) as uow:
            await uow.resources.exists("Organization", "x")
    row = {"resource_type": "Patient", "system": "s", "value": "v", "resource_id": "p"}
    async with database.engine.connect() as connection:
        await connection.execute(sa.insert(resource_identities), row)
        await connection.rollback()
    async with database.engine.connect() as connection:
        assert (await connection.execute(sa.select(sa.func.count()).select_from(resource_identities))).scalar() == 0
