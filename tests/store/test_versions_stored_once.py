"""Versions stored once (0013): what an update moves to ``resource_versions`` is the version as it was written,
and two writers of the same version still leave one winner and every version readable."""

from __future__ import annotations

import asyncio

import pytest

from gateway.store import Database, UnitOfWork


async def test_a_version_replaced_in_its_own_unit_of_work_is_kept_as_it_was_written(database: Database) -> None:
    """A resource created (or updated) and updated again in one unit of work: the version replaced is moved to
    ``resource_versions`` as it was written, not as its content reads when the update runs — the content shares
    the caller's nested objects (``_with_meta`` copies the top level only), which the caller may change since."""
    resource = {"resourceType": "Task", "status": "requested", "intent": "order", "input": [{"valueString": "a"}]}
    async with UnitOfWork(database) as uow:
        first = uow.resources.add(resource)
        resource["input"][0]["valueString"] = "b"  # the caller goes on with its own dict
        second = await uow.resources.update(first, resource)
        assert second is not None
        resource["input"][0]["valueString"] = "c"
        third = await uow.resources.update(second, resource)
        assert third is not None
        await uow.commit()
    async with UnitOfWork(database, write=False) as uow:
        history = await uow.resources.history("Task", first.id)
    assert [(stored.version_id, stored.content["input"][0]["valueString"]) for stored in history] == [
        (3, "c"),
        (2, "b"),
        (1, "a"),
    ]


async def test_two_writers_of_the_same_version_leave_one_winner_and_every_version(
    database: Database, database_url: str
) -> None:
    """Two units of work update version 1 at once: one writes version 2, the other is refused (None, a 409/412
    for the API) — no duplicate key, no lost version."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite serialises its writers: the race is PostgreSQL's")
    async with UnitOfWork(database) as uow:
        created = uow.resources.add({"resourceType": "Organization", "name": "A"})
        await uow.commit()
    first_wrote = asyncio.Event()

    async def write(name: str, wait: bool) -> bool:
        async with UnitOfWork(database) as uow:
            current = await uow.resources.get("Organization", created.id)
            assert current is not None and current.version_id == 1
            if wait:
                await first_wrote.wait()
            updated = await uow.resources.update(current, {"resourceType": "Organization", "name": name})
            if not wait:
                first_wrote.set()
                await asyncio.sleep(0.2)  # the other one now waits on the row's lock
            if updated is None:
                return False
            await uow.commit()
            return True

    results = await asyncio.gather(write("B", False), write("C", True))
    assert results == [True, False]
    async with UnitOfWork(database, write=False) as uow:
        history = await uow.resources.history("Organization", created.id)
    assert [(stored.version_id, stored.content["name"]) for stored in history] == [(2, "B"), (1, "A")]
