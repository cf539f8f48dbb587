"""The patient's right of opposition (L1110-12): at intake, later, and across senders."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from gateway.errors import Conflict
from gateway.routing.config import RoutingTable
from gateway.store import Database
from gateway.store.repository import ResourceRepository, StoredResource
from gateway.workflow.opposition import record_consent
from tests.conftest import load_example
from tests.support.referrals import renamed, resource

FHIR_JSON = {"content-type": "application/fhir+json"}
INS_NIR = "urn:oid:1.2.250.1.213.1.4.8"
R4_CONSENT = "http://hl7.org/fhir/StructureDefinition/Consent"


async def _post(client: httpx.AsyncClient, bundle: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    response = await client.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    sr_entry = next(e for e in response.json()["entry"] if "/ServiceRequest/" in e["fullUrl"])
    reference = sr_entry["response"]["location"].split("/_history")[0]
    return sr_entry, (await client.get(f"/fhir/{reference}")).json()


def _ins(bundle: dict[str, Any]) -> str:
    return str(next(i["value"] for i in resource(bundle, "Patient")["identifier"] if i["system"] == INS_NIR))


def _consent_deny(ins: str) -> dict[str, Any]:
    return {
        "resourceType": "Consent",
        "status": "active",
        "scope": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"identifier": {"system": INS_NIR, "value": ins}},
        "dateTime": "2026-11-23T10:00:00+01:00",
        "policyRule": {"text": "Code de la santé publique, art. L1110-12"},
        "provision": {"type": "deny"},
    }


async def test_opposition_in_the_referral_revokes_it(client: httpx.AsyncClient) -> None:
    sr_entry, service_request = await _post(client, load_example("referral-opposition.json"))
    assert service_request["status"] == "revoked"
    assert "performer" not in service_request
    note = sr_entry["response"]["outcome"]["issue"]
    assert any("L1110-12" in issue["diagnostics"] for issue in note)
    tasks = (await client.get("/fhir/Task", params={"focus": f"ServiceRequest/{service_request['id']}"})).json()
    assert tasks["total"] == 0


async def test_an_opposition_on_record_holds_for_later_referrals(client: httpx.AsyncClient) -> None:
    bundle = load_example("referral-opposition.json")
    await _post(client, bundle)
    later = renamed(bundle, "-later")
    resource(later, "Consent")["provision"]["type"] = "permit"  # another sender says "informed, no objection"
    _, service_request = await _post(client, later)
    assert service_request["status"] == "revoked"


async def test_an_opposition_no_longer_active_does_not_hold(client: httpx.AsyncClient) -> None:
    """The look-up at intake fetches the patient's Consents whatever their status (see _opposition_on_record
    for why) and keeps the active denials only."""
    bundle = load_example("referral-opposition.json")
    resource(bundle, "Consent")["status"] = "inactive"  # withdrawn since
    await _post(client, bundle)
    later = renamed(bundle, "-later")
    resource(later, "Consent")["provision"]["type"] = "permit"
    resource(later, "Consent")["status"] = "active"
    _, service_request = await _post(client, later)
    assert service_request["status"] != "revoked"


async def test_a_later_opposition_revokes_open_referrals_and_cancels_their_tasks(client: httpx.AsyncClient) -> None:
    bundle = load_example("referral-social-worker.json")  # no Consent: a patient-information Task is open
    _, service_request = await _post(client, bundle)
    assert service_request["status"] == "active"
    response = await client.post("/fhir/Consent", json=_consent_deny(_ins(bundle)), headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    assert response.headers["location"].startswith("http://gateway.test/fhir/Consent/")
    assert response.json()["patient"]["reference"] == service_request["subject"]["reference"]
    after = (await client.get(f"/fhir/ServiceRequest/{service_request['id']}")).json()
    assert after["status"] == "revoked"
    tasks = (await client.get("/fhir/Task", params={"focus": f"ServiceRequest/{service_request['id']}"})).json()
    assert tasks["total"] >= 1
    assert {entry["resource"]["status"] for entry in tasks["entry"]} == {"cancelled"}


async def test_an_opposition_before_any_referral_holds_by_ins(client: httpx.AsyncClient) -> None:
    bundle = load_example("referral-overseas.json")
    response = await client.post("/fhir/Consent", json=_consent_deny(_ins(bundle)), headers=FHIR_JSON)
    assert response.status_code == 201
    assert "reference" not in response.json()["patient"]  # no such patient yet: kept by identifier
    _, service_request = await _post(client, bundle)
    assert service_request["status"] == "revoked"


async def test_opposition_message(client: httpx.AsyncClient) -> None:
    bundle = load_example("referral-corsica.json")
    _, service_request = await _post(client, bundle)
    patient = copy.deepcopy(resource(bundle, "Patient"))
    consent = _consent_deny(_ins(bundle)) | {"patient": {"reference": "urn:uuid:7d2c2b1e-4a0f-4b5e-9c1e-0a0a0a0a0a02"}}
    message = {
        "resourceType": "Bundle",
        "type": "message",
        "timestamp": "2026-11-23T10:00:00+01:00",
        "entry": [
            {
                "fullUrl": "urn:uuid:7d2c2b1e-4a0f-4b5e-9c1e-0a0a0a0a0a01",
                "resource": {
                    "resourceType": "MessageHeader",
                    "id": "7d2c2b1e-4a0f-4b5e-9c1e-0a0a0a0a0a01",
                    "eventCoding": {
                        "system": "https://fhir.dac-gateway.org/CodeSystem/dac-message-event",
                        "code": "opposition",
                    },
                    "source": {"endpoint": "https://logiciel.example.org/fhir"},
                    "focus": [{"reference": "urn:uuid:7d2c2b1e-4a0f-4b5e-9c1e-0a0a0a0a0a03"}],
                },
            },
            {"fullUrl": "urn:uuid:7d2c2b1e-4a0f-4b5e-9c1e-0a0a0a0a0a02", "resource": patient},
            {"fullUrl": "urn:uuid:7d2c2b1e-4a0f-4b5e-9c1e-0a0a0a0a0a03", "resource": consent},
        ],
    }
    response = await client.post("/fhir/$process-message", json=message, headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    header = response.json()["entry"][0]["resource"]
    assert header["response"]["code"] == "ok"
    assert "/Consent/" in header["focus"][0]["reference"]
    assert (await client.get(f"/fhir/ServiceRequest/{service_request['id']}")).json()["status"] == "revoked"
    assert (await client.get("/fhir/Patient", params={"identifier": f"{INS_NIR}|{_ins(bundle)}"})).json()["total"] == 1


async def test_consent_endpoint_checks_its_input(client: httpx.AsyncClient) -> None:
    no_patient = _consent_deny("x")
    del no_patient["patient"]
    response = await client.post("/fhir/Consent", json=no_patient, headers=FHIR_JSON)
    assert response.status_code == 422
    unknown = _consent_deny("x") | {"patient": {"reference": "Patient/nobody"}}
    response = await client.post("/fhir/Consent", json=unknown, headers=FHIR_JSON)
    assert response.status_code == 422
    assert response.json()["issue"][0]["expression"] == ["Consent.patient.reference"]


@pytest.mark.parametrize(
    ("element", "value", "code", "expression"),
    [
        # A typo in the provision is no opposition: stored, it would neither revoke nor hold for later referrals.
        ("provision", {"type": "Deny"}, "binding-required", "Consent.provision.type"),
        ("status", "bogus", "binding-required", "Consent.status"),
        ("patient", {"identifier": {"system": INS_NIR, "value": "123"}}, "ins-key-invalid", None),
    ],
)
async def test_consent_endpoint_refuses_what_validate_refuses(
    client: httpx.AsyncClient, element: str, value: Any, code: str, expression: str | None
) -> None:
    """POST /fhir/Consent checks what $validate checks against R4's Consent (bindings, identifier keys): a 422
    naming the element, and nothing stored — the referral stays open."""
    bundle = load_example("referral-hospital-nurse.json")
    _, service_request = await _post(client, bundle)
    consent = _consent_deny(_ins(bundle)) | {element: value}
    validated = await client.post(
        "/fhir/Consent/$validate", params={"profile": R4_CONSENT}, json=consent, headers=FHIR_JSON
    )
    expected = [i for i in validated.json()["issue"] if i["severity"] == "error"]
    assert [i["details"]["coding"][0]["code"] for i in expected] == [code]
    response = await client.post("/fhir/Consent", json=consent, headers=FHIR_JSON)
    assert response.status_code == 422, response.text
    issues = response.json()["issue"]
    assert [i["details"]["coding"][0]["code"] for i in issues] == [code]
    assert issues[0]["expression"] == expected[0]["expression"]
    if expression is not None:
        assert issues[0]["expression"] == [expression]
    assert (await client.get("/fhir/Consent", params={"patient:identifier": f"{INS_NIR}|{_ins(bundle)}"})).json()[
        "total"
    ] == 0
    assert (await client.get(f"/fhir/ServiceRequest/{service_request['id']}")).json()["status"] == "active"


async def test_consent_answer_as_prefer_return_asks(client: httpx.AsyncClient) -> None:
    bundle = load_example("referral-hospital-nurse.json")
    headers = FHIR_JSON | {"prefer": "return=minimal"}
    response = await client.post("/fhir/Consent", json=_consent_deny(_ins(bundle)), headers=headers)
    assert response.status_code == 201 and response.content == b""
    assert (await client.get(response.headers["location"])).json()["provision"]["type"] == "deny"


async def test_opposition_examples(client: httpx.AsyncClient) -> None:
    _, nurse_referral = await _post(client, load_example("referral-hospital-nurse.json"))
    _, corsica_referral = await _post(client, load_example("referral-corsica.json"))
    consent = await client.post("/fhir/Consent", json=load_example("consent-opposition.json"), headers=FHIR_JSON)
    assert consent.status_code == 201, consent.text
    message = await client.post(
        "/fhir/$process-message", json=load_example("message-opposition.json"), headers=FHIR_JSON
    )
    assert message.status_code == 200, message.text
    for service_request in (nurse_referral, corsica_referral):
        assert (await client.get(f"/fhir/ServiceRequest/{service_request['id']}")).json()["status"] == "revoked"


def _stale_first_update(monkeypatch: pytest.MonkeyPatch, resource_type: str, times: int) -> list[str]:
    """Simulate a concurrent change: the first ``times`` updates of a ``resource_type`` are made against the
    version before the one read, so the store's compare-and-set finds the row moved and returns None."""
    original = ResourceRepository.update
    bumped: list[str] = []

    async def update(self: ResourceRepository, current: StoredResource, *args: Any, **kwargs: Any) -> Any:
        if current.resource_type == resource_type and len(bumped) < times:
            bumped.append(current.reference)
            current = dataclasses.replace(current, version_id=current.version_id - 1)
        return await original(self, current, *args, **kwargs)

    monkeypatch.setattr(ResourceRepository, "update", update)
    return bumped


@pytest.mark.parametrize("resource_type", ["ServiceRequest", "Task"])
async def test_an_opposition_racing_a_change_is_run_again_and_still_revokes(
    client: httpx.AsyncClient,
    database: Database,
    routing: RoutingTable,
    monkeypatch: pytest.MonkeyPatch,
    resource_type: str,
) -> None:
    bundle = load_example("referral-social-worker.json")  # no Consent: a patient-information Task is open
    _, service_request = await _post(client, bundle)
    bumped = _stale_first_update(monkeypatch, resource_type, times=1)
    outcome = await record_consent(database, routing, _consent_deny(_ins(bundle)))
    assert bumped and outcome.revoked == [f"ServiceRequest/{service_request['id']}"]
    after = (await client.get(f"/fhir/ServiceRequest/{service_request['id']}")).json()
    assert after["status"] == "revoked"
    tasks = (await client.get("/fhir/Task", params={"focus": f"ServiceRequest/{service_request['id']}"})).json()
    assert {entry["resource"]["status"] for entry in tasks["entry"]} == {"cancelled"}
    consents = (await client.get("/fhir/Consent")).json()
    assert consents["total"] == 1  # the first run was rolled back as a whole


async def test_an_opposition_that_keeps_racing_is_refused_and_stores_nothing(
    client: httpx.AsyncClient, database: Database, routing: RoutingTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = load_example("referral-social-worker.json")
    _, service_request = await _post(client, bundle)
    _stale_first_update(monkeypatch, "ServiceRequest", times=100)
    with pytest.raises(Conflict):
        await record_consent(database, routing, _consent_deny(_ins(bundle)))
    after = (await client.get(f"/fhir/ServiceRequest/{service_request['id']}")).json()
    assert after["status"] == "active"
    assert (await client.get("/fhir/Consent")).json()["total"] == 0


CONSENT_ID = "https://hospital.example/fhir/consent-id"


def _identified(consent: dict[str, Any], value: str) -> dict[str, Any]:
    return consent | {"identifier": [{"system": CONSENT_ID, "value": value}]}


async def test_an_opposition_posted_again_with_if_none_exist_is_not_stored_twice(client: httpx.AsyncClient) -> None:
    """A retry after a timeout (FHIR conditional create): the first post stores and revokes; the retry matches it,
    answers 200 with it, and writes nothing — no second Consent, no revocation or Provenance run again."""
    bundle = load_example("referral-social-worker.json")
    _, service_request = await _post(client, bundle)
    consent = _identified(_consent_deny(_ins(bundle)), "OPP-1")
    headers = FHIR_JSON | {"if-none-exist": f"identifier={CONSENT_ID}|OPP-1"}
    first = await client.post("/fhir/Consent", json=consent, headers=headers)
    assert first.status_code == 201, first.text
    revoked = (await client.get(f"/fhir/ServiceRequest/{service_request['id']}")).json()
    provenances = (await client.get("/fhir/Provenance", params={"_summary": "count"})).json()["total"]
    again = await client.post("/fhir/Consent", json=consent, headers=headers)
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert again.headers["etag"] == first.headers["etag"] and "location" not in again.headers
    assert again.headers["content-location"] == f"http://gateway.test/fhir/Consent/{first.json()['id']}/_history/1"
    assert (await client.get("/fhir/Consent")).json()["total"] == 1
    assert (await client.get(f"/fhir/ServiceRequest/{service_request['id']}")).json() == revoked
    assert (await client.get("/fhir/Provenance", params={"_summary": "count"})).json()["total"] == provenances
    minimal = await client.post("/fhir/Consent", json=consent, headers=headers | {"prefer": "return=OperationOutcome"})
    assert minimal.status_code == 200
    assert minimal.json()["issue"][0]["diagnostics"] == f"Consent/{first.json()['id']}/_history/1 matched"


async def test_if_none_exist_matching_several_consents_is_a_412(client: httpx.AsyncClient) -> None:
    ins = _ins(load_example("referral-overseas.json"))
    for value in ("OPP-2", "OPP-3"):
        posted = await client.post("/fhir/Consent", json=_identified(_consent_deny(ins), value), headers=FHIR_JSON)
        assert posted.status_code == 201, posted.text
    headers = FHIR_JSON | {"if-none-exist": f"patient:identifier={INS_NIR}|{ins}"}
    answer = await client.post("/fhir/Consent", json=_consent_deny(ins), headers=headers)
    assert answer.status_code == 412, answer.text
    issue = answer.json()["issue"][0]
    assert issue["details"]["coding"][0]["code"] == "conditional-multiple-matches"
    assert issue["expression"] == ["http.If-None-Exist"]
    assert (await client.get("/fhir/Consent")).json()["total"] == 2


@pytest.mark.parametrize("criteria", ["colour=blue", "_lastUpdated=yesterday", "identifier:above=x"])
async def test_an_if_none_exist_that_is_no_valid_search_is_a_400_naming_the_header(
    client: httpx.AsyncClient, criteria: str
) -> None:
    ins = _ins(load_example("referral-overseas.json"))
    answer = await client.post(
        "/fhir/Consent", json=_consent_deny(ins), headers=FHIR_JSON | {"if-none-exist": criteria}
    )
    assert answer.status_code == 400, answer.text
    issue = answer.json()["issue"][0]
    assert issue["expression"] == ["http.If-None-Exist"]
    assert issue["diagnostics"].startswith("If-None-Exist: ")
    assert (await client.get("/fhir/Consent")).json()["total"] == 0


@pytest.mark.parametrize(
    "criteria", ["", "&", "?", "_format=json", "_count=1", "_summary=count", "_sort=-_lastUpdated", "identifier=a%00b"]
)
async def test_an_if_none_exist_that_selects_nothing_is_a_400_not_a_match_of_any_consent(
    client: httpx.AsyncClient, criteria: str
) -> None:
    """Without a criterion the search would match every Consent the caller sees, and the first one would stand in
    for the opposition posted: nothing stored, nothing revoked, and a 200."""
    ins = _ins(load_example("referral-overseas.json"))
    first = await client.post("/fhir/Consent", json=_identified(_consent_deny(ins), "OPP-1"), headers=FHIR_JSON)
    assert first.status_code == 201, first.text
    answer = await client.post(
        "/fhir/Consent", json=_consent_deny(ins), headers=FHIR_JSON | {"if-none-exist": criteria}
    )
    assert answer.status_code == 400, answer.text
    issue = answer.json()["issue"][0]
    assert issue["expression"] == ["http.If-None-Exist"]
    assert issue["diagnostics"].startswith("If-None-Exist: ")
    assert (await client.get("/fhir/Consent")).json()["total"] == 1


async def test_identical_conditional_oppositions_at_once_store_one(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Posts racing (DESIGN §10): each searches before any commits — held there a moment, so that on PostgreSQL
    they all do — and still one Consent: the first takes the conditional create's key, the others fail on it, are
    run again and find the first's Consent."""
    original = ResourceRepository.find

    async def slow_find(self: ResourceRepository, *args: Any, **kwargs: Any) -> list[StoredResource]:
        found = await original(self, *args, **kwargs)
        await asyncio.sleep(0.05)
        return found

    monkeypatch.setattr(ResourceRepository, "find", slow_find)
    # A patient not referred yet: no referral to revoke, whose compare-and-set would serialize the posts anyway.
    consent = _identified(_consent_deny(_ins(load_example("referral-overseas.json"))), "OPP-4")
    headers = FHIR_JSON | {"if-none-exist": f"identifier={CONSENT_ID}|OPP-4"}
    answers = await asyncio.gather(*(client.post("/fhir/Consent", json=consent, headers=headers) for _ in range(6)))
    assert sorted(answer.status_code for answer in answers) == [200] * 5 + [201], [a.text for a in answers]
    assert len({answer.json()["id"] for answer in answers}) == 1
    assert (await client.get("/fhir/Consent")).json()["total"] == 1


async def test_a_consent_is_checked_against_dac_consent_only_when_it_claims_it(client: httpx.AsyncClient) -> None:
    """README: a posted Consent is checked against every profile in its meta.profile. Not claiming dac-consent, an
    opposition without dateTime is recorded; claiming it, it is a 422 on what it lacks, nothing stored."""
    bundle = load_example("referral-hospital-nurse.json")
    undated = {key: value for key, value in _consent_deny(_ins(bundle)).items() if key != "dateTime"}
    claiming = undated | {"meta": {"profile": ["https://fhir.dac-gateway.org/StructureDefinition/dac-consent"]}}
    refused = await client.post("/fhir/Consent", json=claiming, headers=FHIR_JSON)
    assert refused.status_code == 422, refused.text
    assert [i["expression"] for i in refused.json()["issue"]] == [["Consent.dateTime"]]
    assert (await client.post("/fhir/Consent", json=undated, headers=FHIR_JSON)).status_code == 201


#: Regression (issue 23, item 5): spellings of referral-corsica's INS 278052A00404539 that name no stored INS.
NON_CANONICAL_INS = ["278052a00404539", "２７８０５２Ａ００４０４５３９", "27805٢A00404539"]


@pytest.mark.parametrize("value", NON_CANONICAL_INS)
async def test_a_non_canonical_ins_is_refused_on_every_path_and_revokes_nothing(
    client: httpx.AsyncClient, value: str
) -> None:
    """An opposition by a lower-case Corsican ``a`` or non-ASCII digits was stored with 201 and revoked nothing
    (the INS is compared as stored). The one INS check (``gateway.fhir.france.ins_problem``) now refuses it with a
    422 naming the element, on each path that carries an INS; the referral stays active."""
    bundle = load_example("referral-corsica.json")
    _, service_request = await _post(client, bundle)
    assert service_request["status"] == "active"

    response = await client.post("/fhir/Consent", json=_consent_deny(value), headers=FHIR_JSON)
    assert response.status_code == 422, response.text
    issue = response.json()["issue"][0]
    assert issue["details"]["coding"][0]["code"] == "ins-key-invalid"
    assert issue["expression"] == ["Consent.patient.identifier.value"]

    message = load_example("message-opposition.json")
    patient = resource(message, "Patient")
    position = next(i for i, ident in enumerate(patient["identifier"]) if ident["system"] == INS_NIR)
    patient["identifier"][position]["value"] = value
    response = await client.post("/fhir/$process-message", json=message, headers=FHIR_JSON)
    assert response.status_code == 422, response.text
    index = next(i for i, e in enumerate(message["entry"]) if e["resource"]["resourceType"] == "Patient")
    expressions = [expression for issue in response.json()["issue"] for expression in issue.get("expression", [])]
    assert any(expression.startswith(f"Bundle.entry[{index}].resource") for expression in expressions)

    for path, name in (("/fhir/Patient", "identifier"), ("/fhir/Consent", "patient:identifier")):
        response = await client.get(path, params={name: f"{INS_NIR}|{value}"})
        assert response.status_code == 422, response.text
        assert response.json()["issue"][0]["expression"] == [name]
    response = await client.post(
        "/fhir/Consent",
        json=_consent_deny(_ins(bundle)),
        headers=FHIR_JSON | {"If-None-Exist": f"patient:identifier={INS_NIR}|{quote(value)}"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["issue"][0]["expression"] == ["http.If-None-Exist"]

    assert (await client.get(f"/fhir/ServiceRequest/{service_request['id']}")).json()["status"] == "active"
