"""Search features in the store, on SQLite and PostgreSQL alike: strings ignoring case and accents, the modifiers,
and paging by keyset that a concurrent writer cannot shift."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.fhir.primitives import utc_now
from gateway.fhir.search import parse_search
from gateway.store import Database, UnitOfWork
from gateway.store.repository import SearchPage
from gateway.store.tables import search_index


def _query(resource_type: str, *params: tuple[str, str], count: int = 20):  # type: ignore[no-untyped-def]
    return parse_search(resource_type, list(params), default_count=count, max_count=100)


async def _add(database: Database, *resources: dict[str, Any]) -> list[str]:
    async with UnitOfWork(database) as uow:
        ids = [uow.resources.add(resource).id for resource in resources]
        await uow.commit()
    return ids


async def _ids(database: Database, resource_type: str, *params: tuple[str, str]) -> set[str]:
    async with UnitOfWork(database, write=False) as uow:
        _, found = await uow.resources.search(_query(resource_type, *params))
    return {stored.id for stored in found}


def _person(resource_type: str, family: str, *given: str) -> dict[str, Any]:
    return {"resourceType": resource_type, "name": [{"family": family, "given": list(given)}]}


async def test_strings_ignore_case_and_accents_unless_exact(database: Database) -> None:
    """R4 search.html#string: a search matches the start of the value ignoring case and accents; :contains anywhere
    in it; :exact the whole value, case and accents included."""
    helene, leroy, marcel = await _add(
        database,
        _person("Practitioner", "Martin", "Hélène"),
        _person("Patient", "Leroy", "Anne"),
        _person("Practitioner", "Dupont", "Marcel"),
    )
    assert await _ids(database, "Practitioner", ("given", "helene")) == {helene}
    assert await _ids(database, "Practitioner", ("given", "HÉL")) == {helene}
    assert await _ids(database, "Patient", ("family", "LÉROY")) == {leroy}
    assert await _ids(database, "Practitioner", ("name", "dupont")) == {marcel}
    assert await _ids(database, "Practitioner", ("given:exact", "marcel")) == set()
    assert await _ids(database, "Practitioner", ("given:exact", "Marcel")) == {marcel}
    assert await _ids(database, "Practitioner", ("given:exact", "Helene")) == set()
    assert await _ids(database, "Practitioner", ("given:exact", "Hélène")) == {helene}
    assert await _ids(database, "Practitioner", ("given:exact", "Marc")) == set()  # the whole value
    assert await _ids(database, "Practitioner", ("given", "lene")) == set()  # the start of it
    assert await _ids(database, "Practitioner", ("given:contains", "LÈNE")) == {helene}
    assert await _ids(database, "Practitioner", ("name:contains", "pon")) == {marcel}
    assert await _ids(database, "Practitioner", ("given:contains", "%")) == set()  # no wildcard


async def test_name_finds_family_given_and_text(database: Database) -> None:
    """``name`` (family, given or text) finds each part of a name, with every string modifier and :missing, though
    the family and given names are indexed once, under ``family`` and ``given``."""
    martin, durand, texted, nameless = await _add(
        database,
        _person("Patient", "Martin", "Hélène"),
        _person("Patient", "Durand", "Anne", "Marie"),
        {"resourceType": "Patient", "name": [{"text": "Jean Leroy"}]},
        {"resourceType": "Patient", "gender": "male"},
    )
    assert await _ids(database, "Patient", ("name", "martin")) == {martin}
    assert await _ids(database, "Patient", ("name", "helene")) == {martin}
    assert await _ids(database, "Patient", ("name", "marie")) == {durand}
    assert await _ids(database, "Patient", ("name", "jean")) == {texted}
    assert await _ids(database, "Patient", ("name", "leroy")) == set()  # the start of the text, as before
    assert await _ids(database, "Patient", ("name:contains", "LEROY")) == {texted}
    assert await _ids(database, "Patient", ("name:exact", "Anne")) == {durand}
    assert await _ids(database, "Patient", ("name:exact", "anne")) == set()
    assert await _ids(database, "Patient", ("name", "martin,durand")) == {martin, durand}
    assert await _ids(database, "Patient", ("name", "martin"), ("given", "anne")) == set()
    assert await _ids(database, "Patient", ("name:missing", "true")) == {nameless}
    assert await _ids(database, "Patient", ("name:missing", "false")) == {martin, durand, texted}
    assert await _ids(database, "Patient", ("family", "jean")) == set()  # the text is no family name
    async with database.engine.connect() as connection:
        rows = await connection.execute(
            sa.select(search_index.c.param, search_index.c.value).where(search_index.c.resource_id == martin)
        )
        assert sorted(tuple(row) for row in rows) == [("family", "Martin"), ("given", "Hélène")]


async def test_missing_and_not(database: Database) -> None:
    """:missing=true finds the resources without the element (a reference by identifier alone is one), false those
    with it; :not finds those without any of the values — those without the element too (R4)."""
    active, female, none, by_identifier = await _add(
        database,
        {
            "resourceType": "Patient",
            "gender": "male",
            "active": True,
            "generalPractitioner": [{"reference": "Practitioner/1"}],
        },
        {"resourceType": "Patient", "gender": "female"},
        {"resourceType": "Patient"},
        {"resourceType": "Patient", "generalPractitioner": [{"identifier": {"system": "urn:rpps", "value": "1"}}]},
    )
    assert await _ids(database, "Patient", ("gender:missing", "true")) == {none, by_identifier}
    assert await _ids(database, "Patient", ("gender:missing", "false")) == {active, female}
    assert await _ids(database, "Patient", ("general-practitioner:missing", "true")) == {female, none}
    assert await _ids(database, "Patient", ("general-practitioner:missing", "false")) == {active, by_identifier}
    assert await _ids(database, "Patient", ("family:missing", "true")) == {active, female, none, by_identifier}
    assert await _ids(database, "Patient", ("birthdate:missing", "false")) == set()
    assert await _ids(database, "Patient", ("gender:not", "female")) == {active, none, by_identifier}
    assert await _ids(database, "Patient", ("gender:not", "female,male")) == {none, by_identifier}
    assert await _ids(database, "Patient", ("gender:not", "female"), ("gender:missing", "false")) == {active}


async def _walk(database: Database, *params: tuple[str, str], between: Any = None) -> list[str]:
    """The ids of every page of a search, followed as the next links would (its snapshot and cursor), running
    ``between`` after each page."""
    query = _query("Task", ("_count", "3"), *params)
    query = dataclasses.replace(query, snapshot=utc_now())
    seen: list[str] = []
    while True:
        async with UnitOfWork(database, write=False) as uow:
            assert query.snapshot is not None
            page: SearchPage = await uow.resources.page(query, query.snapshot)
        seen += [stored.id for stored in page.found]
        if page.next is None:
            return seen
        query = dataclasses.replace(query, cursor=page.next)
        if between is not None:
            await between()


def _task(code: str = "a") -> dict[str, Any]:
    return {"resourceType": "Task", "status": "requested", "intent": "order", "businessStatus": {"text": code}}


@pytest.mark.parametrize("sort", ["_lastUpdated", "-_lastUpdated"])
async def test_a_walk_sees_each_match_once_while_others_write(database: Database, sort: str) -> None:
    """Regression: offset paging under ``_sort=-_lastUpdated`` repeated a match and missed another when a Task
    was posted mid-walk (every page shifted by one). Between pages, a writer adds Tasks and updates Tasks already
    seen and not yet seen (an update moves one to the newest end): the walk sees every Task that existed at its
    first page exactly once, in order, and none created after it."""
    existing = await _add(database, *(_task() for _ in range(10)))
    created: list[str] = []
    step = 0

    async def write() -> None:
        nonlocal step
        created.extend(await _add(database, _task(), _task()))
        async with UnitOfWork(database) as uow:
            # One already seen (at the front of the walk), one not yet (at its end), each moved by its update.
            for task_id in (existing[step], existing[-1 - step]):
                current = await uow.resources.get("Task", task_id)
                assert current is not None
                await uow.resources.update(current, {**current.content, "status": "ready"})
            await uow.commit()
        step += 1

    undisturbed = await _walk(database, ("_sort", sort))
    assert set(undisturbed) == set(existing)
    seen = await _walk(database, ("_sort", sort), between=write)
    assert len(seen) == len(set(seen)), "a match repeated"
    assert set(seen) == set(existing), "a match missed, or one created during the walk shown"
    assert seen == undisturbed  # in the order of the first page's time: an update moved nothing
    assert step >= 3 and len(created) >= 6


async def test_a_walk_is_consistent_under_concurrent_writers(database: Database) -> None:
    """The same with writers running beside the walk rather than between its pages."""
    existing = set(await _add(database, *(_task() for _ in range(12))))
    stop = asyncio.Event()

    async def writer() -> None:
        while not stop.is_set():
            await _add(database, _task())
            await asyncio.sleep(0)

    task = asyncio.create_task(writer())
    try:
        seen = await _walk(database, ("_sort", "-_lastUpdated"), between=lambda: asyncio.sleep(0.01))
    finally:
        stop.set()
        await task
    assert len(seen) == len(set(seen)) and set(seen) == existing
