"""Migrations over data: a database made at an earlier revision, filled as the gateway of that revision filled it,
then brought forward (and back)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from alembic import command

from gateway.fhir.search import DENIAL_PARAMS, index_entries
from gateway.store import Database
from gateway.store.migrate import alembic_config, upgrade
from gateway.store.tables import resources, search_index
from tests.support.databases import drop_scratch_database, scratch_database_url

_CONTENTS = {
    ("Patient", "p-year"): {"birthDate": "1941", "gender": "female"},
    ("Patient", "p-month"): {"birthDate": "1941-06"},
    ("Patient", "p-day"): {"birthDate": "1941-06-14"},
    ("Patient", "p-winter"): {"birthDate": "2000-01-15"},
    ("Patient", "p-none"): {"gender": "male"},
    ("Task", "t-offset"): {"restriction": {"period": {"end": "2026-12-05T00:30:00+01:00"}}},
    ("Task", "t-millis"): {"restriction": {"period": {"end": "2026-12-04T10:14:25.910Z"}}},
}
#: The index of revision 0004: each date as posted, no system; other parameters as they are today.
_BEFORE = {
    ("Patient", "p-year", "birthdate", None, "1941"),
    ("Patient", "p-year", "gender", None, "female"),
    ("Patient", "p-month", "birthdate", None, "1941-06"),
    ("Patient", "p-day", "birthdate", None, "1941-06-14"),
    ("Patient", "p-winter", "birthdate", None, "2000-01-15"),
    ("Patient", "p-none", "gender", None, "male"),
    ("Task", "t-offset", "deadline", None, "2026-12-05T00:30:00+01:00"),
    ("Task", "t-millis", "deadline", None, "2026-12-04T10:14:25.910Z"),
}
#: What the gateway itself indexes today, for the same contents.
_AFTER = {
    (resource_type, resource_id, entry.param, entry.system, entry.value)
    for (resource_type, resource_id), content in _CONTENTS.items()
    for entry in index_entries({"resourceType": resource_type, **content})
}


@pytest.fixture
def url_0004(tmp_path: Path) -> Iterator[str]:
    url = scratch_database_url(tmp_path)
    upgrade(url, "0004")
    yield url
    drop_scratch_database(url)


@pytest.fixture
async def at_0004(url_0004: str) -> AsyncIterator[tuple[str, Database]]:
    url = url_0004
    database = Database(url)
    moment = datetime(2026, 11, 29, tzinfo=UTC)
    async with database.engine.begin() as connection:
        await connection.execute(
            sa.insert(resources),
            [
                {
                    "resource_type": resource_type,
                    "id": resource_id,
                    "version_id": 1,
                    "last_updated": moment,
                    "content": orjson.dumps({"resourceType": resource_type, "id": resource_id, **content}).decode(),
                }
                for (resource_type, resource_id), content in _CONTENTS.items()
            ],
        )
        await connection.execute(
            sa.insert(search_index),
            [
                {"resource_type": t, "resource_id": i, "param": p, "system": system, "value": value}
                for t, i, p, system, value in _BEFORE
            ],
        )
    try:
        yield url, database
    finally:
        await database.dispose()


async def _index(database: Database) -> set[tuple[str, str, str, str | None, str]]:
    s = search_index.c
    async with database.engine.connect() as connection:
        result = await connection.execute(sa.select(s.resource_type, s.resource_id, s.param, s.system, s.value))
        return {tuple(row) for row in result}  # type: ignore[misc]


async def test_0005_recomputes_date_rows_again_and_back(at_0004: tuple[str, Database]) -> None:
    """Regression: 0005 read each stored row as a date, so a second run read ``….000Z`` to the millisecond (a
    birth year 1941 became the period of its first instant), and its downgrade cut a birth year 1941 to
    1941-01-01. It now recomputes the date rows from the resources, up (as the gateway indexes) and down (the
    dates as posted)."""
    url, database = at_0004
    config = alembic_config(url)
    await asyncio.to_thread(upgrade, url, "0005")
    assert await _index(database) == _AFTER
    assert ("Patient", "p-winter", "birthdate", "2000-01-15T23:00:00.000Z", "2000-01-14T23:00:00.000Z") in _AFTER

    await asyncio.to_thread(command.stamp, config, "0004")  # as if the upgrade ran again over its own rows
    await asyncio.to_thread(upgrade, url, "0005")
    assert await _index(database) == _AFTER

    await asyncio.to_thread(command.downgrade, config, "0004")
    assert await _index(database) == _BEFORE
    await asyncio.to_thread(command.stamp, config, "0005")  # and the downgrade again over its own rows
    await asyncio.to_thread(command.downgrade, config, "0004")
    assert await _index(database) == _BEFORE


_PEOPLE = {
    ("Patient", "p-helene"): {"name": [{"family": "LÉROY", "given": ["Hélène", "Marie  Anne"]}]},
    ("Practitioner", "pr-marcel"): {"name": [{"family": "Dupont", "given": ["Marcel"], "text": "Dr Marcel Dupont"}]},
    ("Organization", "o-1"): {"name": "Hôpital Saint-Éloi", "alias": ["CHU"]},
    ("ServiceRequest", "sr-1"): {"status": "active", "supportingInfo": [{"reference": "Consent/c-1"}]},
}
#: The index of revision 0005 (and 0006): strings lower-cased, no ``folded``, no ``supporting-info``.
_LOWERED = {
    ("Patient", "p-helene", "family", None, "léroy"),
    ("Patient", "p-helene", "given", None, "hélène"),
    ("Patient", "p-helene", "given", None, "marie anne"),
    ("Patient", "p-helene", "name", None, "léroy"),
    ("Patient", "p-helene", "name", None, "hélène"),
    ("Patient", "p-helene", "name", None, "marie anne"),
    ("Practitioner", "pr-marcel", "family", None, "dupont"),
    ("Practitioner", "pr-marcel", "given", None, "marcel"),
    ("Practitioner", "pr-marcel", "name", None, "dupont"),
    ("Practitioner", "pr-marcel", "name", None, "marcel"),
    ("Practitioner", "pr-marcel", "name", None, "dr marcel dupont"),
    ("Organization", "o-1", "name", None, "hôpital saint-éloi"),
    ("Organization", "o-1", "name", None, "chu"),
    ("ServiceRequest", "sr-1", "status", None, "active"),
}


async def _rows(database: Database) -> set[tuple[Any, ...]]:
    """Every index row, with ``folded`` when the column exists (read by name: it comes and goes; a fresh connection,
    as asyncpg's prepared ``SELECT *`` would not survive the column's change)."""
    await database.engine.dispose()
    async with database.engine.connect() as connection:
        result = await connection.execute(sa.text("SELECT * FROM search_index"))
        return {
            tuple(
                row[name]
                for name in ("resource_type", "resource_id", "param", "system", "value", "folded")
                if name in row
            )
            for row in (dict(r._mapping) for r in result)
        }


@pytest.fixture
def url_0005(tmp_path: Path) -> Iterator[str]:
    url = scratch_database_url(tmp_path)
    upgrade(url, "0005")
    yield url
    drop_scratch_database(url)


_SYSTEM = "https://hospital.example/referrals"


async def test_0006_gives_each_idempotency_key_to_its_referrals_senders_and_back(url_0005: str) -> None:
    """Issue 23, item 3: idempotency keys become their client's. A key goes to each sender of its referral (a
    referral with none was posted with authentication off: ''); a ServiceRequest identifier is no unique identity
    any more. The downgrade gives back one row per key and the ServiceRequest identities."""
    database = Database(url_0005)
    moment = datetime(2026, 12, 7, tzinfo=UTC)
    keys = sa.table(
        "idempotency_keys",
        sa.column("key", sa.String),
        sa.column("service_request_id", sa.String),
        sa.column("outcome", sa.Text),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    identities = sa.table(
        "resource_identities",
        *(sa.column(name, sa.String) for name in ("resource_type", "system", "value", "resource_id")),
    )
    senders = sa.table("referral_senders", sa.column("service_request_id"), sa.column("client_id"))
    try:
        async with database.engine.begin() as connection:
            await connection.execute(
                sa.insert(resources),
                [
                    {
                        "resource_type": "ServiceRequest",
                        "id": sr,
                        "version_id": 1,
                        "last_updated": moment,
                        "content": orjson.dumps(
                            {"resourceType": "ServiceRequest", "identifier": [{"system": _SYSTEM, "value": value}]}
                        ).decode(),
                    }
                    for sr, value in (("sr-a", "1"), ("sr-off", "2"))
                ],
            )
            await connection.execute(
                sa.insert(identities),
                [
                    {"resource_type": "ServiceRequest", "system": _SYSTEM, "value": "1", "resource_id": "sr-a"},
                    {"resource_type": "ServiceRequest", "system": _SYSTEM, "value": "2", "resource_id": "sr-off"},
                    {
                        "resource_type": "Patient",
                        "system": "urn:oid:1.2.250.1.213.1.4.8",
                        "value": "x",
                        "resource_id": "p",
                    },
                ],
            )
            await connection.execute(
                sa.insert(keys),
                [
                    {"key": key, "service_request_id": sr, "outcome": "{}", "created_at": moment}
                    for key, sr in (
                        (f"servicerequest:{_SYSTEM}|1", "sr-a"),
                        ("bundle:b|1", "sr-a"),
                        ("k-off", "sr-off"),
                    )
                ],
            )
            await connection.execute(
                sa.insert(senders), [{"service_request_id": "sr-a", "client_id": c} for c in ("hospital", "peer")]
            )

        async def rows(statement: str) -> set[tuple[str, ...]]:
            async with database.engine.connect() as connection:
                return {tuple(row) for row in await connection.execute(sa.text(statement))}

        await asyncio.to_thread(upgrade, url_0005, "0006")
        assert await rows("SELECT client_id, key, service_request_id FROM idempotency_keys") == {
            ("hospital", f"servicerequest:{_SYSTEM}|1", "sr-a"),
            ("peer", f"servicerequest:{_SYSTEM}|1", "sr-a"),
            ("hospital", "bundle:b|1", "sr-a"),
            ("peer", "bundle:b|1", "sr-a"),
            ("", "k-off", "sr-off"),
        }
        assert await rows("SELECT resource_type, resource_id FROM resource_identities") == {("Patient", "p")}

        await asyncio.to_thread(command.downgrade, alembic_config(url_0005), "0005")
        assert await rows("SELECT key, service_request_id FROM idempotency_keys") == {
            (f"servicerequest:{_SYSTEM}|1", "sr-a"),
            ("bundle:b|1", "sr-a"),
            ("k-off", "sr-off"),
        }
        assert await rows("SELECT resource_type, value, resource_id FROM resource_identities") == {
            ("ServiceRequest", "1", "sr-a"),
            ("ServiceRequest", "2", "sr-off"),
            ("Patient", "x", "p"),
        }
        await asyncio.to_thread(upgrade, url_0005, "0006")  # and up again over the downgrade's rows
        assert len(await rows("SELECT client_id, key FROM idempotency_keys")) == 5
    finally:
        await database.dispose()


@pytest.fixture
async def at_0005(url_0005: str) -> AsyncIterator[tuple[str, Database]]:
    url = url_0005
    database = Database(url)
    moment = datetime(2026, 12, 1, tzinfo=UTC)
    async with database.engine.begin() as connection:
        await connection.execute(
            sa.insert(resources),
            [
                {
                    "resource_type": resource_type,
                    "id": resource_id,
                    "version_id": 1,
                    "last_updated": moment,
                    "content": orjson.dumps({"resourceType": resource_type, "id": resource_id, **content}).decode(),
                }
                for (resource_type, resource_id), content in _PEOPLE.items()
            ],
        )
        await connection.execute(
            sa.text(
                "INSERT INTO search_index (resource_type, resource_id, param, system, value) "
                "VALUES (:t, :i, :p, :s, :v)"
            ),
            [{"t": t, "i": i, "p": p, "s": s, "v": v} for t, i, p, s, v in _LOWERED],
        )
    try:
        yield url, database
    finally:
        await database.dispose()


async def test_0007_folds_strings_again_and_back(at_0005: tuple[str, Database]) -> None:
    """0007 adds ``folded`` and rewrites the string rows as the gateway indexes them now (text as written, folded
    beside it) plus a ServiceRequest's ``supporting-info``; again after a stamp, the same rows; down, the former
    lower-cased rows, twice alike."""
    url, database = at_0005
    config = alembic_config(url)
    after = {
        (resource_type, resource_id, entry.param, entry.system, entry.value, entry.folded)
        for (resource_type, resource_id), content in _PEOPLE.items()
        for entry in index_entries({"resourceType": resource_type, **content})
    }
    assert ("Patient", "p-helene", "given", None, "Hélène", "helene") in after
    assert ("ServiceRequest", "sr-1", "supporting-info", "Consent", "c-1", None) in after
    await asyncio.to_thread(upgrade, url, "0007")
    assert await _rows(database) == after

    await asyncio.to_thread(command.stamp, config, "0006")  # as if the upgrade ran again over its own rows
    await asyncio.to_thread(upgrade, url, "0007")
    assert await _rows(database) == after

    await asyncio.to_thread(command.downgrade, config, "0006")
    assert await _rows(database) == _LOWERED
    await asyncio.to_thread(command.stamp, config, "0007")  # and the downgrade again over its own rows
    await asyncio.to_thread(command.downgrade, config, "0006")
    assert await _rows(database) == _LOWERED


_TASK_TYPE = "https://fhir.dac-gateway.org/CodeSystem/dac-task-type"
_BUSINESS = "https://fhir.dac-gateway.org/CodeSystem/dac-task-business-status"


def _task(code: str, status: str, end: str | None, business: str = "created") -> dict[str, Any]:
    task: dict[str, Any] = {
        "resourceType": "Task",
        "status": status,
        "code": {"coding": [{"system": _TASK_TYPE, "code": code}]},
        "businessStatus": {"coding": [{"system": _BUSINESS, "code": business}]},
    }
    if end is not None:
        task["restriction"] = {"period": {"end": end}}
    return task


#: Tasks as stored at 0008: only the GP validations still waiting get a pending deadline.
_TASKS = {
    "t-waiting": _task("gp-validation", "requested", "2026-12-05T00:30:00+01:00"),
    "t-received": _task("gp-validation", "received", "2026-12-04T10:14:25.910Z"),
    "t-accepted": _task("gp-validation", "accepted", "2026-12-05T00:30:00+01:00", "accepted"),
    "t-escalated": _task("gp-validation", "requested", "2026-12-01T00:00:00Z", "escalated"),
    "t-information": _task("gp-information", "requested", "2026-12-05T00:30:00Z"),
    "t-no-deadline": _task("gp-validation", "requested", None),
}


@pytest.fixture
def url_0008(tmp_path: Path) -> Iterator[str]:
    url = scratch_database_url(tmp_path)
    upgrade(url, "0008")
    yield url
    drop_scratch_database(url)


async def test_0009_fills_pending_deadlines_from_the_waiting_validations(url_0008: str) -> None:
    """0009 makes ``pending_deadlines`` (the escalation scan's index) and fills it from the Tasks stored: the
    gp-validation Tasks still requested or received, not escalated, each at its deadline's UTC start; again after a
    stamp, the same rows; down, no table."""
    url = url_0008
    database = Database(url)
    moment = datetime(2026, 12, 1, tzinfo=UTC)
    try:
        async with database.engine.begin() as connection:
            await connection.execute(
                sa.insert(resources),
                [
                    {
                        "resource_type": "Task",
                        "id": task_id,
                        "version_id": 1,
                        "last_updated": moment,
                        "content": orjson.dumps({**content, "id": task_id}).decode(),
                    }
                    for task_id, content in _TASKS.items()
                ],
            )
            await connection.execute(
                sa.insert(search_index),
                [
                    {
                        "resource_type": "Task",
                        "resource_id": task_id,
                        "param": entry.param,
                        "system": entry.system,
                        "value": entry.value,
                        "folded": entry.folded,
                    }
                    for task_id, content in _TASKS.items()
                    for entry in index_entries(content)
                ],
            )

        async def pending() -> dict[str, datetime]:
            await database.engine.dispose()
            table = sa.table("pending_deadlines", sa.column("task_id"), sa.column("due_at", sa.DateTime(timezone=True)))
            async with database.engine.connect() as connection:
                rows = await connection.execute(sa.select(table.c.task_id, table.c.due_at))
                return {row[0]: (row[1] if row[1].tzinfo else row[1].replace(tzinfo=UTC)) for row in rows}

        expected = {
            "t-waiting": datetime(2026, 12, 4, 23, 30, tzinfo=UTC),
            "t-received": datetime(2026, 12, 4, 10, 14, 25, 910000, tzinfo=UTC),
        }
        await asyncio.to_thread(upgrade, url, "0009")
        assert await pending() == expected
        config = alembic_config(url)
        await asyncio.to_thread(command.stamp, config, "0008")  # as if the upgrade ran again over its own rows
        await asyncio.to_thread(upgrade, url, "0009")
        assert await pending() == expected
        await asyncio.to_thread(command.downgrade, config, "0008")
        await database.engine.dispose()
        async with database.engine.connect() as connection:
            tables = await connection.run_sync(lambda sync: sa.inspect(sync).get_table_names())
        assert "pending_deadlines" not in tables
    finally:
        await database.dispose()


_CONSENTS = {
    "c-deny": {"status": "active", "provision": {"type": "deny"}, "patient": {"reference": "Patient/p-1"}},
    "c-deny-ins": {
        "status": "active",
        "provision": {"type": "deny"},
        "patient": {"identifier": {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "255081416802538"}},
    },
    "c-permit": {"status": "active", "provision": {"type": "permit"}, "patient": {"reference": "Patient/p-1"}},
}


@pytest.fixture
def url_0009(tmp_path: Path) -> Iterator[str]:
    url = scratch_database_url(tmp_path)
    upgrade(url, "0009")
    yield url
    drop_scratch_database(url)


async def test_0010_indexes_the_denials_stored_and_back(url_0009: str) -> None:
    """0010 writes the denial rows (``DENIAL_PARAMS``) of the Consents stored, as the gateway indexes them now —
    none for a permit; again after a stamp, the same rows; down, none of them, the other rows as they were."""
    url = url_0009
    database = Database(url)
    moment = datetime(2026, 12, 7, tzinfo=UTC)
    contents = {i: {"resourceType": "Consent", "id": i, **content} for i, content in _CONSENTS.items()}
    try:
        async with database.engine.begin() as connection:
            await connection.execute(
                sa.insert(resources),
                [
                    {"resource_type": "Consent", "id": i, "version_id": 1, "last_updated": moment}
                    | {"content": orjson.dumps(content).decode()}
                    for i, content in contents.items()
                ],
            )
            before = [
                {"resource_type": "Consent", "resource_id": i, "param": e.param, "system": e.system}
                | {"value": e.value}
                for i, content in contents.items()
                for e in index_entries(content)
                if e.param not in DENIAL_PARAMS
            ]
            await connection.execute(sa.insert(search_index), before)
        old = await _index(database)
        now = {
            ("Consent", i, e.param, e.system, e.value)
            for i, content in contents.items()
            for e in index_entries(content)
        }
        assert now - old == {
            ("Consent", "c-deny", "denial-patient", "Patient", "p-1"),
            (
                "Consent",
                "c-deny-ins",
                "denial-patient:identifier",
                "urn:oid:1.2.250.1.213.1.4.8",
                "255081416802538",
            ),
        }
        config = alembic_config(url)
        await asyncio.to_thread(upgrade, url, "0010")
        assert await _index(database) == now
        await asyncio.to_thread(command.stamp, config, "0009")  # as if the upgrade ran again over its own rows
        await asyncio.to_thread(upgrade, url, "0010")
        assert await _index(database) == now
        await asyncio.to_thread(command.downgrade, config, "0009")
        assert await _index(database) == old
    finally:
        await database.dispose()


@pytest.fixture
def url_0011(tmp_path: Path) -> Iterator[str]:
    url = scratch_database_url(tmp_path)
    upgrade(url, "0011")
    yield url
    drop_scratch_database(url)


async def _folded_index_definition(database: Database) -> str:
    """How the database itself states the index of the folded strings (its CREATE INDEX)."""
    async with database.engine.connect() as connection:
        if database.is_sqlite:
            statement = "SELECT sql FROM sqlite_master WHERE name = 'ix_search_index_resource_type_param_folded'"
        else:
            statement = "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_search_index_resource_type_param_folded'"
        return str((await connection.execute(sa.text(statement))).scalar_one())


async def test_0012_keeps_only_the_string_rows_in_the_folded_index_and_back(url_0011: str) -> None:
    """0012 makes the index of the folded strings partial: the rows of other parameters (NULL ``folded``, six in
    seven of a referral's) are no longer written to it; down, it holds every row again."""
    url = url_0011
    database = Database(url)
    try:
        assert "folded IS NOT NULL" not in await _folded_index_definition(database)
        await asyncio.to_thread(upgrade, url, "0012")
        assert "folded IS NOT NULL" in await _folded_index_definition(database)
        await asyncio.to_thread(command.downgrade, alembic_config(url), "0011")
        assert "folded IS NOT NULL" not in await _folded_index_definition(database)
    finally:
        await database.dispose()


@pytest.fixture
def url_0012(tmp_path: Path) -> Iterator[str]:
    url = scratch_database_url(tmp_path)
    upgrade(url, "0012")
    yield url
    drop_scratch_database(url)


async def test_0013_keeps_each_version_once_and_back(url_0012: str) -> None:
    """0013: the current versions leave ``resource_versions`` (they are in ``resources``, which takes the method
    that wrote each); the versions they replaced stay. Down, the current versions are copied back with their
    method and the column goes."""
    url = url_0012
    database = Database(url)
    moment = datetime(2026, 12, 7, tzinfo=UTC)
    versions = sa.table(
        "resource_versions",
        *(sa.column(name) for name in ("resource_type", "id", "version_id", "content", "method")),
        sa.column("last_updated", sa.DateTime(timezone=True)),
    )

    def row(resource_id: str, version: int, method: str | None) -> dict[str, Any]:
        content = {"resourceType": "Patient", "id": resource_id, "meta": {"versionId": str(version)}}
        return {"resource_type": "Patient", "id": resource_id, "version_id": version, "last_updated": moment} | {
            "content": orjson.dumps(content).decode(),
            "method": method,
        }

    current = [row("p-once", 1, "POST"), row("p-twice", 2, "PATCH"), row("p-old", 1, None)]  # p-old: before 0008
    replaced = [row("p-twice", 1, "POST")]

    async def stored() -> dict[str, set[tuple[Any, ...]]]:
        await database.engine.dispose()
        async with database.engine.connect() as connection:
            columns = await connection.run_sync(
                lambda sync: {c["name"] for c in sa.inspect(sync).get_columns("resources")}
            )
            method = [sa.column("method")] if "method" in columns else []
            table = sa.table("resources", sa.column("id"), sa.column("version_id"), sa.column("content"), *method)
            return {
                "resources": {tuple(r) for r in await connection.execute(sa.select(*table.c))},
                "resource_versions": {
                    tuple(r)
                    for r in await connection.execute(
                        sa.select(versions.c.id, versions.c.version_id, versions.c.content, versions.c.method)
                    )
                },
            }

    try:
        async with database.engine.begin() as connection:
            await connection.execute(
                sa.insert(resources), [{k: v for k, v in r.items() if k != "method"} for r in current]
            )
            await connection.execute(sa.insert(versions), current + replaced)
        before = await stored()
        await asyncio.to_thread(upgrade, url, "0013")
        assert await stored() == {
            "resources": {(r["id"], r["version_id"], r["content"], r["method"]) for r in current},
            "resource_versions": {(r["id"], r["version_id"], r["content"], r["method"]) for r in replaced},
        }
        await asyncio.to_thread(command.downgrade, alembic_config(url), "0012")
        assert await stored() == before
    finally:
        await database.dispose()


async def test_0013_indexes_family_and_given_names_once_and_back(url_0012: str) -> None:
    """0013 removes the ``name`` rows that repeat a ``family`` or ``given`` row of the same resource (a search by
    name reads those now), keeps the others (the text) and every other type's; down, each family and given name has
    its ``name`` row again."""
    url = url_0012
    database = Database(url)
    patient = {"resourceType": "Patient", "name": [{"family": "Martin", "given": ["Anne"], "text": "Anne Martin"}]}
    organization = {"resourceType": "Organization", "name": "Martin"}
    old = {  # as 0012's gateway indexed them
        ("Patient", "p-1", "family", None, "Martin"),
        ("Patient", "p-1", "given", None, "Anne"),
        ("Patient", "p-1", "name", None, "Martin"),
        ("Patient", "p-1", "name", None, "Anne"),
        ("Patient", "p-1", "name", None, "Anne Martin"),
        ("Organization", "o-1", "name", None, "Martin"),
    }
    try:
        async with database.engine.begin() as connection:
            await connection.execute(
                sa.insert(search_index),
                [
                    {"resource_type": t, "resource_id": i, "param": p, "system": s, "value": v, "folded": v.lower()}
                    for t, i, p, s, v in old
                ],
            )
        now = {
            (content["resourceType"], i, e.param, e.system, e.value)
            for i, content in (("p-1", patient), ("o-1", organization))
            for e in index_entries(content)
        }
        assert old - now == {("Patient", "p-1", "name", None, "Martin"), ("Patient", "p-1", "name", None, "Anne")}
        await asyncio.to_thread(upgrade, url, "0013")
        assert await _index(database) == now
        await asyncio.to_thread(command.downgrade, alembic_config(url), "0012")
        assert await _index(database) == old
    finally:
        await database.dispose()
