"""GP validation deadlines (DESIGN §3 step 3, §11 "Escalation is told"): the scan reads the open validations only
(``pending_deadlines``), escalates a due one once whatever the number of workers, and the platform is sent a
``contact-gp`` message carrying the referral — never for a revoked referral."""

from __future__ import annotations

import asyncio
import copy
import json
import random
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import respx

from gateway.fhir.primitives import utc_now
from gateway.routing.config import RoutingTable
from gateway.routing.delivery import DeliverySettings, Dispatcher
from gateway.store import Database, UnitOfWork
from gateway.workflow import deadlines
from gateway.workflow.deadlines import escalate_due
from tests.conftest import load_example
from tests.workflow.test_decisions_api import _gp_validation, pta_2016_referral
from tests.workflow.test_opposition import INS_NIR, _consent_deny

FHIR_JSON = {"content-type": "application/fhir+json"}
BASE = "http://gateway.test/fhir"
HAINAUT = "https://dac59-hainaut.example.org/fhir/$process-message"  # Valenciennes: pta-2016
EVENT_SYSTEM = "https://fhir.dac-gateway.org/CodeSystem/dac-message-event"
LATER = timedelta(days=30)


async def _pending(database: Database) -> list[tuple[str, datetime]]:
    async with UnitOfWork(database, write=False) as uow:
        return await uow.deadlines.all()


async def _entries(database: Database) -> list[Any]:
    async with UnitOfWork(database, write=False) as uow:
        return await uow.outbox.entries()


async def _held(client: httpx.AsyncClient, suffix: str) -> dict[str, Any]:
    """A nurse's referral held for the GP (pta-2016): its gp-validation Task."""
    response = await client.post("/fhir", json=pta_2016_referral(suffix), headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    location = next(e["response"]["location"] for e in response.json()["entry"] if "/ServiceRequest/" in e["fullUrl"])
    tasks = (await client.get("/fhir/Task", params={"focus": location.split("/_history")[0]})).json()["entry"]
    (task,) = [t["resource"] for t in tasks if t["resource"]["code"]["coding"][0]["code"] == "gp-validation"]
    return task


async def _decide(client: httpx.AsyncClient, task: dict[str, Any], changes: dict[str, Any]) -> None:
    version = task["meta"]["versionId"]
    answer = await client.put(
        f"/fhir/Task/{task['id']}",
        json=copy.deepcopy(task) | changes,
        headers=FHIR_JSON | {"if-match": f'W/"{version}"'},
    )
    assert answer.status_code == 200, answer.text


def _dispatcher(database: Database, routing: RoutingTable, client: httpx.AsyncClient) -> Dispatcher:
    settings = DeliverySettings(base_url=BASE, backoff_base=0.001, backoff_cap=0.002)
    return Dispatcher(database, routing, client, settings, rng=random.Random(7))


async def _due_now(database: Database) -> None:
    import sqlalchemy as sa

    from gateway.store.tables import outbox

    async with database.engine.begin() as connection:
        await connection.execute(sa.update(outbox).values(next_attempt_at=utc_now() - timedelta(seconds=1)))


async def test_the_scan_reads_the_waiting_validations_only(
    client: httpx.AsyncClient, database: Database, routing: RoutingTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decided Tasks leave no row: their deadlines passing costs the scan nothing (no transaction of theirs)."""
    accepted, rejected, received, waiting = [await _held(client, f"-{n}") for n in range(4)]
    rows = await _pending(database)
    assert {task for task, _ in rows} == {accepted["id"], rejected["id"], received["id"], waiting["id"]}
    deadline = datetime.fromisoformat(waiting["restriction"]["period"]["end"].replace("Z", "+00:00"))
    assert dict(rows)[waiting["id"]] == deadline
    await _decide(client, accepted, {"status": "accepted"})
    await _decide(client, rejected, {"status": "rejected", "statusReason": {"text": "suivi au cabinet"}})
    await _decide(client, received, {"status": "received"})  # still waiting for the GP's answer
    assert {task for task, _ in await _pending(database)} == {received["id"], waiting["id"]}

    looked_at: list[str] = []
    escalate_one = deadlines._escalate

    async def counted(database: Database, routing: RoutingTable, task_id: str, now: datetime) -> int:
        looked_at.append(task_id)
        return await escalate_one(database, routing, task_id, now)

    monkeypatch.setattr(deadlines, "_escalate", counted)
    assert await escalate_due(database, routing=routing) == 0  # not due yet: not even looked at
    assert looked_at == []
    assert await escalate_due(database, utc_now() + LATER, routing=routing) == 2
    assert sorted(looked_at) == sorted([received["id"], waiting["id"]])
    assert await _pending(database) == []
    looked_at.clear()
    assert await escalate_due(database, utc_now() + LATER, routing=routing) == 0
    assert looked_at == []  # escalated and decided alike: nothing left to read


async def test_a_round_is_bounded_and_the_next_takes_the_rest(
    client: httpx.AsyncClient, database: Database, routing: RoutingTable
) -> None:
    for n in range(3):
        await _held(client, f"-{n}")
    later = utc_now() + LATER
    assert await escalate_due(database, later, routing=routing, limit=2) == 2
    assert len(await _pending(database)) == 1
    assert await escalate_due(database, later, routing=routing, limit=2) == 1
    assert await _pending(database) == []


async def test_a_stale_row_is_dropped_and_a_moved_deadline_moves_its_row(
    client: httpx.AsyncClient, database: Database, routing: RoutingTable
) -> None:
    """The Task is the truth: a row left behind by a path that forgot it costs one look, once."""
    task = await _held(client, "")
    async with UnitOfWork(database) as uow:
        uow.deadlines.add("no-such-task", utc_now() - timedelta(days=1))
        await uow.commit()
    assert await escalate_due(database, routing=routing) == 0
    assert [row for row, _ in await _pending(database)] == [task["id"]]

    async with UnitOfWork(database) as uow:  # a row due too early: the Task's deadline is later
        await uow.deadlines.move(task["id"], utc_now() - timedelta(days=1))
        await uow.commit()
    assert await escalate_due(database, routing=routing) == 0
    ((_, due),) = await _pending(database)
    assert due > utc_now() + timedelta(days=4)


async def test_two_workers_escalate_a_due_validation_once(
    client: httpx.AsyncClient, database: Database, routing: RoutingTable
) -> None:
    service_request, _ = await _gp_validation(client)
    later = utc_now() + LATER
    assert sorted(await asyncio.gather(*(escalate_due(database, later, routing=routing) for _ in range(2)))) == [0, 1]
    (entry,) = await _entries(database)
    assert (entry.event, entry.destination) == ("contact-gp", "dac-59-hainaut")
    assert entry.payload["focus"] == f"ServiceRequest/{service_request['id']}"
    contact = (await client.get("/fhir/Task", params={"code": "contact-gp"})).json()
    assert contact["total"] == 1 and entry.task_id == contact["entry"][0]["resource"]["id"]
    assert await _pending(database) == []


@respx.mock
async def test_the_platform_is_sent_the_referral_to_contact_the_gp(
    client: httpx.AsyncClient, database: Database, routing: RoutingTable
) -> None:
    service_request, task = await _gp_validation(client)
    assert await escalate_due(database, utc_now() + LATER, routing=routing) == 1
    route = respx.post(HAINAUT).mock(side_effect=[httpx.Response(503), httpx.Response(200)])
    async with httpx.AsyncClient() as http:
        dispatcher = _dispatcher(database, routing, http)
        for _ in range(2):
            await _due_now(database)
            await dispatcher.deliver_due()
    (entry,) = await _entries(database)
    assert entry.status == "delivered" and entry.attempts == 2
    messages = [json.loads(call.request.content) for call in route.calls]
    assert {m["entry"][0]["resource"]["id"] for m in messages} == {entry.id}  # the same header id on each retry
    message = messages[-1]
    header = message["entry"][0]["resource"]
    assert header["eventCoding"] == {"system": EVENT_SYSTEM, "code": "contact-gp"}
    assert header["focus"] == [{"reference": f"{BASE}/ServiceRequest/{service_request['id']}"}]
    resources = [e["resource"] for e in message["entry"][1:]]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for resource in resources:
        by_type.setdefault(resource["resourceType"], []).append(resource)
    assert {"ServiceRequest", "Patient", "PractitionerRole", "Consent", "CareTeam", "Task"} <= set(by_type)
    (patient,) = by_type["Patient"]
    ins = [i["value"] for i in patient["identifier"] if i["system"] == INS_NIR]
    assert ins and ins[0] in json.dumps(pta_2016_referral())  # the patient's INS, as posted
    tasks = {t["code"]["coding"][0]["code"]: t for t in by_type["Task"]}
    assert tasks["gp-validation"]["businessStatus"]["coding"][0]["code"] == "escalated"
    assert tasks["contact-gp"]["partOf"] == [{"reference": f"Task/{task['id']}"}]
    assert tasks["contact-gp"]["owner"]["reference"] == service_request["performer"][0]["reference"]
    # The contact-gp Task is the platform's to move: its delivery does not write on it.
    contact = (await client.get(f"/fhir/Task/{tasks['contact-gp']['id']}")).json()
    assert contact["businessStatus"]["coding"][0]["code"] == "created" and contact["meta"]["versionId"] == "1"


async def _oppose(client: httpx.AsyncClient) -> None:
    bundle = pta_2016_referral()
    patient = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    ins = next(i["value"] for i in patient["identifier"] if i["system"] == INS_NIR)
    answer = await client.post("/fhir/Consent", json=_consent_deny(ins), headers=FHIR_JSON)
    assert answer.status_code == 201, answer.text


@respx.mock
async def test_a_revoked_referral_is_never_escalated_nor_sent(
    client: httpx.AsyncClient, database: Database, routing: RoutingTable
) -> None:
    _, task = await _gp_validation(client)
    await _oppose(client)  # the patient objects while the GP has not answered
    assert await _pending(database) == []  # its validation cancelled: nothing waits
    assert await escalate_due(database, utc_now() + LATER, routing=routing) == 0
    assert (await client.get("/fhir/Task", params={"code": "contact-gp"})).json()["total"] == 0
    assert await _entries(database) == []

    # A row left behind (as by a path that forgot it) changes nothing: the referral is not held any more.
    async with UnitOfWork(database) as uow:
        uow.deadlines.add(task["id"], utc_now() - timedelta(days=1))
        await uow.commit()
    assert await escalate_due(database, utc_now() + LATER, routing=routing) == 0
    assert await _entries(database) == [] and await _pending(database) == []
    route = respx.post(HAINAUT).mock(return_value=httpx.Response(200))
    async with httpx.AsyncClient() as http:
        await _dispatcher(database, routing, http).deliver_due()
    assert route.call_count == 0


@respx.mock
async def test_an_opposition_after_the_escalation_stops_its_message(
    client: httpx.AsyncClient, database: Database, routing: RoutingTable
) -> None:
    """Escalated, then the patient objects before the message left: nothing of the patient leaves (DESIGN §11)."""
    await _gp_validation(client)
    assert await escalate_due(database, utc_now() + LATER, routing=routing) == 1
    await _oppose(client)
    route = respx.post(HAINAUT).mock(return_value=httpx.Response(200))
    async with httpx.AsyncClient() as http:
        dispatcher = _dispatcher(database, routing, http)
        for _ in range(3):
            await _due_now(database)
            await dispatcher.deliver_due()
    assert route.call_count == 0
    entries = {entry.event: entry for entry in await _entries(database)}
    assert entries["contact-gp"].status == "dead" and "revoked" in str(entries["contact-gp"].last_error)
    assert entries["referral-update"].status == "dead"  # the platform never received the referral


@respx.mock
async def test_a_platform_reached_by_escalation_is_told_of_a_later_opposition(
    client: httpx.AsyncClient, database: Database, routing: RoutingTable
) -> None:
    service_request, _ = await _gp_validation(client)
    assert await escalate_due(database, utc_now() + LATER, routing=routing) == 1
    route = respx.post(HAINAUT).mock(return_value=httpx.Response(200))
    async with httpx.AsyncClient() as http:
        dispatcher = _dispatcher(database, routing, http)
        await _due_now(database)  # escalated "30 days later": its message is due then
        await dispatcher.deliver_due()
        await _oppose(client)
        await dispatcher.deliver_due()
    events = [json.loads(call.request.content)["entry"][0]["resource"]["eventCoding"]["code"] for call in route.calls]
    assert events == ["contact-gp", "referral-update"]
    update = json.loads(route.calls[-1].request.content)
    kinds = sorted(e["resource"]["resourceType"] for e in update["entry"])
    assert "Patient" not in kinds and "Consent" not in kinds  # the minimal update
    (revoked,) = [e["resource"] for e in update["entry"] if e["resource"]["resourceType"] == "ServiceRequest"]
    assert revoked["status"] == "revoked" and revoked["id"] == service_request["id"]


async def test_a_contact_gp_message_sent_to_the_gateway_is_refused(client: httpx.AsyncClient) -> None:
    """contact-gp is what the gateway sends a platform, not what it takes in: a 422 naming the event."""
    message = load_example("message-referral-gp.json")
    message["entry"][0]["resource"]["eventCoding"]["code"] = "contact-gp"
    answer = await client.post("/fhir/$process-message", json=message, headers=FHIR_JSON)
    assert answer.status_code == 422, answer.text
    (issue,) = answer.json()["issue"]
    assert issue["details"]["coding"][0]["code"] == "message-event-unsupported"
    assert issue["expression"] == ["Bundle.entry[0].resource.eventCoding"]
