"""What one sender's request may do with another party's referral: replay its answer, adopt or update its
resources, report on it, decide its Tasks. Everything not the caller's is a 404 or a 409/403 that names nothing."""

from __future__ import annotations

import copy
import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from gateway.audit.events import CLIENT_ID_SYSTEM
from gateway.routing.config import RoutingTable
from gateway.routing.messages import NothingToSend, build_messages
from gateway.store import Database, UnitOfWork
from gateway.workflow.deadlines import escalate_due
from tests.auth.conftest import (
    DIRECTORY_OPERATOR,
    FINISTERE,
    HOSPITAL_SYSTEM,
    OPPOSING_SENDER,
    PEER,
    REFERRING_PLATFORM,
    token_of,
)
from tests.auth.test_visibility import FHIR_JSON, World, world  # noqa: F401
from tests.support.referrals import as_message, fresh, renamed, resource


@pytest.fixture
def parties(world: World) -> World:  # noqa: F811 - the two referrals of test_visibility, A's and B's
    return world


def _locations(answer: httpx.Response) -> list[str]:
    return [entry["response"]["location"] for entry in answer.json().get("entry", []) if "response" in entry]


async def _posted_to_paris(secure: httpx.AsyncClient, headers: dict[str, str]) -> str:
    """A new referral routed to Paris, posted with ``headers``: its ServiceRequest's reference."""
    answer = await secure.post("/fhir", json=fresh(commune="75056"), headers=headers | FHIR_JSON)
    assert answer.status_code == 200, answer.text
    return next(loc.split("/_history")[0] for loc in _locations(answer) if loc.startswith("ServiceRequest/"))


async def _tasks_by_code(secure: httpx.AsyncClient, headers: dict[str, str], service_request: str) -> dict[str, Any]:
    found = (await secure.get("/fhir/Task", params={"focus": service_request}, headers=headers)).json()
    return {entry["resource"]["code"]["coding"][0]["code"]: entry["resource"] for entry in found["entry"]}


async def _reject_intake(secure: httpx.AsyncClient, headers: dict[str, str], intake: dict[str, Any]) -> httpx.Response:
    return await secure.put(
        f"/fhir/Task/{intake['id']}",
        json=intake | {"status": "rejected", "statusReason": {"text": "not ours"}},
        headers=headers | FHIR_JSON | {"if-match": 'W/"1"'},
    )


def _service_request_of(answer: httpx.Response) -> str:
    return next(loc.split("/_history")[0] for loc in _locations(answer) if loc.startswith("ServiceRequest/"))


async def test_a_replay_is_for_its_sender_only(secure: httpx.AsyncClient, parties: World) -> None:
    """Regression (issue 23, item 3): idempotency keys were global, so a sender pre-posting another's next
    identifier got that sender's real referral a 409 for ever, and the 409 told which identifiers existed. Keys are
    now each client's: another sender's post under the same identifiers is a referral of its own, and each
    sender's retry replays its own answer."""
    bundle = fresh(commune="75056")
    b = await secure.post("/fhir", json=bundle, headers=parties.headers["sender B"] | FHIR_JSON)  # squats first
    assert b.status_code == 200, b.text
    a = await secure.post("/fhir", json=bundle, headers=parties.headers["sender A"] | FHIR_JSON)
    assert a.status_code == 200, a.text
    assert _service_request_of(a) != _service_request_of(b)
    assert _service_request_of(b).split("/")[1] not in a.text
    for role, first in (("sender A", a), ("sender B", b)):
        again = await secure.post("/fhir", json=bundle, headers=parties.headers[role] | FHIR_JSON)
        assert _locations(again) == _locations(first)  # each sender's own retry: replayed
    operator = parties.headers["operator"]
    identifier = resource(bundle, "ServiceRequest")["identifier"][0]
    found = await secure.get(
        "/fhir/ServiceRequest", params={"identifier": f"{identifier['system']}|{identifier['value']}"}, headers=operator
    )
    assert found.json()["total"] == 2


async def test_a_message_replay_is_for_its_sender_only(secure: httpx.AsyncClient, parties: World) -> None:
    message = as_message(
        fresh(commune="75056"), "https://sender-a.example/fhir", "7f1d2a9e-0000-4000-8000-00000000a001"
    )
    a = await secure.post("/fhir/$process-message", json=message, headers=parties.headers["sender A"] | FHIR_JSON)
    assert a.status_code == 200, a.text
    service_request = a.json()["entry"][1]["resource"]
    b = await secure.post("/fhir/$process-message", json=message, headers=parties.headers["sender B"] | FHIR_JSON)
    assert b.status_code == 200, b.text
    assert b.json()["entry"][1]["resource"]["id"] != service_request["id"]
    assert service_request["id"] not in b.text
    again = await secure.post("/fhir/$process-message", json=message, headers=parties.headers["sender A"] | FHIR_JSON)
    assert again.json()["entry"][1]["resource"]["id"] == service_request["id"]


async def test_an_identifier_in_another_clients_registered_system_is_refused(
    secure: httpx.AsyncClient, parties: World
) -> None:
    """Issue 23, item 3: the hospital registered its identifier system (identifier_systems); a ServiceRequest
    identifier or Bundle.identifier in it from another client is a 422 naming the element, nothing stored; the
    hospital itself uses it."""
    operator = parties.headers["operator"]
    before = (await secure.get("/fhir/ServiceRequest", params={"_summary": "count"}, headers=operator)).json()
    for element in ("ServiceRequest", "Bundle"):
        bundle = fresh(commune="75056")
        target = resource(bundle, "ServiceRequest")["identifier"][0] if element == "ServiceRequest" else bundle
        (target if element == "ServiceRequest" else target["identifier"])["system"] = HOSPITAL_SYSTEM
        refused = await secure.post("/fhir", json=bundle, headers=parties.headers["sender B"] | FHIR_JSON)
        assert refused.status_code == 422, refused.text
        issue = refused.json()["issue"][0]
        assert issue["details"]["coding"][0]["code"] == "identifier-system-not-owned"
        index = next(i for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == "ServiceRequest")
        expected = f"Bundle.entry[{index}].resource.identifier[0].system" if element == "ServiceRequest" else None
        assert issue["expression"] == [expected or "Bundle.identifier.system"]
        message = as_message(
            bundle, "https://sender-b.example/fhir", f"7f1d2a9e-0000-4000-8000-00000000b00{len(element)}"
        )
        refused = await secure.post(
            "/fhir/$process-message", json=message, headers=parties.headers["sender B"] | FHIR_JSON
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["issue"][0]["details"]["coding"][0]["code"] == "identifier-system-not-owned"
        after = (await secure.get("/fhir/ServiceRequest", params={"_summary": "count"}, headers=operator)).json()
        assert after["total"] == before["total"]
        mine = await secure.post("/fhir", json=bundle, headers=parties.headers["sender A"] | FHIR_JSON)
        assert mine.status_code == 200, mine.text
        before = after | {"total": after["total"] + 1}


async def test_if_none_exist_matches_only_what_the_caller_sees(secure: httpx.AsyncClient, parties: World) -> None:
    consent_a = parties.resources["Consent A"][0]
    headers_b = parties.headers["sender B"]
    bundle = fresh(commune="75056")
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "Consent":
            entry["request"]["ifNoneExist"] = f"_id={consent_a.split('/')[1]}"
    answer = await secure.post("/fhir", json=bundle, headers=headers_b | FHIR_JSON)
    assert answer.status_code == 200, answer.text
    consent_b = next(location for location in _locations(answer) if location.startswith("Consent/"))
    assert consent_b.split("/_history")[0] != consent_a  # a Consent of B's own, not A's adopted
    assert (await secure.get(f"/fhir/{consent_a}", headers=headers_b)).status_code == 404
    # The sender's own resources still match: its retry under a new identifier adopts its Consent.
    again = fresh(commune="75056")
    for entry in again["entry"]:
        if entry["resource"]["resourceType"] == "Consent":
            entry["request"]["ifNoneExist"] = f"_id={consent_b.split('/')[1]}"
    mine = await secure.post("/fhir", json=again, headers=headers_b | FHIR_JSON)
    assert mine.status_code == 200, mine.text
    assert consent_b in _locations(mine)


async def test_if_none_exist_on_a_consent_matches_only_what_the_caller_sees(
    secure: httpx.AsyncClient, parties: World
) -> None:
    """POST /fhir/Consent with If-None-Exist searches as the caller's searches do: another party's Consent (B's
    referral's) never matches — a new Consent of the caller's own is made, and the answer names nothing of B's —
    while the caller's own does (its referral's Consent: 200, nothing written)."""
    headers_a = parties.headers["sender A"]
    consent_a = parties.resources["Consent A"][0]
    every = (await secure.get("/fhir/Consent", headers=parties.headers["operator"])).json()["entry"]
    consent_b = next(f"Consent/{e['resource']['id']}" for e in every if f"Consent/{e['resource']['id']}" != consent_a)
    body = _consent_by_ins(fresh(commune="75056"))
    theirs = await secure.post(
        "/fhir/Consent",
        json=body,
        headers=headers_a | FHIR_JSON | {"If-None-Exist": f"_id={consent_b.split('/')[1]}"},
    )
    assert theirs.status_code == 201, theirs.text
    assert consent_b.split("/")[1] not in theirs.text
    mine = await secure.post(
        "/fhir/Consent",
        json=body,
        headers=headers_a | FHIR_JSON | {"If-None-Exist": f"_id={consent_a.split('/')[1]}"},
    )
    assert mine.status_code == 200, mine.text
    assert f"Consent/{mine.json()['id']}" == consent_a
    count = await secure.get("/fhir/Consent", params={"_summary": "count"}, headers=parties.headers["operator"])
    assert count.json()["total"] == 3  # A's and B's referrals' Consents, and the one A posted on its own


def _put_patient(bundle: dict[str, Any], patient: str, phone: str) -> dict[str, Any]:
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "Patient":
            entry["resource"]["id"] = patient.split("/")[1]
            entry["resource"]["telecom"] = [{"system": "phone", "value": phone}]
            entry["request"] = {"method": "PUT", "url": patient}
    return bundle


async def test_a_transaction_updates_only_what_the_caller_sees(secure: httpx.AsyncClient, parties: World) -> None:
    bundle_a = fresh(commune="75056")  # a Patient only A referred
    a = await secure.post("/fhir", json=bundle_a, headers=parties.headers["sender A"] | FHIR_JSON)
    assert a.status_code == 200, a.text
    patient = next(loc.split("/_history")[0] for loc in _locations(a) if loc.startswith("Patient/"))
    headers_b = parties.headers["sender B"]
    answer = await secure.post(
        "/fhir", json=_put_patient(renamed(bundle_a, "-B"), patient, "0600000000"), headers=headers_b | FHIR_JSON
    )
    assert answer.status_code == 404, answer.text
    assert answer.json()["issue"][0]["details"]["coding"][0]["code"] == "resource-not-found"
    read = await secure.get(f"/fhir/{patient}", headers=parties.headers["sender A"])
    assert "0600000000" not in read.text and read.json()["meta"]["versionId"] == "1"
    # Its own sender updates it.
    mine = await secure.post(
        "/fhir",
        json=_put_patient(renamed(bundle_a, "-A2"), patient, "0611111111"),
        headers=parties.headers["sender A"] | FHIR_JSON,
    )
    assert mine.status_code == 200, mine.text
    assert "0611111111" in (await secure.get(f"/fhir/{patient}", headers=parties.headers["sender A"])).text


def _referral_update(bundle: dict[str, Any], status: str) -> dict[str, Any]:
    """A peer gateway's report on a referral it was forwarded: the ServiceRequest (by its identifier) and Patient."""
    service_request = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest")
    patient = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    header_url, request_url = (f"urn:uuid:0b2ee0f5-0000-4000-8000-00000000000{n}" for n in (1, 2))
    reported = {k: v for k, v in service_request["resource"].items() if k not in ("supportingInfo", "performer")}
    reported |= {
        "status": status,
        "subject": {"reference": patient["fullUrl"]},
        "requester": {"reference": "PractitionerRole/x"},
    }
    header = {
        "resourceType": "MessageHeader",
        "id": header_url.removeprefix("urn:uuid:"),
        "eventCoding": {
            "system": "https://fhir.dac-gateway.org/CodeSystem/dac-message-event",
            "code": "referral-update",
        },
        "source": {"endpoint": "https://gateway.dac67.example.org/fhir"},
        "focus": [{"reference": request_url}],
    }
    return {
        "resourceType": "Bundle",
        "type": "message",
        "timestamp": "2026-11-23T10:00:00Z",
        "entry": [
            {"fullUrl": header_url, "resource": header},
            {"fullUrl": request_url, "resource": reported},
            {"fullUrl": patient["fullUrl"], "resource": patient["resource"]},
        ],
    }


async def test_a_referral_update_comes_only_from_the_peer_it_was_forwarded_to(
    secure: httpx.AsyncClient, parties: World
) -> None:
    bundle = fresh(commune="67482")  # Bas-Rhin: forwarded to the peer gateway dac-67
    a = await secure.post("/fhir", json=bundle, headers=parties.headers["sender A"] | FHIR_JSON)
    assert a.status_code == 200, a.text
    service_request = next(loc.split("/_history")[0] for loc in _locations(a) if loc.startswith("ServiceRequest/"))
    update = _referral_update(bundle, "revoked")
    for role in ("sender B", "sender A"):  # another sender, and even the referral's own sender
        refused = await secure.post("/fhir/$process-message", json=update, headers=parties.headers[role] | FHIR_JSON)
        assert refused.status_code == 404, (role, refused.text)
        assert refused.json()["issue"][0]["details"]["coding"][0]["code"] == "resource-not-found"
        assert service_request.split("/")[1] not in refused.text
    operator = parties.headers["operator"]
    assert (await secure.get(f"/fhir/{service_request}", headers=operator)).json()["status"] != "revoked"
    peer = await token_of(secure, PEER)
    followed = await secure.post("/fhir/$process-message", json=update, headers=peer | FHIR_JSON)
    assert followed.status_code == 200, followed.text
    assert followed.json()["entry"][1]["resource"]["status"] == "revoked"
    assert (await secure.get(f"/fhir/{service_request}", headers=operator)).json()["status"] == "revoked"


def _opposition(bundle: dict[str, Any]) -> dict[str, Any]:
    """An ``opposition`` message for the patient of ``bundle``: the Consent deny and the Patient."""
    patient = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    header_url, consent_url = (f"urn:uuid:5e1c0a7d-0000-4000-8000-00000000000{n}" for n in (1, 2))
    consent = {
        "resourceType": "Consent",
        "status": "active",
        "scope": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": patient["fullUrl"]},
        "dateTime": "2026-11-23T10:00:00+01:00",
        "policyRule": {"text": "Code de la santé publique, art. L1110-12"},
        "provision": {"type": "deny"},
    }
    header = {
        "resourceType": "MessageHeader",
        "id": header_url.removeprefix("urn:uuid:"),
        "eventCoding": {"system": "https://fhir.dac-gateway.org/CodeSystem/dac-message-event", "code": "opposition"},
        "source": {"endpoint": "https://hospital.example/fhir"},
        "focus": [{"reference": consent_url}],
    }
    return {
        "resourceType": "Bundle",
        "type": "message",
        "timestamp": "2026-11-23T10:00:00Z",
        "entry": [
            {"fullUrl": header_url, "resource": header},
            {"fullUrl": patient["fullUrl"], "resource": patient["resource"]},
            {"fullUrl": consent_url, "resource": consent},
        ],
    }


async def test_an_opposition_names_only_the_callers_revoked_referrals(
    secure: httpx.AsyncClient, parties: World
) -> None:
    bundle = fresh(commune="75056")
    references = {}
    for role, posted in (("sender A", bundle), ("sender B", renamed(bundle, "-B"))):  # one patient, two senders
        answer = await secure.post("/fhir", json=posted, headers=parties.headers[role] | FHIR_JSON)
        assert answer.status_code == 200, answer.text
        references[role] = next(
            loc.split("/_history")[0] for loc in _locations(answer) if loc.startswith("ServiceRequest/")
        )
    answer = await secure.post(
        "/fhir/$process-message", json=_opposition(bundle), headers=parties.headers["sender A"] | FHIR_JSON
    )
    assert answer.status_code == 200, answer.text
    note = answer.json()["entry"][-1]["resource"]["issue"][0]["diagnostics"]
    assert note == f"Opposition recorded; revoked: {references['sender A']}."  # B's neither named nor counted
    assert references["sender B"].split("/")[1] not in answer.text
    operator = parties.headers["operator"]
    for reference in references.values():
        assert (await secure.get(f"/fhir/{reference}", headers=operator)).json()["status"] == "revoked"


async def test_an_opposition_revoking_only_another_partys_referrals_answers_as_if_it_revoked_nothing(
    secure: httpx.AsyncClient, parties: World
) -> None:
    """The same answer for B's patient (B's referral revoked) as for a patient nobody referred: nothing about B's
    referrals — not even how many — and nothing that says whether the patient was known here."""
    headers_a = parties.headers["sender A"]
    of_b = fresh(commune="75056")
    b = await secure.post("/fhir", json=of_b, headers=parties.headers["sender B"] | FHIR_JSON)
    assert b.status_code == 200, b.text
    service_request = next(loc.split("/_history")[0] for loc in _locations(b) if loc.startswith("ServiceRequest/"))
    notes = {}
    for label, bundle in (("B's patient", of_b), ("nobody's", fresh(commune="75056"))):
        for carried in (True, False):  # with the Patient, or the Consent naming it by INS alone
            message = _opposition(bundle)
            if not carried:
                message["entry"][2]["resource"]["patient"] = {"identifier": _ins_of(bundle)}
                del message["entry"][1]
            answer = await secure.post("/fhir/$process-message", json=message, headers=headers_a | FHIR_JSON)
            # By INS alone A, no party to either patient's referrals, names no patient (issue 23, item 6): the
            # same 422 whether the patient is B's or nobody's.
            assert answer.status_code == (200 if carried else 422), answer.text
            notes[label, carried] = answer.json()["entry"][-1]["resource"]["issue"] if carried else answer.json()
    assert notes["B's patient", True] == notes["nobody's", True]
    assert notes["nobody's", False] == notes["B's patient", False]
    operator = parties.headers["operator"]
    assert (await secure.get(f"/fhir/{service_request}", headers=operator)).json()["status"] == "revoked"


async def _decide(
    http: httpx.AsyncClient, headers: dict[str, str], reference: str, changes: dict[str, Any]
) -> httpx.Response:
    task = (await http.get(f"/fhir/{reference}", headers=headers)).json()
    version = {"If-Match": f'W/"{task["meta"]["versionId"]}"'}
    return await http.put(f"/fhir/{reference}", json=task | changes, headers=headers | version | FHIR_JSON)


def _refused(answer: httpx.Response) -> bool:
    return (
        answer.status_code == 403
        and answer.json()["issue"][0]["details"]["coding"][0]["code"] == "decision-not-allowed"
    )


async def _gp_validation(http: httpx.AsyncClient, headers: dict[str, str]) -> tuple[str, str]:
    """A referral to Finistère (policy pta-2016: the GP validates): its ServiceRequest and gp-validation Task."""
    answer = await http.post("/fhir", json=fresh(commune="29019"), headers=headers | FHIR_JSON)
    assert answer.status_code == 200, answer.text
    service_request = next(loc.split("/_history")[0] for loc in _locations(answer) if loc.startswith("ServiceRequest/"))
    tasks = await http.get("/fhir/Task", params={"focus": service_request, "code": "gp-validation"}, headers=headers)
    return service_request, f"Task/{tasks.json()['entry'][0]['resource']['id']}"


async def test_the_requester_never_validates_in_the_gps_place(secure: httpx.AsyncClient, parties: World) -> None:
    sender = parties.headers["sender A"]
    service_request, task = await _gp_validation(secure, sender)
    assert (await secure.get(f"/fhir/{service_request}", headers=sender)).json()["status"] == "draft"
    reason = {"statusReason": {"text": "wrong patient"}}
    for changes in ({"status": "accepted"}, {"status": "completed"}, {"status": "rejected"} | reason):
        assert _refused(await _decide(secure, sender, task, changes)), changes
    current = (await secure.get(f"/fhir/{task}", headers=sender)).json()
    version = {"If-Match": f'W/"{current["meta"]["versionId"]}"'}
    patch = [{"op": "replace", "path": "/status", "value": "accepted"}]
    patched = await secure.patch(
        f"/fhir/{task}", json=patch, headers=sender | version | {"Content-Type": "application/json-patch+json"}
    )
    assert _refused(patched)
    assert (await secure.get(f"/fhir/{service_request}", headers=sender)).json()["status"] == "draft"
    assert (await secure.get(f"/fhir/{task}", headers=sender)).json()["meta"] == current["meta"]
    # Another sender does not see the Task at all: 404 before any 403.
    other = await secure.put(
        f"/fhir/{task}", json=current | {"status": "cancelled"} | reason, headers=parties.headers["sender B"] | version
    )
    assert other.status_code == 404
    # What the requester may do: withdraw its referral, with a reason.
    withdrawn = await _decide(secure, sender, task, {"status": "cancelled"} | reason)
    assert withdrawn.status_code == 200, withdrawn.text
    assert (await secure.get(f"/fhir/{service_request}", headers=sender)).json()["status"] == "revoked"


async def test_the_platform_answers_for_the_gp_only_once_escalated(
    secure: httpx.AsyncClient, parties: World, database: Database, routing: RoutingTable
) -> None:
    service_request, task = await _gp_validation(secure, parties.headers["sender A"])
    platform = await token_of(secure, FINISTERE)
    # Held for the GP, the referral is not the platform's yet (DESIGN §11): no Task to decide, 404 before any 403.
    current = (await secure.get(f"/fhir/{task}", headers=parties.headers["sender A"])).json()
    early = await secure.put(
        f"/fhir/{task}", json=current | {"status": "accepted"}, headers=platform | FHIR_JSON | {"If-Match": 'W/"1"'}
    )
    assert early.status_code == 404, early.text
    assert await escalate_due(database, datetime.now(UTC) + timedelta(days=60), routing=routing) >= 1
    assert _refused(await _decide(secure, platform, task, {"businessStatus": {"text": "escalated"}}))
    assert _refused(await _decide(secure, platform, task, {"status": "cancelled", "statusReason": {"text": "x"}}))
    accepted = await _decide(secure, platform, task, {"status": "accepted"})
    assert accepted.status_code == 200, accepted.text
    assert (await secure.get(f"/fhir/{service_request}", headers=platform)).json()["status"] == "active"
    # Its own Tasks, the platform decides; the operator, any.
    tasks = await secure.get("/fhir/Task", params={"focus": service_request, "code": "contact-gp"}, headers=platform)
    contact = f"Task/{tasks.json()['entry'][0]['resource']['id']}"
    assert (await _decide(secure, platform, contact, {"status": "completed"})).status_code == 200


def _referring_to(bundle: dict[str, Any], reference: str) -> dict[str, Any]:
    """``bundle`` whose ServiceRequest names ``reference`` (a resource on the gateway, by id) in supportingInfo."""
    service_request = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest")
    service_request["supportingInfo"] = [{"reference": reference}]
    return bundle


def _unresolved(answer: httpx.Response, reference: str) -> tuple[int, list[tuple[str, str, str, str]]]:
    """The answer, with the reference's id taken out of the diagnostics: what must not differ."""
    issues = answer.json().get("issue", [])
    return answer.status_code, [
        (
            issue["code"],
            issue["details"]["coding"][0]["code"],
            issue["expression"][0],
            issue["diagnostics"].replace(reference, "<reference>"),
        )
        for issue in issues
    ]


async def test_a_reference_to_what_the_caller_may_not_see_is_answered_as_unknown(
    secure: httpx.AsyncClient, parties: World
) -> None:
    headers_a, headers_b, operator = (parties.headers[r] for r in ("sender A", "sender B", "operator"))
    a = await secure.post("/fhir", json=fresh(commune="75056"), headers=headers_a | FHIR_JSON)  # a patient of A's only
    assert a.status_code == 200, a.text
    of_a = {loc.split("/")[0]: loc.split("/_history")[0] for loc in _locations(a)}
    tasks = await secure.get("/fhir/Task", params={"focus": of_a["ServiceRequest"]}, headers=operator)
    of_a["Task"] = f"Task/{tasks.json()['entry'][0]['resource']['id']}"
    unknown = "Patient/0f0e0d0c-0000-4000-8000-000000000000"
    expected = _unresolved(
        await secure.post("/fhir", json=_referring_to(fresh(commune="75056"), unknown), headers=headers_b | FHIR_JSON),
        unknown,
    )
    assert expected[0] == 422 and expected[1][0][1] == "reference-unresolved", expected
    for resource_type in ("Patient", "Consent", "ServiceRequest", "Task", "PractitionerRole"):
        reference = of_a[resource_type]
        assert (await secure.get(f"/fhir/{reference}", headers=headers_b)).status_code == 404
        answer = await secure.post(
            "/fhir", json=_referring_to(fresh(commune="75056"), reference), headers=headers_b | FHIR_JSON
        )
        assert _unresolved(answer, reference) == expected, (resource_type, answer.text)
        assert reference.split("/")[1] not in answer.text.replace(reference, "")
    # Its own resources, the caller references.
    mine = await secure.post(
        "/fhir", json=_referring_to(fresh(commune="75056"), of_a["Consent"]), headers=headers_a | FHIR_JSON
    )
    assert mine.status_code == 200, mine.text


async def test_shared_directory_data_is_referenceable_by_anyone(secure: httpx.AsyncClient, parties: World) -> None:
    headers_a, headers_b = parties.headers["sender A"], parties.headers["sender B"]
    # A's GP (RPPS) and organisation (FINESS), which B's own referrals never name; and the platform's Organization.
    a = await secure.post("/fhir", json=fresh("referral-gp.json", commune="75056"), headers=headers_a | FHIR_JSON)
    assert a.status_code == 200, a.text
    of_a = {loc.split("/")[0]: loc.split("/_history")[0] for loc in _locations(a)}
    performer = (await secure.get(f"/fhir/{of_a['ServiceRequest']}", headers=headers_a)).json()["performer"][0]
    for reference in (of_a["Practitioner"], of_a["Organization"], performer["reference"]):
        answer = await secure.post(
            "/fhir", json=_referring_to(fresh(commune="75056"), reference), headers=headers_b | FHIR_JSON
        )
        assert answer.status_code == 200, (reference, answer.text)


def _consent_for(patient: dict[str, Any], provision: str = "deny") -> dict[str, Any]:
    """A Consent posted on its own for ``patient`` (a Reference: by INS, or by id)."""
    consent = _opposition(fresh())["entry"][2]["resource"]
    return consent | {"patient": patient, "provision": {"type": provision}}


def _consent_by_ins(bundle: dict[str, Any], provision: str = "deny") -> dict[str, Any]:
    """A Consent posted on its own naming the patient of ``bundle`` by INS, with its five identity traits (a
    contained Patient): how a client that is no party to the patient's referrals names it (issue 23, item 6)."""
    patient = {"reference": "#p", "identifier": _ins_of(bundle)}
    return _consent_for(patient, provision) | {"contained": [_patient_of(bundle) | {"id": "p"}]}


def _ins_of(bundle: dict[str, Any]) -> dict[str, str]:
    patient = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    return next(
        {"system": i["system"], "value": i["value"]} for i in patient["identifier"] if i["system"].endswith("4.8")
    )


async def _consent_by_ins_for_own_patient(
    http: httpx.AsyncClient, headers: dict[str, str]
) -> tuple[httpx.Response, str]:
    """The caller refers a new patient, then posts a Consent naming it by INS: the answer, and the Patient's
    reference."""
    referral = fresh(commune="75056")
    posted = await http.post("/fhir", json=referral, headers=headers | FHIR_JSON)
    patient = next(loc.split("/_history")[0] for loc in _locations(posted) if loc.startswith("Patient/"))
    answer = await http.post(
        "/fhir/Consent", json=_consent_for({"identifier": _ins_of(referral)}, "permit"), headers=headers | FHIR_JSON
    )
    assert answer.status_code == 201, answer.text
    return answer, patient


async def test_a_consent_by_ins_names_no_patient_the_caller_may_not_see(
    secure: httpx.AsyncClient, parties: World
) -> None:
    headers_a, headers_b = parties.headers["sender A"], parties.headers["sender B"]
    of_b = fresh(commune="75056")  # a patient only B referred
    b = await secure.post("/fhir", json=of_b, headers=headers_b | FHIR_JSON)
    assert b.status_code == 200, b.text
    patient = next(loc.split("/_history")[0] for loc in _locations(b) if loc.startswith("Patient/"))
    unknown = fresh()  # a patient no referral ever named
    nobody = _ins_of(unknown)
    answers = {}
    for label, bundle in (("B's patient", of_b), ("unknown", unknown)):
        answer = await secure.post("/fhir/Consent", json=_consent_by_ins(bundle), headers=headers_a | FHIR_JSON)
        assert answer.status_code == 201, answer.text
        assert patient.split("/")[1] not in answer.text
        answers[label] = answer.json()
    assert answers["B's patient"]["patient"] == {"identifier": _ins_of(of_b)}  # as A identified the patient
    assert answers["unknown"]["patient"] == {"identifier": nobody}
    # The opposition still works: B's referral is revoked; the stored Consent names the stored Patient (read by
    # the operator: B learns why its referral was revoked, not what A's Consent says).
    service_request = next(loc.split("/_history")[0] for loc in _locations(b) if loc.startswith("ServiceRequest/"))
    assert (await secure.get(f"/fhir/{service_request}", headers=headers_b)).json()["status"] == "revoked"
    consent = answers["B's patient"]["id"]
    stored = await secure.get(f"/fhir/Consent/{consent}", headers=parties.headers["operator"])
    assert stored.json()["patient"]["reference"] == patient
    # The opposition's Provenance, which A reads, names the patient (who informed, none being said) as A did.
    provenance = await secure.get("/fhir/Provenance", params={"target": f"Consent/{consent}"}, headers=headers_a)
    (recorded,) = (entry["resource"] for entry in provenance.json()["entry"])
    assert {"identifier": _ins_of(of_b)} in [agent["who"] for agent in recorded["agent"]]
    assert patient.split("/")[1] not in provenance.text
    # By id, the Patient A may not see is the 422 of a Patient that does not exist.
    nowhere = "Patient/0f0e0d0c-0000-4000-8000-000000000000"
    by_id = await secure.post("/fhir/Consent", json=_consent_for({"reference": patient}), headers=headers_a | FHIR_JSON)
    unknown = await secure.post(
        "/fhir/Consent", json=_consent_for({"reference": nowhere}), headers=headers_a | FHIR_JSON
    )
    assert by_id.status_code == unknown.status_code == 422, by_id.text
    assert _unresolved(by_id, patient) == _unresolved(unknown, nowhere)
    # A patient the caller sees keeps its reference in the answer.
    answer, mine = await _consent_by_ins_for_own_patient(secure, headers_a)
    assert answer.json()["patient"]["reference"] == mine


async def test_an_opposition_message_names_no_patient_the_caller_may_not_see(
    secure: httpx.AsyncClient, parties: World
) -> None:
    of_b = fresh(commune="75056")
    b = await secure.post("/fhir", json=of_b, headers=parties.headers["sender B"] | FHIR_JSON)
    assert b.status_code == 200, b.text
    patient = next(loc.split("/_history")[0] for loc in _locations(b) if loc.startswith("Patient/"))
    answer = await secure.post(
        "/fhir/$process-message", json=_opposition(of_b), headers=parties.headers["sender A"] | FHIR_JSON
    )
    assert answer.status_code == 200, answer.text
    assert patient.split("/")[1] not in answer.text
    assert answer.json()["entry"][1]["resource"]["patient"] == {"identifier": _ins_of(of_b)}


async def test_an_opposition_on_record_stops_a_referral_without_showing_it_to_its_sender(
    secure: httpx.AsyncClient, parties: World
) -> None:
    """A's opposition, on record, revokes B's referrals at intake. B's answer and Provenance say why; the
    Provenance names what it rests on only when B may read it (the deny Consent B itself sent in an earlier
    referral), never A's Consent, which stays a 404 for B and a 422 of an unknown id when B names it."""
    headers_a, headers_b = parties.headers["sender A"], parties.headers["sender B"]
    bundle = fresh(commune="75056")
    opposition = await secure.post("/fhir/Consent", json=_consent_by_ins(bundle), headers=headers_a | FHIR_JSON)
    assert opposition.status_code == 201, opposition.text
    of_a = f"Consent/{opposition.json()['id']}"
    denied = renamed(bundle, "-deny")  # B's first referral: the patient objects in it too
    next(e["resource"] for e in denied["entry"] if e["resource"]["resourceType"] == "Consent")["provision"] = {
        "type": "deny"
    }
    first = await secure.post("/fhir", json=denied, headers=headers_b | FHIR_JSON)
    assert first.status_code == 200, first.text
    of_b = next(loc.split("/_history")[0] for loc in _locations(first) if loc.startswith("Consent/"))
    assert (await secure.get(f"/fhir/{of_a}", headers=headers_b)).status_code == 404
    b = await secure.post("/fhir", json=bundle, headers=headers_b | FHIR_JSON)
    assert b.status_code == 200, b.text
    assert any("opposition" in issue["diagnostics"] for issue in _notes(b))
    service_request = next(loc.split("/_history")[0] for loc in _locations(b) if loc.startswith("ServiceRequest/"))
    assert (await secure.get(f"/fhir/{service_request}", headers=headers_b)).json()["status"] == "revoked"
    provenances = await secure.get("/fhir/Provenance", params={"target": service_request}, headers=headers_b)
    (revoked,) = (entry["resource"] for entry in provenances.json()["entry"])
    assert revoked["reason"][0]["text"].startswith("patient-opposition")
    assert revoked["entity"] == [{"role": "source", "what": {"reference": of_b}}]  # B's own, not A's
    for reference in _server_references(revoked):
        assert (await secure.get(f"/fhir/{reference}", headers=headers_b)).status_code == 200, reference
    assert (await secure.get(f"/fhir/{of_a}", headers=headers_b)).status_code == 404
    read = [
        b.text,
        (await secure.get(f"/fhir/{service_request}/_history", headers=headers_b)).text,
        (await secure.get("/fhir/Provenance", headers=headers_b)).text,
        (await secure.get("/fhir/Consent", headers=headers_b)).text,
    ]
    assert not [text for text in read if of_a.split("/")[1] in text]
    unknown = "Consent/0f0e0d0c-0000-4000-8000-000000000000"
    named = await secure.post("/fhir", json=_referring_to(fresh(commune="75056"), of_a), headers=headers_b | FHIR_JSON)
    nowhere = await secure.post(
        "/fhir", json=_referring_to(fresh(commune="75056"), unknown), headers=headers_b | FHIR_JSON
    )
    assert _unresolved(named, of_a) == _unresolved(nowhere, unknown), named.text


def _notes(answer: httpx.Response) -> list[dict[str, Any]]:
    """The issues of a transaction-response's ServiceRequest entry: what the workflow decided."""
    entry = next(e for e in answer.json()["entry"] if "/ServiceRequest/" in e["fullUrl"])
    return list(entry["response"]["outcome"]["issue"])


async def test_a_later_oppositions_provenance_names_the_client_that_posted_it(
    secure: httpx.AsyncClient, parties: World
) -> None:
    """The opposition's own Provenance (its target the Consent, read like it by its poster): who posted it."""
    headers_a = parties.headers["sender A"]
    for post in ("Consent", "message"):
        bundle = fresh(commune="75056")
        a = await secure.post("/fhir", json=bundle, headers=headers_a | FHIR_JSON)
        assert a.status_code == 200, a.text
        if post == "Consent":
            answer = await secure.post("/fhir/Consent", json=_consent_by_ins(bundle), headers=headers_a | FHIR_JSON)
            consent = f"Consent/{answer.json()['id']}"
        else:
            answer = await secure.post(
                "/fhir/$process-message", json=_opposition(bundle), headers=headers_a | FHIR_JSON
            )
            consent = answer.json()["entry"][0]["resource"]["focus"][0]["reference"].split("/fhir/")[-1]
        assert answer.status_code in (200, 201), answer.text
        provenances = await secure.get("/fhir/Provenance", params={"target": consent}, headers=headers_a)
        (opposition,) = (entry["resource"] for entry in provenances.json()["entry"])
        assert opposition["activity"]["text"].startswith("patient opposition recorded")
        agents = {(a["type"]["coding"][0]["code"], json.dumps(a["who"], sort_keys=True)) for a in opposition["agent"]}
        client = {"identifier": {"system": "https://fhir.dac-gateway.org/client-id", "value": "hospital"}}
        assert ("author", json.dumps(client, sort_keys=True)) in agents, (post, opposition["agent"])
        found = await secure.get("/fhir/Provenance", params={"target": consent}, headers=parties.headers["sender B"])
        assert found.json()["total"] == 0


async def test_the_gp_is_informed_by_the_requester_or_failing_that_the_platform(
    secure: httpx.AsyncClient, parties: World
) -> None:
    sender, platform = parties.headers["sender A"], parties.headers["platform Paris"]

    async def gp_information() -> str:
        answer = await secure.post("/fhir", json=fresh(commune="75056"), headers=sender | FHIR_JSON)  # dac-2022
        assert answer.status_code == 200, answer.text
        service_request = next(loc.split("/_history")[0] for loc in _locations(answer) if "ServiceRequest/" in loc)
        tasks = await secure.get(
            "/fhir/Task", params={"focus": service_request, "code": "gp-information"}, headers=sender
        )
        return f"Task/{tasks.json()['entry'][0]['resource']['id']}"

    informed_by_sender = await gp_information()
    assert _refused(await _decide(secure, sender, informed_by_sender, {"status": "accepted"}))  # no validation
    assert (await _decide(secure, sender, informed_by_sender, {"status": "in-progress"})).status_code == 200
    done = await _decide(secure, sender, informed_by_sender, {"status": "completed"})
    assert done.status_code == 200, done.text
    provenances = await secure.get("/fhir/Provenance", params={"target": informed_by_sender}, headers=sender)
    for decided in (e["resource"] for e in provenances.json()["entry"]):  # requested → in-progress → completed
        assert decided["agent"][0]["who"]["identifier"]["value"] == "hospital"
    informed_by_platform = await gp_information()
    assert (await secure.get(f"/fhir/{informed_by_platform}", headers=parties.headers["sender B"])).status_code == 404
    done = await _decide(secure, platform, informed_by_platform, {"status": "completed"})
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "completed"


async def test_a_consent_posted_on_its_own_is_read_back_by_its_poster_only(
    secure: httpx.AsyncClient, parties: World
) -> None:
    headers_a, headers_b = parties.headers["sender A"], parties.headers["sender B"]
    for provision in ("deny", "permit"):  # an opposition with no referral to revoke, and a consent
        posted = await secure.post(
            "/fhir/Consent",
            json=_consent_by_ins(fresh(), provision),
            headers=headers_a | FHIR_JSON,
        )
        assert posted.status_code == 201, posted.text
        location = posted.headers["location"].split("/_history")[0]
        mine = await secure.get(location, headers=headers_a)
        assert mine.status_code == 200 and mine.json()["provision"]["type"] == provision
        assert (await secure.get(location, headers=headers_b)).status_code == 404
        found = await secure.get("/fhir/Consent", params={"_id": posted.json()["id"]}, headers=headers_a)
        assert [entry["resource"]["id"] for entry in found.json()["entry"]] == [posted.json()["id"]]


def _server_references(value: Any) -> list[str]:
    """Every reference by id (``Type/id``, versioned or not) in ``value``, however deep."""
    if isinstance(value, list):
        return [reference for item in value for reference in _server_references(item)]
    if not isinstance(value, dict):
        return []
    found = [str(value["reference"])] if isinstance(value.get("reference"), str) else []
    found = [r for r in found if not r.startswith(("#", "urn:", "http://", "https://"))]
    return found + [reference for item in value.values() for reference in _server_references(item)]


async def test_a_later_opposition_tells_the_revoked_referrals_parties_why_not_what_it_says(
    secure: httpx.AsyncClient, parties: World, database: Database
) -> None:
    """A's opposition revokes A's and B's referrals of one patient. B and the platform learn why (the
    ServiceRequest's revocation reason, the Tasks' statusReason, the Provenance's reason); the Consent — who
    informed the patient (here A's PractitionerRole, by id), who posted it — stays A's and the operator's: a
    404 to the others, a 422 of an unknown id when they name it, and nothing in what they read or are sent
    names it."""
    headers_a, headers_b = parties.headers["sender A"], parties.headers["sender B"]
    oppositions: list[str] = []
    for post in ("Consent", "message"):
        bundle = fresh(commune="75056")  # a patient A and B both refer
        a = await secure.post("/fhir", json=bundle, headers=headers_a | FHIR_JSON)
        b = await secure.post("/fhir", json=renamed(bundle, "-B"), headers=headers_b | FHIR_JSON)
        assert a.status_code == b.status_code == 200, (a.text, b.text)
        informed_by = next(loc.split("/_history")[0] for loc in _locations(a) if loc.startswith("PractitionerRole/"))
        of_b = next(loc.split("/_history")[0] for loc in _locations(b) if loc.startswith("ServiceRequest/"))
        assert (await secure.get(f"/fhir/{informed_by}", headers=headers_b)).status_code == 404  # A's, not B's
        if post == "Consent":
            consent = _consent_by_ins(bundle) | {"performer": [{"reference": informed_by}]}
            answer = await secure.post("/fhir/Consent", json=consent, headers=headers_a | FHIR_JSON)
            assert answer.status_code == 201, answer.text
            opposition = f"Consent/{answer.json()['id']}"
        else:
            message = _opposition(bundle)
            message["entry"][2]["resource"]["performer"] = [{"reference": informed_by}]
            answer = await secure.post("/fhir/$process-message", json=message, headers=headers_a | FHIR_JSON)
            assert answer.status_code == 200, answer.text
            opposition = answer.json()["entry"][0]["resource"]["focus"][0]["reference"].split("/fhir/")[-1]
        consent_id = opposition.split("/")[1]
        oppositions.append(consent_id)
        for role in ("sender A", "operator"):  # its poster and the operator read it in full
            full = await secure.get(f"/fhir/{opposition}", headers=parties.headers[role])
            assert full.status_code == 200 and full.json()["performer"] == [{"reference": informed_by}], role
        for role in ("sender B", "platform Paris"):  # the revoked referral's parties
            headers = parties.headers[role]
            assert (await secure.get(f"/fhir/{opposition}", headers=headers)).status_code == 404, (post, role)
            assert (await secure.get(f"/fhir/{opposition}/_history", headers=headers)).status_code == 404
            found = await secure.get("/fhir/Consent", params={"_id": consent_id}, headers=headers)
            assert found.json()["total"] == 0, (post, role)
            service_request = await secure.get(f"/fhir/{of_b}", headers=headers)
            reason = service_request.json()["extension"][-1]["valueCodeableConcept"]["coding"][0]
            assert service_request.json()["status"] == "revoked" and reason["code"] == "patient-opposition"
            tasks = (await secure.get("/fhir/Task", params={"focus": of_b}, headers=headers)).json().get("entry", [])
            assert tasks and all("objects" in t["resource"]["statusReason"]["text"] for t in tasks), (post, role, tasks)
            provenances = await secure.get("/fhir/Provenance", params={"target": of_b}, headers=headers)
            revoked = [
                e["resource"]
                for e in provenances.json()["entry"]
                if "patient-opposition" in e["resource"].get("reason", [{}])[0].get("text", "")
            ]
            assert len(revoked) == 1, (post, role, provenances.text)
            assert not [a for a in revoked[0]["agent"] if "identifier" in a["who"]], revoked[0]["agent"]  # not A
            for reference in _server_references(revoked):  # every reference there resolves for the caller
                assert (await secure.get(f"/fhir/{reference}", headers=headers)).status_code == 200, reference
            everything = [
                (await secure.get(f"/fhir/{of_b}/_history", headers=headers)).text,
                (await secure.get("/fhir/Provenance", headers=headers)).text,
                (await secure.get("/fhir/Task", params={"focus": of_b}, headers=headers)).text,
                (await secure.get("/fhir/Consent", headers=headers)).text,
            ]
            secrets = [consent_id, *([informed_by] if role == "sender B" else [])]  # the platform sees A's too
            assert not [text for text in everything for secret in secrets if secret in text], (post, role)
        # B naming it by id is answered as an unknown id.
        unknown = "Consent/0f0e0d0c-0000-4000-8000-000000000000"
        named = await secure.post(
            "/fhir", json=_referring_to(fresh(commune="75056"), opposition), headers=headers_b | FHIR_JSON
        )
        nowhere = await secure.post(
            "/fhir", json=_referring_to(fresh(commune="75056"), unknown), headers=headers_b | FHIR_JSON
        )
        assert _unresolved(named, opposition) == _unresolved(nowhere, unknown), named.text
    # What the platform is sent about the revocations (referral-update) carries no Consent of the opposition.
    async with UnitOfWork(database, write=False) as uow:
        updates = [e for e in await uow.outbox.entries() if e.event == "referral-update"]
        messages = await build_messages(uow, updates, "http://gateway.test/fhir")
    assert len(updates) == 4
    sent = [m for m in messages.values() if isinstance(m, bytes)]
    assert not [m for m in sent for consent_id in oppositions if consent_id.encode() in m]
    # Nothing at all while the referrals' own deliveries have not reached the platform (DESIGN §11): tried later.
    assert all(isinstance(m, NothingToSend) and m.later for m in messages.values())


async def test_the_poster_reads_its_consent_naming_a_patient_it_may_not_see_by_ins_only(
    secure: httpx.AsyncClient, parties: World
) -> None:
    """A's Consent for B's patient (by INS, or an opposition message carrying the Patient) is stored linked to B's
    Patient. A reads it — read, vread, history, searches — as it was answered: the patient by INS, never the id of
    a Patient A may not see; the operator reads the link; a Consent for a patient A sees keeps its reference."""
    headers_a, operator = parties.headers["sender A"], parties.headers["operator"]
    for post in ("Consent", "message"):
        of_b = fresh(commune="75056")  # a patient only B referred
        b = await secure.post("/fhir", json=of_b, headers=parties.headers["sender B"] | FHIR_JSON)
        assert b.status_code == 200, b.text
        patient = next(loc.split("/_history")[0] for loc in _locations(b) if loc.startswith("Patient/"))
        ins = _ins_of(of_b)
        if post == "Consent":
            answer = await secure.post("/fhir/Consent", json=_consent_by_ins(of_b), headers=headers_a | FHIR_JSON)
            assert answer.status_code == 201, answer.text
            consent = f"Consent/{answer.json()['id']}"
        else:
            answer = await secure.post("/fhir/$process-message", json=_opposition(of_b), headers=headers_a | FHIR_JSON)
            assert answer.status_code == 200, answer.text
            consent = answer.json()["entry"][0]["resource"]["focus"][0]["reference"].split("/fhir/")[-1]
        consent_id = consent.split("/")[1]
        read = await secure.get(f"/fhir/{consent}", headers=headers_a)
        vread = await secure.get(f"/fhir/{consent}/_history/1", headers=headers_a)
        history = await secure.get(f"/fhir/{consent}/_history", headers=headers_a)
        searches = [
            await secure.get("/fhir/Consent", params=params, headers=headers_a)
            for params in (
                {"_id": consent_id},
                {"patient:identifier": f"{ins['system']}|{ins['value']}"},
                {"status": "active"},
                {},
            )
        ]
        seen = [read.json(), vread.json(), *(e["resource"] for e in history.json()["entry"])]
        for found in searches:
            assert found.status_code == 200, found.text
            seen += [e["resource"] for e in found.json().get("entry", []) if e["resource"]["id"] == consent_id]
        assert len(seen) == 7, (post, seen)
        assert [resource["patient"] for resource in seen] == [{"identifier": ins}] * 7, post
        texts = [read.text, vread.text, history.text, *(found.text for found in searches)]
        assert not [text for text in texts if patient.split("/")[1] in text], post
        stored = await secure.get(f"/fhir/{consent}", headers=operator)
        assert stored.json()["patient"]["reference"] == patient, post  # the link, for the operator
    # A patient A may see: its Consent names the Patient by reference, in reads as in the answer.
    answer, mine = await _consent_by_ins_for_own_patient(secure, headers_a)
    read = await secure.get(f"/fhir/Consent/{answer.json()['id']}", headers=headers_a)
    assert read.json()["patient"]["reference"] == mine


async def test_an_opposition_for_a_patient_the_poster_may_not_see_still_revokes_and_holds_at_later_intakes(
    secure: httpx.AsyncClient, parties: World
) -> None:
    """A's opposition for B's patient (posted by INS, or as a message carrying the Patient) revokes B's open
    referral, and stops B's later referral for that INS at intake."""
    headers_a, headers_b = parties.headers["sender A"], parties.headers["sender B"]
    for post in ("Consent", "message"):
        of_b = fresh(commune="75056")
        b = await secure.post("/fhir", json=of_b, headers=headers_b | FHIR_JSON)
        assert b.status_code == 200, b.text
        first = next(loc.split("/_history")[0] for loc in _locations(b) if loc.startswith("ServiceRequest/"))
        if post == "Consent":
            answer = await secure.post("/fhir/Consent", json=_consent_by_ins(of_b), headers=headers_a | FHIR_JSON)
        else:
            answer = await secure.post("/fhir/$process-message", json=_opposition(of_b), headers=headers_a | FHIR_JSON)
        assert answer.status_code in (200, 201), answer.text
        assert (await secure.get(f"/fhir/{first}", headers=headers_b)).json()["status"] == "revoked", post
        later = await secure.post("/fhir", json=renamed(of_b, "-later"), headers=headers_b | FHIR_JSON)
        assert later.status_code == 200, later.text
        assert any("opposition" in issue["diagnostics"] for issue in _notes(later)), post
        again = next(loc.split("/_history")[0] for loc in _locations(later) if loc.startswith("ServiceRequest/"))
        assert (await secure.get(f"/fhir/{again}", headers=headers_b)).json()["status"] == "revoked", post


async def test_no_search_confirms_the_patient_a_consent_names_by_ins_only(
    secure: httpx.AsyncClient, parties: World
) -> None:
    """A's Consent by INS for B's patient is stored linked to B's Patient, which A reads by INS only: a search by
    that Patient's id — typed or not, counted or paged, or an ``ifNoneExist`` — answers A as for an unknown
    patient (nothing), while the operator's matches and A's Consent for a patient A sees matches for A."""
    headers_a, operator = parties.headers["sender A"], parties.headers["operator"]
    unknown = "Patient/0f0e0d0c-0000-4000-8000-000000000000"
    for post in ("Consent", "message"):
        of_b = fresh(commune="75056")  # a patient only B referred
        b = await secure.post("/fhir", json=of_b, headers=parties.headers["sender B"] | FHIR_JSON)
        assert b.status_code == 200, b.text
        patient = next(loc.split("/_history")[0] for loc in _locations(b) if loc.startswith("Patient/"))
        if post == "Consent":
            answer = await secure.post("/fhir/Consent", json=_consent_by_ins(of_b), headers=headers_a | FHIR_JSON)
            consent_id = answer.json()["id"]
        else:
            answer = await secure.post("/fhir/$process-message", json=_opposition(of_b), headers=headers_a | FHIR_JSON)
            consent_id = answer.json()["entry"][0]["resource"]["focus"][0]["reference"].split("/")[-1]
        assert answer.status_code in (200, 201), answer.text
        for target in (patient, unknown):
            for params in (
                {"patient": target},
                {"patient": target.split("/")[1]},
                {"patient": f"{target},{unknown}"},
                {"patient": target, "_summary": "count"},
                {"patient": target, "_count": "1"},
                {"patient": target, "status": "active"},
            ):
                found = await secure.get("/fhir/Consent", params=params, headers=headers_a)
                assert found.status_code == 200, found.text
                assert (found.json()["total"], found.json().get("entry", [])) == (0, []), (post, target, params)
                posted = await secure.post("/fhir/Consent/_search", data=params, headers=headers_a)
                assert posted.json()["total"] == 0, (post, target, params)
        # The forms the gateway does not support are refused alike, whoever the patient.
        for name in ("patient:Patient", "patient.identifier", "_has:Consent:patient:status"):
            refused = [
                (await secure.get("/fhir/Consent", params={name: value}, headers=headers_a)).status_code
                for value in (patient, unknown)
            ]
            assert refused == [400, 400], (name, refused)
        # Still found by what A posted, and by the operator through the link.
        ins = _ins_of(of_b)
        by_ins = await secure.get(
            "/fhir/Consent", params={"patient:identifier": f"{ins['system']}|{ins['value']}"}, headers=headers_a
        )
        assert [e["resource"]["id"] for e in by_ins.json()["entry"]] == [consent_id], post
        linked = await secure.get("/fhir/Consent", params={"patient": patient}, headers=operator)
        assert consent_id in [e["resource"]["id"] for e in linked.json()["entry"]], post
        # A conditional create by that Patient's id adopts nothing: A's Consent is not taken for a match.
        bundle = fresh(commune="75056")
        for entry in bundle["entry"]:
            if entry["resource"]["resourceType"] == "Consent":
                entry["request"]["ifNoneExist"] = f"patient={patient}"
        referral = await secure.post("/fhir", json=bundle, headers=headers_a | FHIR_JSON)
        assert referral.status_code == 200, referral.text
        assert not [loc for loc in _locations(referral) if consent_id in loc], post
    # A patient A sees: its Consent by INS is found by that Patient's id.
    answer, mine = await _consent_by_ins_for_own_patient(secure, headers_a)
    found = await secure.get("/fhir/Consent", params={"patient": mine}, headers=headers_a)
    assert answer.json()["id"] in [e["resource"]["id"] for e in found.json()["entry"]]


_NOWHERE = "0f0e0d0c-0000-4000-8000-000000000000"  # an id nothing on the gateway has


def _with_local_organization(bundle: dict[str, Any]) -> dict[str, Any]:
    """``bundle`` with one more Organization, under a local identifier only: no directory data, its sender's."""
    organization = {
        "resourceType": "Organization",
        "identifier": [{"system": "https://hopital-b.example.org/services", "value": f"coordination-{id(bundle)}"}],
        "name": "Service de coordination",
    }
    bundle["entry"].append(
        {
            "fullUrl": "urn:uuid:0a9a1b2c-0000-4000-8000-00000000000b",
            "resource": organization,
            "request": {"method": "POST", "url": "Organization"},
        }
    )
    return bundle


def _set(resource: dict[str, Any], element: str, reference: str) -> dict[str, Any]:
    """``resource`` naming ``reference`` in ``element`` (a Consent's, or a Patient's generalPractitioner)."""
    value = {"reference": reference}
    placed: dict[str, Any] = {
        "performer": {"performer": [value]},
        "organization": {"organization": [value]},
        "sourceReference": {"sourceReference": value},
        "provision.actor": {
            "provision": {
                **resource.get("provision", {}),
                "actor": [{"role": {"text": "informed"}, "reference": value}],
            }
        },
        "provision.data": {
            "provision": {**resource.get("provision", {}), "data": [{"meaning": "instance", "reference": value}]}
        },
        "generalPractitioner": {"generalPractitioner": [value]},
    }
    return resource | placed[element]


async def test_every_reference_of_a_consent_on_its_own_resolves_only_to_what_its_poster_may_see(
    secure: httpx.AsyncClient, parties: World
) -> None:
    """A Consent posted on its own (or in an opposition message, with its Patient) names by id only what its
    poster may see, or shared directory data, in every element — not only ``patient``: a resource of another
    party's is the 422 ``reference-unresolved`` of an id nothing has, at the element's FHIRPath, and nothing is
    stored."""
    headers_a, headers_b, operator = (parties.headers[r] for r in ("sender A", "sender B", "operator"))
    b = await secure.post("/fhir", json=_with_local_organization(fresh(commune="75056")), headers=headers_b | FHIR_JSON)
    a = await secure.post("/fhir", json=_with_local_organization(fresh(commune="75056")), headers=headers_a | FHIR_JSON)
    assert a.status_code == b.status_code == 200, (a.text, b.text)

    def party(answer: httpx.Response) -> dict[str, str]:
        located = [loc.split("/_history")[0] for loc in _locations(answer)]
        organizations = [loc for loc in located if loc.startswith("Organization/")]
        return {loc.split("/")[0]: loc for loc in located} | {"Organization": organizations[-1]}

    of_a, of_b = party(a), party(b)
    (of_b["CareTeam"],) = {
        ref
        for ref in (await secure.get(f"/fhir/{of_b['ServiceRequest']}", headers=headers_b)).text.split('"')
        if ref.startswith("CareTeam/")
    }
    (of_a["CareTeam"],) = {
        ref
        for ref in (await secure.get(f"/fhir/{of_a['ServiceRequest']}", headers=headers_a)).text.split('"')
        if ref.startswith("CareTeam/")
    }
    ins = _ins_of(fresh())  # a patient nobody referred: whatever fails, fails on the element named
    places = {  # element → the type it names here, and its FHIRPath in a Consent posted on its own
        "performer": ("PractitionerRole", "Consent.performer[0].reference"),
        "organization": ("Organization", "Consent.organization[0].reference"),
        "sourceReference": ("Consent", "Consent.sourceReference.reference"),
        "provision.actor": ("CareTeam", "Consent.provision.actor[0].reference.reference"),
        "provision.data": ("ServiceRequest", "Consent.provision.data[0].reference.reference"),
    }
    for resource_type, _ in places.values():  # B's, none of them directory data: A may not see them
        assert (await secure.get(f"/fhir/{of_b[resource_type]}", headers=headers_a)).status_code == 404
    for element, (resource_type, expression) in places.items():
        answers = {}
        for whose, reference in (("B's", of_b[resource_type]), ("nowhere", f"{resource_type}/{_NOWHERE}")):
            consent = _set(_consent_for({"identifier": ins}), element, reference)
            answer = await secure.post("/fhir/Consent", json=consent, headers=headers_a | FHIR_JSON)
            assert answer.status_code == 422, (element, whose, answer.text)
            assert [issue["expression"] for issue in answer.json()["issue"]] == [[expression]], answer.text
            assert reference.split("/")[1] not in answer.text.replace(reference, "")
            answers[whose] = _unresolved(answer, reference)
        assert answers["B's"] == answers["nowhere"], element
        own = _set(_consent_for({"identifier": ins}, "permit"), element, of_a[resource_type])
        mine = await secure.post("/fhir/Consent", json=own, headers=headers_a | FHIR_JSON)
        assert mine.status_code == 201, (element, mine.text)
    # Shared directory data (B's professional by RPPS, the platform) is named by anyone.
    performer = (await secure.get(f"/fhir/{of_b['ServiceRequest']}", headers=headers_b)).json()["performer"][0]
    for reference in (of_b["Practitioner"], performer["reference"]):
        shared = _set(_consent_for({"identifier": ins}, "permit"), "performer", reference)
        assert (await secure.post("/fhir/Consent", json=shared, headers=headers_a | FHIR_JSON)).status_code == 201
    stored = await secure.get(
        "/fhir/Consent", params={"patient:identifier": f"{ins['system']}|{ins['value']}"}, headers=operator
    )
    assert stored.json()["total"] == len(places) + 2  # A's own and the directory's; nothing refused was stored

    # An opposition message: its Consent, and the Patient it carries, under the same rule.
    for entry_index, element, expression in (
        (2, "performer", "Bundle.entry[2].resource.performer[0].reference"),
        (1, "generalPractitioner", "Bundle.entry[1].resource.generalPractitioner[0].reference"),
    ):
        answers = {}
        for whose, reference in (
            ("B's", of_b["PractitionerRole"]),
            ("nowhere", f"PractitionerRole/{_NOWHERE}"),
        ):
            message = _opposition(fresh(commune="75056"))
            entry = message["entry"][entry_index]
            entry["resource"] = _set(entry["resource"], element, reference)
            answer = await secure.post("/fhir/$process-message", json=message, headers=headers_a | FHIR_JSON)
            assert answer.status_code == 422, (element, whose, answer.text)
            assert [issue["expression"] for issue in answer.json()["issue"]] == [[expression]], answer.text
            answers[whose] = _unresolved(answer, reference)
        assert answers["B's"] == answers["nowhere"], element
        message = _opposition(fresh(commune="75056"))
        entry = message["entry"][entry_index]
        entry["resource"] = _set(entry["resource"], element, of_a["PractitionerRole"])
        answer = await secure.post("/fhir/$process-message", json=message, headers=headers_a | FHIR_JSON)
        assert answer.status_code == 200, (element, answer.text)


async def test_a_task_decision_names_by_id_only_what_its_maker_may_see(
    secure: httpx.AsyncClient, parties: World
) -> None:
    """What a decision adds by id — an output, a note's author — resolves only to what the deciding client may see
    (or directory data): another party's resource is the 422 of an id nothing has, and the Task stays as it was.
    The references the gateway wrote in the Task (focus, for, owner…) are not the decision's and are not checked."""
    sender = parties.headers["sender A"]
    answer = await secure.post("/fhir", json=fresh(commune="75056"), headers=sender | FHIR_JSON)  # dac-2022
    assert answer.status_code == 200, answer.text
    mine = {loc.split("/")[0]: loc.split("/_history")[0] for loc in _locations(answer)}
    tasks = await secure.get(
        "/fhir/Task", params={"focus": mine["ServiceRequest"], "code": "gp-information"}, headers=sender
    )
    task = f"Task/{tasks.json()['entry'][0]['resource']['id']}"
    of_b = parties.resources["ServiceRequest B"][0]
    assert (await secure.get(f"/fhir/{of_b}", headers=sender)).status_code == 404
    output_type = {"text": "GP informed"}
    for changes, expression in (
        ({"output": [{"type": output_type, "valueReference": {"reference": "{}"}}]}, "Task.output[0].valueReference"),
        ({"note": [{"authorReference": {"reference": "{}"}, "text": "told"}]}, "Task.note[0].authorReference"),
    ):
        answers = {}
        for whose, reference in (("B's", of_b), ("nowhere", f"ServiceRequest/{_NOWHERE}")):
            placed = json.loads(json.dumps(changes).replace("{}", reference))
            decided = await _decide(secure, sender, task, {"status": "in-progress"} | placed)
            assert decided.status_code == 422, (expression, whose, decided.text)
            assert [i["expression"] for i in decided.json()["issue"]] == [[f"{expression}.reference"]], decided.text
            answers[whose] = _unresolved(decided, reference)
        assert answers["B's"] == answers["nowhere"], expression
        assert (await secure.get(f"/fhir/{task}", headers=sender)).json()["meta"]["versionId"] == "1"
    own = {"output": [{"type": output_type, "valueReference": {"reference": mine["ServiceRequest"]}}]}
    decided = await _decide(secure, sender, task, {"status": "in-progress"} | own)
    assert decided.status_code == 200, decided.text


async def test_a_platform_client_reads_back_what_it_sent(secure: httpx.AsyncClient, parties: World) -> None:
    """A platform's client sees what is routed to its platform, and like any client what it posted itself: a peer
    gateway forwarding a referral routed elsewhere polls its Task and ServiceRequest (DESIGN §3, updates back)."""
    peer = await token_of(secure, PEER)
    service_request = await _posted_to_paris(secure, peer)
    assert (await secure.get(f"/fhir/{service_request}", headers=peer)).status_code == 200
    tasks = await secure.get("/fhir/Task", params={"focus": service_request}, headers=peer)
    assert tasks.json()["total"] >= 1
    # Only what it posted: the other senders' referrals stay out of its sight.
    other, _ = parties.resources["ServiceRequest A"]
    assert (await secure.get(f"/fhir/{other}", headers=peer)).status_code == 404


async def test_a_platform_client_acts_as_the_sender_on_the_referrals_it_posted(
    secure: httpx.AsyncClient, parties: World
) -> None:
    """It reads them back, but a referral it posted, routed to another platform, is not its platform's to work: on
    its Tasks it has a sender's rights (inform the GP), not a platform's (take in, answer for the GP)."""
    referrer = await token_of(secure, REFERRING_PLATFORM)  # Finistère's software
    tasks = await _tasks_by_code(secure, referrer, await _posted_to_paris(secure, referrer))
    intake = tasks["platform-intake"]
    refused = await _reject_intake(secure, referrer, intake)
    assert refused.status_code == 403, refused.text
    assert refused.json()["issue"][0]["details"]["coding"][0]["code"] == "decision-not-allowed"
    informing = tasks["gp-information"]
    informed = await secure.put(
        f"/fhir/Task/{informing['id']}",
        json=informing | {"status": "in-progress"},
        headers=referrer | FHIR_JSON | {"if-match": f'W/"{informing["meta"]["versionId"]}"'},
    )
    assert informed.status_code == 200, informed.text
    operator = parties.headers["operator"]
    assert (await secure.get(f"/fhir/Task/{intake['id']}", headers=operator)).json()["meta"]["versionId"] == "1"


async def test_a_platform_client_whose_platform_left_the_routing_file_acts_only_as_a_sender(
    secure: httpx.AsyncClient, secure_app: FastAPI, parties: World
) -> None:
    """Its token outlives the change: what it posted, it still reads and works as their sender — never as a
    platform (it took a platform's rights on every Task it saw)."""
    referrer = await token_of(secure, REFERRING_PLATFORM)
    service_request = await _posted_to_paris(secure, referrer)
    routing: RoutingTable = secure_app.state.routing
    platforms = {key: platform for key, platform in routing.platforms.items() if key != "dac-29"}
    secure_app.state.routing = dataclasses.replace(routing, platforms=platforms)
    try:
        tasks = await _tasks_by_code(secure, referrer, service_request)
        refused = await _reject_intake(secure, referrer, tasks["platform-intake"])
        assert refused.status_code == 403, refused.text
    finally:
        secure_app.state.routing = routing


def _patient_of(bundle: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"))


async def test_an_opposition_from_a_sender_never_a_party_needs_the_patients_identity(
    secure: httpx.AsyncClient, parties: World
) -> None:
    """Regression (issue 23, item 6): any sender revoked any patient's referrals with an opposition naming it by
    INS alone. A caller that is no party to the patient's referrals now names it with the INS and the five identity
    traits matching the identity on record (a message's Patient, or a Patient contained in the Consent); else 422
    patient-identity-required, and nothing is revoked."""
    headers_a, operator = parties.headers["sender A"], parties.headers["operator"]
    of_b = fresh(commune="75056")
    b = await secure.post("/fhir", json=of_b, headers=parties.headers["sender B"] | FHIR_JSON)
    assert b.status_code == 200, b.text
    service_request = next(loc.split("/_history")[0] for loc in _locations(b) if loc.startswith("ServiceRequest/"))

    wrong = _patient_of(of_b)
    next(n for n in wrong["name"] if n.get("use") == "official")["family"] = "AUTRE"
    by_ins_only = _opposition(of_b)
    by_ins_only["entry"][2]["resource"]["patient"] = {"identifier": _ins_of(of_b)}
    del by_ins_only["entry"][1]
    wrong_traits = _opposition(of_b)
    wrong_traits["entry"][1]["resource"] = wrong
    contained_wrong = _consent_for({"reference": "#p"}) | {"contained": [wrong | {"id": "p"}]}
    refused = [
        ("/fhir/Consent", _consent_for({"identifier": _ins_of(of_b)}), "Consent.patient"),
        ("/fhir/$process-message", by_ins_only, "Bundle.entry[1].resource.patient"),
        ("/fhir/$process-message", wrong_traits, "Bundle.entry[1].resource"),
        ("/fhir/Consent", contained_wrong, "Consent.contained"),
    ]
    for path, body, expression in refused:
        answer = await secure.post(path, json=body, headers=headers_a | FHIR_JSON)
        assert answer.status_code == 422, (path, answer.text)
        issue = answer.json()["issue"][0]
        assert issue["details"]["coding"][0]["code"] == "patient-identity-required"
        assert issue["expression"] == [expression]
        assert (await secure.get(f"/fhir/{service_request}", headers=operator)).json()["status"] == "active"
    assert (await secure.get("/fhir/Consent", params={"_summary": "count"}, headers=operator)).json()["total"] == 3

    # With the five traits as on record (the INS and the traits travel together): recorded, B's referral revoked.
    contained_right = _consent_for({"reference": "#p"}) | {"contained": [_patient_of(of_b) | {"id": "p"}]}
    answer = await secure.post("/fhir/Consent", json=contained_right, headers=headers_a | FHIR_JSON)
    assert answer.status_code == 201, answer.text
    assert "contained" not in answer.json() and answer.json()["patient"]["identifier"] == _ins_of(of_b)
    assert (await secure.get(f"/fhir/{service_request}", headers=operator)).json()["status"] == "revoked"

    # A party to the patient's referral names it by INS alone, as before; a message's Patient with its traits too.
    for carried in (False, True):
        mine = fresh(commune="75056")
        posted = await secure.post("/fhir", json=mine, headers=headers_a | FHIR_JSON)
        own = next(loc.split("/_history")[0] for loc in _locations(posted) if loc.startswith("ServiceRequest/"))
        if carried:  # from a sender never a party, allowed to record oppositions (system/Consent.c)
            opposing = await token_of(secure, OPPOSING_SENDER)
            answer = await secure.post("/fhir/$process-message", json=_opposition(mine), headers=opposing | FHIR_JSON)
            assert answer.status_code == 200, answer.text
        else:
            body = _consent_for({"identifier": _ins_of(mine)})
            answer = await secure.post("/fhir/Consent", json=body, headers=headers_a | FHIR_JSON)
            assert answer.status_code == 201, answer.text
        assert (await secure.get(f"/fhir/{own}", headers=operator)).json()["status"] == "revoked"


def _entry_of(bundle: dict[str, Any], resource_type: str) -> dict[str, Any]:
    return next(e for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type)


async def test_a_directory_record_is_matched_and_changed_by_an_operator_only(
    secure: httpx.AsyncClient, parties: World
) -> None:
    """Regression (issue 23, item 4): a sender whose referral named a Practitioner (RPPS) could PUT new names and
    telecoms over it, carried then by every party's referral, with no Provenance. A referral now matches a
    directory record and uses it as on file (an informational note says what it sent was not kept); a PUT entry
    on one is a 403 unless an operator sends it, and an operator's change leaves a Provenance."""
    operator = parties.headers["operator"]
    first = fresh(commune="75056")
    a = await secure.post("/fhir", json=first, headers=parties.headers["sender A"] | FHIR_JSON)
    assert a.status_code == 200, a.text
    practitioner = next(loc.split("/_history")[0] for loc in _locations(a) if loc.startswith("Practitioner/"))
    on_file = (await secure.get(f"/fhir/{practitioner}", headers=operator)).json()

    other = fresh(commune="75056")
    posted = _entry_of(other, "Practitioner")["resource"]
    posted["name"] = [{"use": "official", "family": "PIRATE", "given": ["Eve"]}]
    posted["telecom"] = [{"system": "phone", "value": "+33 6 00 00 00 00"}]
    b = await secure.post("/fhir", json=other, headers=parties.headers["sender B"] | FHIR_JSON)
    assert b.status_code == 200, b.text
    assert practitioner in [loc.split("/_history")[0] for loc in _locations(b)]
    notes = [
        issue["diagnostics"]
        for e in b.json()["entry"]
        for issue in (e["response"].get("outcome") or {}).get("issue", [])
    ]
    assert any(practitioner in note and "used as on file" in note for note in notes), notes
    assert (await secure.get(f"/fhir/{practitioner}", headers=operator)).json() == on_file

    def rewriting(bundle: dict[str, Any]) -> dict[str, Any]:
        entry = _entry_of(bundle, "Practitioner")
        entry["resource"] |= {"id": practitioner.split("/")[1], "name": [{"use": "official", "family": "PIRATE"}]}
        entry["request"] = {"method": "PUT", "url": practitioner}
        return bundle

    for role in ("sender A", "sender B"):  # both parties see it; neither rewrites it
        refused = await secure.post(
            "/fhir", json=rewriting(fresh(commune="75056")), headers=parties.headers[role] | FHIR_JSON
        )
        assert refused.status_code == 403, refused.text
        issue = refused.json()["issue"][0]
        assert issue["details"]["coding"][0]["code"] == "directory-record-read-only"
        index = next(i for i, e in enumerate(fresh()["entry"]) if e["resource"]["resourceType"] == "Practitioner")
        assert issue["expression"] == [f"Bundle.entry[{index}].request.method"]
    assert (await secure.get(f"/fhir/{practitioner}", headers=operator)).json() == on_file
    direct = await secure.put(f"/fhir/{practitioner}", json=on_file, headers=parties.headers["sender A"] | FHIR_JSON)
    assert direct.status_code == 405  # no update route for it: only a transaction's entry could

    writer = await token_of(secure, DIRECTORY_OPERATOR)
    changed = await secure.post("/fhir", json=rewriting(fresh(commune="75056")), headers=writer | FHIR_JSON)
    assert changed.status_code == 200, changed.text
    now = (await secure.get(f"/fhir/{practitioner}", headers=operator)).json()
    assert now["name"][0]["family"] == "PIRATE" and now["meta"]["versionId"] == "2"
    provenances = await secure.get(
        "/fhir/Provenance", params={"target": f"{practitioner}/_history/2"}, headers=operator
    )
    (recorded,) = (entry["resource"] for entry in provenances.json()["entry"])
    assert recorded["activity"]["text"] == "directory record changed by an operator"
    agents = [agent["who"].get("identifier") for agent in recorded["agent"]]
    assert {"system": CLIENT_ID_SYSTEM, "value": DIRECTORY_OPERATOR.client_id} in agents
