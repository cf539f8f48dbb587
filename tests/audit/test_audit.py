"""The audit trail: one AuditEvent per interaction (BALP shape), a change's in the change's transaction, and
searchable by the operator only."""

from __future__ import annotations

import base64
import random
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest
import respx
import sqlalchemy as sa
from fastapi import FastAPI

from gateway.audit.buffer import AuditBuffer
from gateway.audit.context import AuditContext, close_audit, open_audit
from gateway.fhir.primitives import utc_now
from gateway.fhir.search import parse_search
from gateway.intake import read_referral, take_in
from gateway.routing.config import RoutingTable
from gateway.routing.delivery import DeliverySettings, Dispatcher
from gateway.store import Database, UnitOfWork
from gateway.store.tables import outbox, resources
from gateway.store.unit_of_work import DuplicateKey
from tests.auth.conftest import OPERATOR, PLATFORM, SENDER, token_of
from tests.conftest import load_example
from tests.support.referrals import fresh

FHIR_JSON = {"Content-Type": "application/fhir+json"}


async def audit_events(database: Database, app: FastAPI | None = None) -> list[dict[str, Any]]:
    if app is not None:
        await app.state.audit.flush()
    async with UnitOfWork(database, write=False) as uow:
        _, found = await uow.resources.search(
            parse_search("AuditEvent", [("_count", "500")], default_count=500, max_count=500)
        )
    return [stored.content for stored in found]


def subtype(event: dict[str, Any]) -> str:
    return str(event["subtype"][0]["code"])


def entities(event: dict[str, Any]) -> list[str]:
    return [e["what"]["reference"] for e in event.get("entity", []) if "reference" in e.get("what", {})]


@pytest.fixture
async def posted(secure: httpx.AsyncClient) -> tuple[dict[str, str], str, str]:
    """A referral posted by the sender: (its headers, the ServiceRequest reference, its platform-intake Task)."""
    headers = await token_of(secure, SENDER)
    answer = await secure.post("/fhir", json=fresh(commune="75056"), headers=headers | FHIR_JSON)
    assert answer.status_code == 200, answer.text
    service_request = next(
        e["response"]["location"].split("/_history")[0]
        for e in answer.json()["entry"]
        if e["response"]["location"].startswith("ServiceRequest/")
    )
    found = await secure.get(
        "/fhir/Task", params={"focus": service_request, "code": "platform-intake"}, headers=headers
    )
    return headers, service_request, f"Task/{found.json()['entry'][0]['resource']['id']}"


async def test_a_referral_is_audited_in_its_transaction_with_what_it_wrote(
    secure_app: FastAPI, database: Database, posted: tuple[dict[str, str], str, str]
) -> None:
    _, service_request, task = posted
    async with UnitOfWork(database, write=False) as uow:  # before any buffer flush: written by the intake itself
        _, found = await uow.resources.search(parse_search("AuditEvent", [], default_count=50, max_count=50))
    (event,) = [stored.content for stored in found]
    assert subtype(event) == "transaction" and event["action"] == "C" and event["outcome"] == "0"
    assert event["type"]["code"] == "rest"
    written = {reference.split("/_history")[0] for reference in entities(event)}
    assert {service_request, task} <= written and any(r.startswith("Patient/") for r in written)
    client, gateway = event["agent"]
    assert client["requestor"] is True and client["who"]["identifier"]["value"] == "hospital"
    assert gateway["requestor"] is False
    assert event["source"]["observer"]["display"] == "DAC Gateway"
    assert "Dupont" not in str(event) and "141062901908789" not in str(event)  # references only


@pytest.mark.parametrize(
    ("what", "expected_subtype", "action"),
    [
        ("read", "read", "R"),
        ("vread", "vread", "R"),
        ("history", "history-instance", "R"),
        ("history-type", "history-type", "R"),
        ("history-system", "history-system", "R"),
        ("search", "search-type", "E"),
        ("search-post", "search-type", "E"),
        ("validate", "operation", "E"),
    ],
)
async def test_every_read_writes_one_audit_event(
    secure: httpx.AsyncClient,
    secure_app: FastAPI,
    database: Database,
    posted: tuple[dict[str, str], str, str],
    what: str,
    expected_subtype: str,
    action: str,
) -> None:
    headers, service_request, _ = posted
    before = len(await audit_events(database, secure_app))
    requests = {
        "read": lambda: secure.get(f"/fhir/{service_request}", headers=headers),
        "vread": lambda: secure.get(f"/fhir/{service_request}/_history/1", headers=headers),
        "history": lambda: secure.get(f"/fhir/{service_request}/_history", headers=headers),
        "history-type": lambda: secure.get("/fhir/ServiceRequest/_history", headers=headers),
        "history-system": lambda: secure.get("/fhir/_history", headers=headers),
        "search": lambda: secure.get("/fhir/ServiceRequest", params={"status": "active"}, headers=headers),
        "search-post": lambda: secure.post("/fhir/ServiceRequest/_search", data={"status": "active"}, headers=headers),
        "validate": lambda: secure.post("/fhir/$validate", json=fresh(), headers=headers | FHIR_JSON),
    }
    assert (await requests[what]()).status_code == 200
    events = await audit_events(database, secure_app)
    assert len(events) == before + 1
    event = [e for e in events if subtype(e) == expected_subtype][-1]  # the newest (sorted by _lastUpdated)
    assert event["action"] == action and event["outcome"] == "0"
    assert event["agent"][0]["who"]["identifier"]["value"] == "hospital"
    if what.startswith("search"):
        query = next(e for e in event["entity"] if "query" in e)
        assert base64.b64decode(query["query"]).decode() == "status=active"
        assert query["description"] == "ServiceRequest"
    elif what not in ("validate", "history-type", "history-system"):
        assert entities(event)[0].startswith(service_request)


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_a_task_decision_is_audited_with_the_task_and_its_provenance(
    secure: httpx.AsyncClient,
    secure_app: FastAPI,
    database: Database,
    posted: tuple[dict[str, str], str, str],
    method: str,
) -> None:
    _, _, task_reference = posted
    headers = await token_of(secure, PLATFORM)  # the platform-intake Task is the Paris platform's to decide
    task = (await secure.get(f"/fhir/{task_reference}", headers=headers)).json()
    version = {"If-Match": f'W/"{task["meta"]["versionId"]}"'}
    if method == "PUT":
        answer = await secure.put(
            f"/fhir/{task_reference}", json=task | {"status": "accepted"}, headers=headers | version | FHIR_JSON
        )
    else:
        patch = [{"op": "replace", "path": "/status", "value": "accepted"}]
        answer = await secure.patch(
            f"/fhir/{task_reference}",
            json=patch,
            headers=headers | version | {"Content-Type": "application/json-patch+json"},
        )
    assert answer.status_code == 200, answer.text
    (event,) = [e for e in await audit_events(database) if subtype(e) in ("update", "patch")]
    assert subtype(event) == {"PUT": "update", "PATCH": "patch"}[method] and event["action"] == "U"
    touched = entities(event)
    assert f"{task_reference}/_history/{int(task['meta']['versionId']) + 1}" in touched
    assert any(reference.startswith("Provenance/") for reference in touched)


async def test_refusals_are_audited_as_failures(
    secure: httpx.AsyncClient, secure_app: FastAPI, database: Database
) -> None:
    headers = await token_of(secure, SENDER)
    assert (await secure.get("/fhir/ServiceRequest/nope", headers=headers)).status_code == 404
    assert (await secure.get("/fhir/Patient")).status_code == 401
    invalid = {"resourceType": "Bundle", "type": "transaction", "entry": []}
    assert (await secure.post("/fhir", json=invalid, headers=headers | FHIR_JSON)).status_code in (400, 422)
    events = {subtype(e): e for e in await audit_events(database, secure_app)}
    assert events["read"]["outcome"] == "4" and entities(events["read"]) == ["ServiceRequest/nope"]
    assert events["search-type"]["agent"][0]["who"]["identifier"]["value"] == "anonymous"
    assert events["search-type"]["outcomeDesc"] == "HTTP 401"
    assert events["transaction"]["outcome"] == "4"


async def test_a_changes_audit_event_rolls_back_with_it(database: Database) -> None:
    """A unit of work that does not commit, or whose commit fails, leaves neither the change nor its event."""
    token = open_audit(AuditContext("create", "hospital"))
    try:
        async with UnitOfWork(database) as uow:
            uow.resources.add({"resourceType": "Organization", "name": "A"}, identity_keys=[("urn:test", "1")])
            await uow.commit()
        async with UnitOfWork(database) as uow:  # no commit: rolled back
            uow.resources.add({"resourceType": "Organization", "name": "B"})
        with pytest.raises(DuplicateKey):
            async with UnitOfWork(database) as uow:  # the same identity: the commit fails
                uow.resources.add({"resourceType": "Organization", "name": "C"}, identity_keys=[("urn:test", "1")])
                await uow.commit()
    finally:
        close_audit(token)
    async with database.engine.connect() as connection:
        rows = (await connection.execute(sa.select(resources.c.resource_type))).scalars().all()
    assert sorted(rows) == ["AuditEvent", "Organization"]


async def test_audit_events_are_searchable_by_the_operator_only(
    secure: httpx.AsyncClient, secure_app: FastAPI, posted: tuple[dict[str, str], str, str]
) -> None:
    headers, service_request, _ = posted
    await secure.get(f"/fhir/{service_request}", headers=headers)
    await secure.get("/fhir/ServiceRequest/unknown", headers=headers)
    await secure_app.state.audit.flush()
    # The sender's system/*.rs does not reach the audit trail: it is granted by name only.
    assert (await secure.get("/fhir/AuditEvent", headers=headers)).status_code == 403
    operator = await token_of(secure, OPERATOR)

    async def total(**params: str) -> int:
        answer = await secure.get("/fhir/AuditEvent", params=params, headers=operator)
        assert answer.status_code == 200, answer.text
        return int(answer.json()["total"])

    assert await total(subtype="read") == 2
    assert await total(subtype="read", outcome="4") == 1
    assert await total(entity=service_request) == 2  # the transaction and the read
    assert await total(agent="hospital") >= 4
    assert await total(agent="https://fhir.dac-gateway.org/client-id|hospital", subtype="transaction") == 1
    assert await total(date="ge2020-01-01", subtype="transaction") == 1
    assert await total(date="lt2020-01-01") == 0


async def test_with_authentication_off_the_audit_trail_is_readable(client: httpx.AsyncClient, app: FastAPI) -> None:
    """Regression: with GATEWAY_AUTH=off (every caller an operator allowed everything, README) the audit trail the
    CapabilityStatement lists was a 403 scope-insufficient: the development caller's system/*.cruds does not
    reach it."""
    await client.get("/fhir/ServiceRequest/unknown")
    await app.state.audit.flush()
    answer = await client.get("/fhir/AuditEvent", params={"subtype": "read"})
    assert answer.status_code == 200, answer.text
    (event,) = [e["resource"] for e in answer.json()["entry"]]
    assert event["outcome"] == "4"
    assert (await client.get(f"/fhir/AuditEvent/{event['id']}")).status_code == 200


async def test_the_capability_statement_lists_audit_event(secure: httpx.AsyncClient) -> None:
    statement = (await secure.get("/fhir/metadata")).json()
    audit = next(r for r in statement["rest"][0]["resource"] if r["type"] == "AuditEvent")
    assert {p["name"] for p in audit["searchParam"]} >= {"date", "agent", "entity", "subtype", "outcome"}


@respx.mock
async def test_every_delivery_attempt_is_audited_with_its_outcome(database: Database, routing: RoutingTable) -> None:
    outcome = await take_in(database, read_referral(load_example("referral-gp.json"), "transaction"), routing)
    respx.post("https://dac75.example.org/fhir/$process-message").mock(
        side_effect=[httpx.Response(503), httpx.Response(200, json={"resourceType": "Bundle", "type": "message"})]
    )
    settings = DeliverySettings(base_url="http://gateway.test/fhir", backoff_base=0.001, backoff_cap=0.002)
    async with httpx.AsyncClient() as http:
        dispatcher = Dispatcher(database, routing, http, settings, rng=random.Random(7))
        for _ in range(2):
            async with database.engine.begin() as connection:  # make the retry due now
                await connection.execute(sa.update(outbox).values(next_attempt_at=utc_now() - timedelta(seconds=1)))
            await dispatcher.deliver_due()
    deliveries = [e for e in await audit_events(database) if subtype(e) == "operation"]
    assert [e["outcome"] for e in deliveries] == ["4", "0"]
    # Each attempt's answer, for the console's list of attempts (DESIGN §14): the status, never a body.
    assert [e.get("outcomeDesc") for e in deliveries] == ["HTTP 503", "HTTP 200"]
    for event in deliveries:
        assert event["agent"][0]["who"]["identifier"]["value"] == "dac-gateway"
        assert event["agent"][1]["who"]["display"] == "dac-75"
        assert f"ServiceRequest/{outcome.service_request_id}" in entities(event)


async def test_the_buffer_keeps_its_events_while_the_database_is_away(database: Database) -> None:
    unreachable = AuditBuffer(Database("sqlite:////nonexistent-directory/audit.db"))
    unreachable.add({"resourceType": "AuditEvent", "recorded": "2026-11-29T00:00:00Z"})
    await unreachable.flush()
    assert len(unreachable._pending) == 1  # kept for the next flush
    buffer = AuditBuffer(database)
    buffer._pending = unreachable._pending
    await buffer.flush()
    assert len(await audit_events(database)) == 1 and not buffer._pending


@respx.mock
async def test_a_delivery_event_names_every_resource_it_shipped(database: Database, routing: RoutingTable) -> None:
    await take_in(database, read_referral(load_example("referral-gp.json"), "transaction"), routing)
    platform = respx.post("https://dac75.example.org/fhir/$process-message").mock(
        return_value=httpx.Response(200, json={"resourceType": "Bundle", "type": "message"})
    )
    async with httpx.AsyncClient() as http:
        await Dispatcher(database, routing, http, DeliverySettings(base_url="http://gateway.test/fhir")).deliver_due()
    (message,) = [call.request.content for call in platform.calls]
    carried = [
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in orjson.loads(message)["entry"]
        if e["resource"]["resourceType"] != "MessageHeader"
    ]
    assert {"Patient", "Practitioner", "CareTeam", "Task"} <= {reference.split("/")[0] for reference in carried}
    (delivery,) = [e for e in await audit_events(database) if subtype(e) == "operation"]
    assert set(carried) <= set(entities(delivery))
