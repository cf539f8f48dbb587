"""A referral costs the same whatever came before it (issue 21, target 1): the n-th referral of one patient — from
one requester, to one platform, naming one GP — runs the statements the second did and reads as many stored
resources, with authentication off and on. Structural, not timed: counted from SQLAlchemy's cursor events and
from the rows decoded into ``StoredResource``; on SQLite, every look-up's plan goes by an index to its rows (no
walk over a table, nor over every row of a resource type)."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from gateway.store import Database
from gateway.store.repository import StoredResource
from tests.auth.conftest import SENDER, token_of
from tests.support.databases import USES_POSTGRESQL
from tests.support.referrals import fresh

FHIR_JSON = {"content-type": "application/fhir+json"}
#: Referrals of one patient before the one measured: each brought a Consent and a CareTeam (which the opposition
#: look-up read, every one, before issue 21), a ServiceRequest, Tasks and memberships of the same Patient.
HISTORY = 20


@dataclass
class Cost:
    statements: list[tuple[str, Any]] = field(default_factory=list)
    resources_read: int = 0


@pytest.fixture
def costs(database: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Cost | None]]:
    """Append a ``Cost`` to the list to start counting into it, None to stop counting."""
    counting: list[Cost | None] = []
    from_row = StoredResource.from_row.__func__  # type: ignore[attr-defined]

    def counted(cls: type[StoredResource], row: Any) -> StoredResource:
        if counting and (cost := counting[-1]) is not None:
            cost.resources_read += 1
        return from_row(cls, row)  # type: ignore[no-any-return]

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if counting and (cost := counting[-1]) is not None:
            cost.statements.append((statement, parameters))

    monkeypatch.setattr(StoredResource, "from_row", classmethod(counted))
    event.listen(database.engine.sync_engine, "before_cursor_execute", record)
    yield counting
    event.remove(database.engine.sync_engine, "before_cursor_execute", record)


def _again(bundle: dict[str, Any], n: int) -> dict[str, Any]:
    """The same referral's patient, requester, hospital and GP, under new ServiceRequest and Bundle identifiers."""
    again = copy.deepcopy(bundle)
    again["identifier"]["value"] += f"-again-{n}"
    service_request = next(e for e in again["entry"] if e["resource"]["resourceType"] == "ServiceRequest")
    service_request["resource"]["identifier"][0]["value"] += f"-again-{n}"
    return again


def _shape(cost: Cost) -> list[str]:
    """The statements without their values (SQLite's IN lists and PostgreSQL's arrays vary in length)."""
    return [re.sub(r"\?(, \?)*|\$\d+", "?", " ".join(statement.split())) for statement, _ in cost.statements]


async def _plans(database: Database, cost: Cost) -> list[str]:
    steps = []
    async with database.engine.connect() as connection:
        for statement, parameters in cost.statements:
            if statement.lstrip().startswith("SELECT"):
                rows = (await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)).all()
                steps += [str(row[3]) for row in rows]
    return steps


@pytest.mark.parametrize("auth", ["off", "on"])
async def test_a_patients_nth_referral_costs_what_its_second_did(
    auth: str,
    client: httpx.AsyncClient,
    secure: httpx.AsyncClient,
    database: Database,
    costs: list[Cost | None],
) -> None:
    http, headers = (client, FHIR_JSON) if auth == "off" else (secure, FHIR_JSON | await token_of(secure, SENDER))
    first = fresh(tag=f"history-{auth}")
    for n in range(HISTORY + 2):
        costs.append(Cost() if n in (1, HISTORY + 1) else None)
        answer = await http.post("/fhir", json=_again(first, n), headers=headers)
        assert answer.status_code == 200, answer.text
        stored = {e["response"]["location"].split("/")[0] for e in answer.json()["entry"]}
        assert "ServiceRequest" in stored
    second, last = costs[1], costs[-1]
    assert second is not None and last is not None
    assert _shape(last) == _shape(second)
    # Before issue 21 the opposition look-up read every Consent of the patient: 10 resources, then 30.
    assert last.resources_read == second.resources_read <= 10
    if not USES_POSTGRESQL:  # PostgreSQL plans on its statistics; SQLite on its indexes alone, as here
        plan = await _plans(database, last)
        assert plan
        walks = [s for s in plan if s.startswith("SCAN") or s.endswith("(resource_type=?)")]
        assert not walks, plan
