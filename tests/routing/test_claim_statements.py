"""The statements a claim sends for its messages have one text whatever the number of referrals claimed: on
PostgreSQL a statement asyncpg has not seen on that connection is prepared first (a round trip, and a parse and a plan
on the server), and an IN list is a new text for each length — a claim of 37 referrals after one of 36 (issue 21)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event

from gateway.store import Database, UnitOfWork
from tests.support.databases import USES_POSTGRESQL


@pytest.fixture
def statements(database: Database) -> Iterator[list[str]]:
    sent: list[str] = []

    def record(*args: Any) -> None:
        sent.append(" ".join(str(args[2]).split()))

    event.listen(database.engine.sync_engine, "before_cursor_execute", record)
    yield sent
    event.remove(database.engine.sync_engine, "before_cursor_execute", record)


@pytest.mark.skipif(not USES_POSTGRESQL, reason="PostgreSQL's arrays; SQLite prepares nothing across statements")
async def test_members_and_senders_of_any_number_of_referrals_are_one_statement(
    database: Database, statements: list[str]
) -> None:
    async with UnitOfWork(database) as uow:
        for n in range(3):
            uow.visibility.add_members(f"sr{n}", [("Patient", f"p{n}"), ("Consent", f"c{n}")])
            uow.visibility.add_sender(f"sr{n}", f"client{n}")
        await uow.commit()
    texts = []
    for ids in (["sr0"], ["sr0", "sr1", "sr2", "none"]):
        statements.clear()
        async with UnitOfWork(database, write=False) as uow:
            members = await uow.visibility.members_of(ids)
            senders = await uow.visibility.senders_of(ids)
        texts.append([s for s in statements if "referral_" in s])
    assert texts[0] == texts[1] and len(texts[0]) == 2
    assert members == {f"sr{n}": {("Patient", f"p{n}"), ("Consent", f"c{n}")} for n in range(3)}
    assert senders == {f"sr{n}": [f"client{n}"] for n in range(3)}
