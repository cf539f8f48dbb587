"""Every decision leaves a Provenance, written with it: the gateway's own (routing, holding, revoking at intake,
escalating, an opposition revoking open referrals) with the gateway as ``performer``, and listed among a referral's
generated entries when made at intake."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from gateway.fhir.primitives import utc_now
from gateway.routing.config import RoutingTable
from gateway.store import Database
from gateway.workflow.deadlines import escalate_due
from gateway.workflow.provenance import PROVENANCE_PARTICIPANT
from tests.conftest import load_example
from tests.support.referrals import resource
from tests.workflow.test_decisions_api import pta_2016_referral
from tests.workflow.test_opposition import _consent_deny, _ins

FHIR_JSON = {"content-type": "application/fhir+json"}
GATEWAY = {"type": "Device", "display": "DAC Gateway"}


async def _intake(client: httpx.AsyncClient, bundle: dict[str, Any]) -> tuple[str, list[str]]:
    """The ServiceRequest reference, and what the answer says the gateway generated (its outcome's notes)."""
    answer = await client.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text
    entry = next(e for e in answer.json()["entry"] if "/ServiceRequest/" in e["fullUrl"])
    location, outcome = entry["response"]["location"], entry["response"].get("outcome")
    generated = [
        issue["diagnostics"].split(" ")[0]
        for issue in (outcome or {}).get("issue", [])
        if issue["diagnostics"].endswith("was created by the gateway for this referral")
    ]
    return location.split("/_history")[0], generated


async def _provenances(client: httpx.AsyncClient, target: str) -> dict[str, dict[str, Any]]:
    found = (await client.get("/fhir/Provenance", params={"target": target})).json()
    return {entry["resource"]["activity"]["text"]: entry["resource"] for entry in found.get("entry", [])}


async def test_routing_at_intake(client: httpx.AsyncClient) -> None:
    reference, generated = await _intake(client, load_example("referral-hospital-nurse.json"))
    provenances = await _provenances(client, reference)
    routed = provenances["routed to DAC Métropole lilloise"]
    assert routed["agent"][0]["who"] == GATEWAY and routed["agent"][0]["type"]["coding"][0]["code"] == "performer"
    assert "dac-59-metropole" in routed["reason"][0]["text"]
    intake_task = next(t["reference"] for t in routed["target"] if t["reference"].startswith("Task/"))
    task = (await client.get(f"/fhir/{intake_task}")).json()
    assert task["code"]["coding"][0]["code"] == "platform-intake"
    assert f"Provenance/{routed['id']}" in generated  # the transaction-response lists it


async def test_held_for_the_gp(client: httpx.AsyncClient) -> None:
    reference, generated = await _intake(client, pta_2016_referral("-held"))
    provenances = await _provenances(client, reference)
    assert set(provenances) == {"referral held for the GP's validation, not routed"}
    (held,) = provenances.values()
    assert f"Provenance/{held['id']}" in generated


async def test_revoked_at_intake_for_an_opposition_rests_on_the_consent(client: httpx.AsyncClient) -> None:
    bundle = load_example("referral-hospital-nurse.json")
    resource(bundle, "ServiceRequest")["identifier"][0]["value"] += "-deny"
    bundle["identifier"]["value"] += "-deny"
    resource(bundle, "Consent")["provision"] = {"type": "deny"}
    reference, generated = await _intake(client, bundle)
    provenances = await _provenances(client, reference)
    (revoked,) = provenances.values()
    assert revoked["activity"]["text"] == "referral revoked at intake, not routed"
    assert revoked["reason"][0]["text"].startswith("patient-opposition")
    (entity,) = revoked["entity"]
    assert entity["role"] == "source" and entity["what"]["reference"].startswith("Consent/")
    assert f"Provenance/{revoked['id']}" in generated


async def test_escalation(client: httpx.AsyncClient, database: Database, routing: RoutingTable) -> None:
    reference, _ = await _intake(client, pta_2016_referral("-late"))
    assert await escalate_due(database, utc_now() + timedelta(days=30), routing=routing) == 1
    tasks = (await client.get("/fhir/Task", params={"focus": reference})).json()["entry"]
    validation = next(t["resource"] for t in tasks if t["resource"]["code"]["coding"][0]["code"] == "gp-validation")
    escalated = (await _provenances(client, f"Task/{validation['id']}"))["GP validation escalated to the platform"]
    assert escalated["agent"][0]["who"] == GATEWAY and "deadline" in escalated["reason"][0]["text"]
    targets = [t["reference"] for t in escalated["target"]]
    assert targets[0] == f"Task/{validation['id']}/_history/2"
    contact = (await client.get(f"/fhir/{targets[1]}")).json()
    assert contact["code"]["coding"][0]["code"] == "contact-gp"


async def test_a_later_opposition(client: httpx.AsyncClient) -> None:
    bundle = load_example("referral-hospital-nurse.json")
    reference, _ = await _intake(client, bundle)
    consent = await client.post("/fhir/Consent", json=_consent_deny(_ins(bundle)), headers=FHIR_JSON)
    assert consent.status_code == 201, consent.text
    # Two: the opposition's, targeting the Consent (read by its poster), and the revocation's, targeting the
    # referral (read by its parties), which explains it without naming the Consent.
    (opposition,) = (await _provenances(client, f"Consent/{consent.json()['id']}")).values()
    assert opposition["activity"]["text"].startswith("patient opposition recorded")
    assert [agent["type"]["coding"][0]["code"] for agent in opposition["agent"]] == ["performer", "informant"]
    revoked = (await _provenances(client, reference))[
        "referral revoked for a patient opposition, its open Tasks cancelled"
    ]
    assert revoked["agent"] == [
        {"type": {"coding": [{"system": PROVENANCE_PARTICIPANT, "code": "performer"}]}, "who": GATEWAY}
    ]
    assert revoked["reason"][0]["text"].startswith("patient-opposition") and "entity" not in revoked
    targets = [target["reference"] for target in revoked["target"]]
    assert targets[0].startswith(f"{reference}/_history/") and all("Consent" not in t for t in targets)


async def test_revoked_at_intake_for_an_opposition_on_record_rests_on_that_consent(client: httpx.AsyncClient) -> None:
    bundle = load_example("referral-hospital-nurse.json")
    opposition = await client.post("/fhir/Consent", json=_consent_deny(_ins(bundle)), headers=FHIR_JSON)
    assert opposition.status_code == 201, opposition.text  # recorded on its own, by INS, before any referral
    reference, generated = await _intake(client, bundle)  # its own Consent says permit
    (revoked,) = (await _provenances(client, reference)).values()
    assert revoked["activity"]["text"] == "referral revoked at intake, not routed"
    assert revoked["entity"] == [{"role": "source", "what": {"reference": f"Consent/{opposition.json()['id']}"}}]
    assert f"Provenance/{revoked['id']}" in generated
