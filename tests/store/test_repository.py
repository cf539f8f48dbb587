from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from gateway.fhir.search import parse_search
from gateway.store import Database, DuplicateKey, UnitOfWork
from gateway.store.tables import resource_versions, resources


def _query(resource_type: str, *params: tuple[str, str], count: int = 20):  # type: ignore[no-untyped-def]
    return parse_search(resource_type, list(params), default_count=count, max_count=100)


async def test_add_read_update_history(database: Database) -> None:
    async with UnitOfWork(database) as uow:
        created = uow.resources.add({"resourceType": "Patient", "gender": "female"})
        await uow.commit()
    assert created.version_id == 1 and created.content["meta"]["versionId"] == "1"
    async with UnitOfWork(database) as uow:
        current = await uow.resources.get("Patient", created.id)
        assert current is not None and current.content == created.content
        updated = await uow.resources.update(current, {"resourceType": "Patient", "gender": "male"})
        assert updated is not None and updated.version_id == 2
        await uow.commit()
    async with UnitOfWork(database, write=False) as uow:
        history = await uow.resources.history("Patient", created.id)
        first = await uow.resources.get_version("Patient", created.id, 1)
        (total, found) = await uow.resources.search(_query("Patient", ("gender", "male")))
    assert [stored.version_id for stored in history] == [2, 1]
    assert first is not None and first.content["gender"] == "female"
    assert total == 1 and found[0].id == created.id


async def test_update_of_a_stale_version_is_refused(database: Database) -> None:
    async with UnitOfWork(database) as uow:
        created = uow.resources.add({"resourceType": "Organization", "name": "A"})
        await uow.commit()
    async with UnitOfWork(database) as uow:
        assert await uow.resources.update(created, {"resourceType": "Organization", "name": "B"}) is not None
        await uow.commit()
    async with UnitOfWork(database) as uow:
        assert await uow.resources.update(created, {"resourceType": "Organization", "name": "C"}) is None


async def test_nothing_is_written_without_commit(database: Database) -> None:
    async with UnitOfWork(database) as uow:
        stored = uow.resources.add({"resourceType": "Patient"})
        assert await uow.resources.exists("Patient", stored.id)  # visible inside the transaction
    async with UnitOfWork(database, write=False) as uow:
        assert not await uow.resources.exists("Patient", stored.id)


async def test_an_exception_rolls_everything_back(database: Database) -> None:
    with pytest.raises(RuntimeError):
        async with UnitOfWork(database) as uow:
            stored = uow.resources.add({"resourceType": "Patient"})
            await uow.resources.get("Patient", stored.id)  # flushed
            raise RuntimeError("boom")
    async with UnitOfWork(database, write=False) as uow:
        assert await uow.resources.get("Patient", stored.id) is None


async def test_identity_keys_are_unique_under_concurrency(database: Database) -> None:
    key = [("urn:oid:1.2.250.1.213.1.4.8", "141062901908789")]

    async def create() -> str:
        async with UnitOfWork(database) as uow:
            if (found := await uow.resources.identify("Patient", key)) is not None:
                return found
            stored = uow.resources.add({"resourceType": "Patient"}, identity_keys=key)
            await asyncio.sleep(0)
            await uow.commit()
            return stored.id

    results = await asyncio.gather(*(create() for _ in range(6)), return_exceptions=True)
    ids = {result for result in results if isinstance(result, str)}
    failures = [result for result in results if isinstance(result, BaseException)]
    assert len(ids) == 1
    assert all(isinstance(failure, DuplicateKey) for failure in failures)
    async with UnitOfWork(database, write=False) as uow:
        total, _ = await uow.resources.search(_query("Patient"))
    assert total == 1


async def test_search_paging_and_sorting(database: Database) -> None:
    async with UnitOfWork(database) as uow:
        ids = [uow.resources.add({"resourceType": "Organization", "name": f"Org {i}"}).id for i in range(5)]
        await uow.commit()
    async with UnitOfWork(database, write=False) as uow:
        total, page1 = await uow.resources.search(_query("Organization", ("_count", "2")))
        _, page3 = await uow.resources.search(_query("Organization", ("_count", "2"), ("_offset", "4")))
        _, newest = await uow.resources.search(_query("Organization", ("_sort", "-_lastUpdated"), ("_count", "1")))
        _, by_name = await uow.resources.search(_query("Organization", ("name", "org 3")))
        _, by_id = await uow.resources.search(_query("Organization", ("_id", f"{ids[0]},{ids[1]}")))
        total_count, none = await uow.resources.search(_query("Organization", ("_summary", "count")))
    assert total == 5 and len(page1) == 2 and len(page3) == 1
    assert [r.id for r in page1] == ids[:2] and page3[0].id == ids[4]
    assert newest[0].id == ids[4]
    assert [r.id for r in by_name] == [ids[3]]
    assert {r.id for r in by_id} == set(ids[:2])
    assert (total_count, none) == (5, [])


async def test_string_search_escapes_wildcards(database: Database) -> None:
    async with UnitOfWork(database) as uow:
        uow.resources.add({"resourceType": "Organization", "name": "100% Santé"})
        uow.resources.add({"resourceType": "Organization", "name": "100 Santé"})
        uow.resources.add({"resourceType": "Organization", "name": "a_b/c"})
        uow.resources.add({"resourceType": "Organization", "name": "axb/c"})
        await uow.commit()
    async with UnitOfWork(database, write=False) as uow:
        total, _ = await uow.resources.search(_query("Organization", ("name", "100%")))
        underscore, _ = await uow.resources.search(_query("Organization", ("name", "a_b/")))
        slash, _ = await uow.resources.search(_query("Organization", ("name", "axb/c")))
    assert (total, underscore, slash) == (1, 1, 1)


#: Stored birth dates of several precisions, and what each prefix finds with searched dates of several precisions
#: (R4 search.html#prefix, against each stored value's period): the searched period contains it (eq) or not (ne);
#: it reaches past its end (gt) or before its start (lt); either or eq (ge, le); it lies wholly after (sa) or
#: before (eb) it.
_BORN = {
    "older": "1940-12-31",
    "year": "1941",
    "month": "1941-06",
    "day": "1941-06-14",
    "next-day": "1941-06-15",
    "later": "1941-07-02",
    "next-year": "1942-01-01",
}
_ALL = set(_BORN)
_DATE_SEARCHES = {
    "1941-06-14": {
        "eq": {"day"},
        "ne": _ALL - {"day"},
        "gt": {"year", "month", "next-day", "later", "next-year"},
        "lt": {"older", "year", "month"},
        "ge": {"year", "month", "day", "next-day", "later", "next-year"},
        "le": {"older", "year", "month", "day"},
        "sa": {"next-day", "later", "next-year"},
        "eb": {"older"},
    },
    "1941-06": {
        "eq": {"month", "day", "next-day"},
        "ne": {"older", "year", "later", "next-year"},
        "gt": {"year", "later", "next-year"},
        "lt": {"older", "year"},
        "ge": {"year", "month", "day", "next-day", "later", "next-year"},
        "le": {"older", "year", "month", "day", "next-day"},
        "sa": {"later", "next-year"},
        "eb": {"older"},
    },
    "1941": {
        "eq": {"year", "month", "day", "next-day", "later"},
        "ne": {"older", "next-year"},
        "gt": {"next-year"},
        "lt": {"older"},
        "ge": _ALL - {"older"},
        "le": _ALL - {"next-year"},
        "sa": {"next-year"},
        "eb": {"older"},
    },
    "1941-06-14T12:00:00Z": {  # finer than most stored values: a day contains it, it contains none
        "eq": set(),
        "ne": _ALL,
        "gt": _ALL - {"older"},
        "lt": {"older", "year", "month", "day"},
        "ge": _ALL - {"older"},
        "le": {"older", "year", "month", "day"},
        "sa": {"next-day", "later", "next-year"},
        "eb": {"older"},
    },
}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        *((f"{prefix}{date}", found) for date, table in _DATE_SEARCHES.items() for prefix, found in table.items()),
        *((date, table["eq"]) for date, table in _DATE_SEARCHES.items()),  # no prefix: eq
        ("lt1941-06-14,ge1942", {"month", "year", "older", "next-year"}),  # values ORed
    ],
)
async def test_date_parameters_take_prefixes_and_partial_dates(
    database: Database, value: str, expected: set[str]
) -> None:
    """Regression: sa and eb found what merely overlapped the periods after and before the searched one
    (sa1941-06-14 found a birth date 1941 or 1941-06), and ge/le what overlapped them (R4: eq or beyond)."""
    async with UnitOfWork(database) as uow:
        ids = {uow.resources.add({"resourceType": "Patient", "birthDate": date}).id: key for key, date in _BORN.items()}
        await uow.commit()
    async with UnitOfWork(database, write=False) as uow:
        total, found = await uow.resources.search(_query("Patient", ("birthdate", value)))
    assert {ids[r.id] for r in found} == expected and total == len(expected)


async def test_deadline_searches_and_escalation_share_instants(database: Database) -> None:
    """A Task deadline searched by instant, with an offset, and the escalation look-up (``ids_below``) on the
    same index rows."""
    async with UnitOfWork(database) as uow:
        task = {"resourceType": "Task", "status": "requested", "intent": "order"}
        early = uow.resources.add(task | {"restriction": {"period": {"end": "2026-12-04T10:14:25.910Z"}}}).id
        late = uow.resources.add(task | {"restriction": {"period": {"end": "2026-12-05T09:00:00+01:00"}}}).id
        await uow.commit()
    async with UnitOfWork(database, write=False) as uow:
        _, overdue = await uow.resources.search(_query("Task", ("deadline", "lt2026-12-05")))
        _, on_the_day = await uow.resources.search(_query("Task", ("deadline", "2026-12-05")))
        _, after = await uow.resources.search(_query("Task", ("deadline", "gt2026-12-05T07:59:59Z")))
        _, exact = await uow.resources.search(_query("Task", ("deadline", "2026-12-04T11:14:25+01:00")))
        _, other_millisecond = await uow.resources.search(_query("Task", ("deadline", "2026-12-04T10:14:25.123Z")))
        _, same_millisecond = await uow.resources.search(_query("Task", ("deadline", "2026-12-04T10:14:25.91Z")))
        _, in_the_second = await uow.resources.search(_query("Task", ("deadline", "2026-12-04T10:14:25Z")))
        below = await uow.resources.ids_below("Task", "deadline", "2026-12-04T10:14:26.000Z")
    assert [r.id for r in overdue] == [early]
    assert [r.id for r in on_the_day] == [late]
    assert [r.id for r in after] == [late]
    assert [r.id for r in exact] == [early]
    assert below == [early]
    # Regression: the fraction of a searched instant was ignored, so …25.123Z found the deadline …25.910Z.
    assert (other_millisecond, [r.id for r in same_millisecond], [r.id for r in in_the_second]) == (
        [],
        [early],
        [early],
    )


async def test_dates_without_offset_are_paris_dates(database: Database) -> None:
    """Regression: a date without offset, stored or searched, was read in UTC: deadline=2026-12-05 missed a deadline
    at 00:30 in Paris that day, and a birth date 1941-06-14 began at 02:00 Paris time (R4: the server's local time)."""
    async with UnitOfWork(database) as uow:
        task = {"resourceType": "Task", "status": "requested", "intent": "order"}
        night = uow.resources.add(task | {"restriction": {"period": {"end": "2026-12-05T00:30:00+01:00"}}}).id
        born = uow.resources.add({"resourceType": "Patient", "birthDate": "1941-06-14"}).id
        await uow.commit()
    async with UnitOfWork(database, write=False) as uow:
        _, on_the_day = await uow.resources.search(_query("Task", ("deadline", "2026-12-05")))
        _, the_day_before = await uow.resources.search(_query("Task", ("deadline", "2026-12-04")))
        _, from_midnight = await uow.resources.search(_query("Patient", ("birthdate", "lt1941-06-14T00:30:00+02:00")))
    assert ([r.id for r in on_the_day], the_day_before) == ([night], [])
    assert [r.id for r in from_midnight] == [born]


async def test_a_birth_date_of_the_year_1_is_found(database: Database) -> None:
    """Regression: 0001-01-01 in Paris (local mean time then, +00:09:21) began before datetime.min in UTC; it was
    not indexed and its search was a 400. Its start is clamped to 0001-01-01T00:00:00Z."""
    async with UnitOfWork(database) as uow:
        first = uow.resources.add({"resourceType": "Patient", "birthDate": "0001-01-01"}).id
        second = uow.resources.add({"resourceType": "Patient", "birthDate": "0001-01-02"}).id
        await uow.commit()
    async with UnitOfWork(database, write=False) as uow:
        _, on_the_day = await uow.resources.search(_query("Patient", ("birthdate", "0001-01-01")))
        _, in_the_year = await uow.resources.search(_query("Patient", ("birthdate", "0001")))
        _, before = await uow.resources.search(_query("Patient", ("birthdate", "lt0001-01-02")))
    assert [r.id for r in on_the_day] == [first] == [r.id for r in before]
    assert {r.id for r in in_the_year} == {first, second}


async def test_idempotency_keys(database: Database) -> None:
    async with UnitOfWork(database) as uow:
        uow.idempotency.add(["a", "b"], "hospital", "sr-1", {"answer": 1})
        await uow.commit()
    async with UnitOfWork(database) as uow:
        assert await uow.idempotency.find(["x", "b"], "hospital") == {"answer": 1}
        assert await uow.idempotency.find(["x"], "hospital") is None
        # Another client's keys (or the one caller's with authentication off: None) are not the hospital's.
        assert await uow.idempotency.find(["a", "b"], "gp-software") is None
        assert await uow.idempotency.find(["a", "b"], None) is None
        uow.idempotency.add(["a"], "gp-software", "sr-2", {"answer": 2})
        uow.idempotency.add(["a"], None, "sr-3", {"answer": 3})
        await uow.commit()
    async with UnitOfWork(database) as uow:
        assert await uow.idempotency.find(["a"], "gp-software") == {"answer": 2}
        assert await uow.idempotency.find(["a"], None) == {"answer": 3}
        uow.idempotency.add(["a"], "hospital", "sr-4", {"answer": 4})
        with pytest.raises(DuplicateKey):
            await uow.commit()


async def test_many_at_once_by_type_and_key(database: Database) -> None:
    async with UnitOfWork(database) as uow:
        patient = uow.resources.add({"resourceType": "Patient"}, identity_keys=[("urn:oid:1", "p1")])
        other = uow.resources.add({"resourceType": "Patient"}, identity_keys=[("urn:oid:1", "p2")])
        practitioner = uow.resources.add({"resourceType": "Practitioner"}, identity_keys=[("urn:oid:2", "r1")])
        await uow.commit()
    async with UnitOfWork(database, write=False) as uow:
        found = await uow.resources.identify_many(
            [("Patient", "urn:oid:1", "p1"), ("Practitioner", "urn:oid:2", "r1"), ("Patient", "urn:oid:2", "r1")]
        )
        current = await uow.resources.get_many([("Patient", other.id), ("Practitioner", practitioner.id)])
    assert {key: stored.id for key, stored in found.items()} == {
        ("Patient", "urn:oid:1", "p1"): patient.id,
        ("Practitioner", "urn:oid:2", "r1"): practitioner.id,
    }
    assert found[("Patient", "urn:oid:1", "p1")].content == patient.content
    assert set(current) == {("Patient", other.id), ("Practitioner", practitioner.id)}


async def test_update_many_writes_each_next_version_and_only_the_index_rows_that_change(database: Database) -> None:
    def task(business: str, status: str = "requested") -> dict[str, object]:
        return {
            "resourceType": "Task",
            "status": status,
            "intent": "order",
            "businessStatus": {"coding": [{"system": "urn:test", "code": business}]},
            "code": {"coding": [{"system": "urn:test", "code": "platform-intake"}]},
        }

    async with UnitOfWork(database) as uow:
        created = [uow.resources.add(task("queued")) for _ in range(3)]
        await uow.commit()
    async with UnitOfWork(database) as uow:
        current = await uow.resources.get_many((("Task", c.id) for c in created), for_update=True)
        changes = [(current[("Task", c.id)], task("delivered", "accepted" if n == 0 else "requested"))
                   for n, c in enumerate(created)]  # fmt: skip
        written = await uow.resources.update_many(changes)
        await uow.commit()
    assert [stored.version_id for stored in written] == [2, 2, 2]
    async with UnitOfWork(database, write=False) as uow:
        now = await uow.resources.get_many(("Task", c.id) for c in created)
        delivered, _ = await uow.resources.search(_query("Task", ("business-status", "urn:test|delivered")))
        queued, _ = await uow.resources.search(_query("Task", ("business-status", "urn:test|queued")))
        accepted, _ = await uow.resources.search(_query("Task", ("status", "accepted")))
        requested, _ = await uow.resources.search(_query("Task", ("status", "requested")))
        by_code, _ = await uow.resources.search(_query("Task", ("code", "urn:test|platform-intake")))
        first = await uow.resources.get_version("Task", created[0].id, 1)
    assert {stored.version_id for stored in now.values()} == {2}
    assert {stored.content["businessStatus"]["coding"][0]["code"] for stored in now.values()} == {"delivered"}
    assert (delivered, queued, accepted, requested, by_code) == (3, 0, 1, 2, 3)  # an unchanged row stays
    assert first is not None and first.content["businessStatus"]["coding"][0]["code"] == "queued"
    # A version that is no longer current (read without the lock, against the contract) overwrites nothing: its
    # next version exists already, and the whole transaction fails.
    with pytest.raises(DuplicateKey):
        async with UnitOfWork(database) as uow:
            await uow.resources.update_many([(created[1], task("failed"))])
            await uow.commit()
    async with UnitOfWork(database, write=False) as uow:
        still = await uow.resources.get("Task", created[1].id)
    assert (
        still is not None
        and still.version_id == 2
        and still.content["businessStatus"]["coding"][0]["code"] == "delivered"
    )


async def _stored_versions(database: Database) -> dict[str, list[tuple[str, int, str | None]]]:
    """What each table holds: (id, version, method) of every row of ``resources`` and of ``resource_versions``."""
    async with database.engine.connect() as connection:
        return {
            table.name: sorted(
                (row.id, row.version_id, row.method)
                for row in await connection.execute(sa.select(table.c.id, table.c.version_id, table.c.method))
            )
            for table in (resources, resource_versions)
        }


async def test_each_version_is_stored_once_and_history_reads_them_all(database: Database) -> None:
    """A resource's current version is in ``resources`` only; an update moves the version it replaces, as it was
    stored, to ``resource_versions`` — by ``update`` and by ``update_many`` alike. History, vread and the history of
    the type still show every version, with the method that wrote it."""
    async with UnitOfWork(database) as uow:
        patient = uow.resources.add({"resourceType": "Patient", "gender": "female"})
        task = uow.resources.add({"resourceType": "Task", "status": "requested", "intent": "order"})
        await uow.commit()
    assert await _stored_versions(database) == {
        "resources": sorted([(patient.id, 1, "POST"), (task.id, 1, "POST")]),
        "resource_versions": [],
    }
    async with UnitOfWork(database) as uow:
        current = await uow.resources.get("Patient", patient.id)
        assert current is not None
        second = await uow.resources.update(current, {"resourceType": "Patient", "gender": "male"}, method="PATCH")
        tasks = await uow.resources.get_many([("Task", task.id)], for_update=True)
        (task_2,) = await uow.resources.update_many(
            [(tasks[("Task", task.id)], {"resourceType": "Task", "status": "accepted", "intent": "order"})]
        )
        await uow.commit()
    assert second is not None
    assert await _stored_versions(database) == {
        "resources": sorted([(patient.id, 2, "PATCH"), (task.id, 2, "PUT")]),
        "resource_versions": sorted([(patient.id, 1, "POST"), (task.id, 1, "POST")]),
    }
    async with UnitOfWork(database, write=False) as uow:
        history = await uow.resources.history("Patient", patient.id)
        first = await uow.resources.get_version("Patient", patient.id, 1)
        latest = await uow.resources.get_version("Patient", patient.id, 2)
        missing = await uow.resources.get_version("Patient", patient.id, 3)
        total, page = await uow.resources.versions(None, None, 10, 0, "Task")
        everything, _ = await uow.resources.versions(None, None, 10, 0)
    assert [(stored.version_id, stored.method) for stored in history] == [(2, "PATCH"), (1, "POST")]
    assert first is not None and first.content == patient.content  # as stored, byte for byte
    assert latest is not None and latest.content == second.content and missing is None
    assert total == 2 and [(stored.version_id, stored.method) for stored in page] == [(2, "PUT"), (1, "POST")]
    assert page[0].content == task_2.content and page[1].content == task.content
    assert everything == 4
