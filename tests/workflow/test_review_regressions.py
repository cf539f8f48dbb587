"""What a code review found, kept found: each test is one defect that was fixed."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import httpx
import pytest
import respx

from gateway.fhir.primitives import utc_now
from gateway.routing.config import RoutingTable
from gateway.routing.delivery import DeliverySettings, Dispatcher
from gateway.store import Database, UnitOfWork
from gateway.workflow.deadlines import escalate_due
from tests.conftest import load_example
from tests.workflow.test_decisions_api import _gp_validation

FHIR_JSON = {"content-type": "application/fhir+json"}
PARIS = "https://dac75.example.org/fhir/$process-message"


def _ins(bundle: dict[str, Any]) -> str:
    patient = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    return str(next(i["value"] for i in patient["identifier"] if i["system"] == "urn:oid:1.2.250.1.213.1.4.8"))


@respx.mock
async def test_an_opposition_stops_a_delivery_still_queued(
    client: httpx.AsyncClient, database: Database, routing: RoutingTable
) -> None:
    bundle = load_example("referral-gp.json")
    assert (await client.post("/fhir", json=bundle, headers=FHIR_JSON)).status_code == 200
    deny = {
        "resourceType": "Consent",
        "status": "active",
        "scope": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"identifier": {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": _ins(bundle)}},
        "policyRule": {"text": "CSP art. L1110-12"},
        "provision": {"type": "deny"},
    }
    assert (await client.post("/fhir/Consent", json=deny, headers=FHIR_JSON)).status_code == 201
    platform = respx.post(PARIS).mock(return_value=httpx.Response(200))
    async with httpx.AsyncClient() as http:
        await Dispatcher(database, routing, http, DeliverySettings(base_url="http://gateway.test/fhir")).deliver_due()
    sent = [call.request.content for call in platform.calls]
    assert not any(b"referral-request" in body for body in sent)  # the patient's data never left
    async with UnitOfWork(database, write=False) as uow:
        entries = [e for e in await uow.outbox.entries() if e.event == "referral-request"]
    assert [(e.status, (e.last_error or "").startswith("not sent")) for e in entries] == [("dead", True)]


async def test_referral_update_only_for_forwarded_referrals(client: httpx.AsyncClient) -> None:
    bundle = load_example("referral-gp.json")
    await client.post("/fhir", json=bundle, headers=FHIR_JSON)
    service_request = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest")
    update = {
        "resourceType": "Bundle",
        "type": "message",
        "timestamp": "2026-11-23T10:00:00Z",
        "entry": [
            {
                "fullUrl": "urn:uuid:0b2ee0f5-0000-4000-8000-000000000001",
                "resource": {
                    "resourceType": "MessageHeader",
                    "id": "0b2ee0f5-0000-4000-8000-000000000001",
                    "eventCoding": {
                        "system": "https://fhir.dac-gateway.org/CodeSystem/dac-message-event",
                        "code": "referral-update",
                    },
                    "source": {"endpoint": "https://someone.example/fhir"},
                    "focus": [{"reference": "urn:uuid:0b2ee0f5-0000-4000-8000-000000000002"}],
                },
            },
            {
                "fullUrl": "urn:uuid:0b2ee0f5-0000-4000-8000-000000000002",
                "resource": service_request | {"status": "entered-in-error", "subject": {"reference": "Patient/x"}},
            },
        ],
    }
    response = await client.post("/fhir/$process-message", json=update, headers=FHIR_JSON)
    assert response.status_code == 422
    found = (await client.get("/fhir/ServiceRequest", params={"status": "active"})).json()
    assert found["total"] == 1


@pytest.mark.parametrize(
    ("change", "status"),
    [({"note": 5}, 422), ({"businessStatus": "lol"}, 422), ({"text": {"status": "generated", "div": "x"}}, 422)],
)
async def test_a_decision_is_a_valid_task(client: httpx.AsyncClient, change: dict[str, Any], status: int) -> None:
    _, task = await _gp_validation(client)
    response = await client.put(
        f"/fhir/Task/{task['id']}", json=task | change, headers=FHIR_JSON | {"if-match": 'W/"1"'}
    )
    assert response.status_code == status, response.text


async def test_odd_patch_and_provenance_headers_are_400(client: httpx.AsyncClient) -> None:
    _, task = await _gp_validation(client)
    patch = await client.patch(
        f"/fhir/Task/{task['id']}",
        json=[{"op": "replace", "path": "", "value": "x"}],
        headers={"content-type": "application/json-patch+json", "if-match": 'W/"1"'},
    )
    assert patch.status_code == 400
    header = (
        '{"resourceType":"Provenance","agent":[{"who":{"reference":"Organization/x"},"onBehalfOf":{"reference":{}}}]}'
    )
    response = await client.put(
        f"/fhir/Task/{task['id']}",
        json=task | {"status": "accepted"},
        headers=FHIR_JSON | {"if-match": 'W/"1"', "x-provenance": header},
    )
    assert response.status_code == 400


async def test_a_cancelled_validation_withdraws_the_waiting_referral(client: httpx.AsyncClient) -> None:
    service_request, task = await _gp_validation(client)
    cancelled = task | {"status": "cancelled", "statusReason": {"text": "demande retirée par l'infirmière"}}
    assert (
        await client.put(f"/fhir/Task/{task['id']}", json=cancelled, headers=FHIR_JSON | {"if-match": 'W/"1"'})
    ).status_code == 200
    after = (await client.get(f"/fhir/ServiceRequest/{service_request['id']}")).json()
    assert after["status"] == "revoked"
    assert after["extension"][-1]["valueCodeableConcept"]["coding"][0]["code"] == "withdrawn"


async def test_a_received_validation_is_still_escalated(
    client: httpx.AsyncClient, database: Database, routing: RoutingTable
) -> None:
    _, task = await _gp_validation(client)
    received = copy.deepcopy(task) | {"status": "received"}
    assert (
        await client.put(f"/fhir/Task/{task['id']}", json=received, headers=FHIR_JSON | {"if-match": 'W/"1"'})
    ).status_code == 200
    assert await escalate_due(database, utc_now() + timedelta(days=30), routing=routing) == 1


async def test_an_unexpected_error_is_a_500_outcome_with_the_request_id(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gateway.api.routes.system as system

    def broken(base_url: str) -> dict[str, Any]:
        raise RuntimeError("boom")

    monkeypatch.setattr(system, "capability_statement", broken)
    response = await client.get("/fhir/metadata", headers={"x-request-id": "req-42"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "req-42"
    assert response.json()["issue"][0]["details"]["coding"][0]["code"] == "internal-error"


@respx.mock
async def test_an_endpoint_that_can_never_work_is_a_dead_letter(
    client: httpx.AsyncClient, database: Database, routing: RoutingTable
) -> None:
    from gateway.fhir.primitives import new_id

    answer = (await client.post("/fhir", json=load_example("referral-gp.json"), headers=FHIR_JSON)).json()
    focus = next(e["response"]["location"] for e in answer["entry"] if "/ServiceRequest/" in e["fullUrl"])
    respx.post(PARIS).mock(return_value=httpx.Response(200))
    async with UnitOfWork(database) as uow:
        uow.outbox.enqueue(
            id=new_id(), destination="sender:x", endpoint="http://[::1/fhir", event="referral-update",
            payload={"focus": focus.split("/_history")[0]}, now=utc_now(),
        )  # fmt: skip
        await uow.commit()
    async with httpx.AsyncClient() as http:
        await Dispatcher(database, routing, http, DeliverySettings(base_url="http://gateway.test/fhir")).deliver_due()
    async with UnitOfWork(database, write=False) as uow:
        (entry,) = [e for e in await uow.outbox.entries() if e.destination == "sender:x"]
    assert (entry.status, entry.last_error) == ("dead", "invalid endpoint (InvalidURL)")
