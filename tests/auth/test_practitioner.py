"""The GP's own software (DESIGN §11), with authentication on: a ``practitioner`` client bound to RPPS numbers sees
the Tasks its professionals own and their referral, and decides them; the requester relays the GP's answer only
on the GP's behalf (X-Provenance); a referral held for the GP is not the platform's until routed or escalated.

What is not the caller's is a 404, for reads, searches and decisions alike: nothing says it exists."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from gateway.routing.config import RoutingTable
from gateway.store import Database
from gateway.workflow.deadlines import escalate_due
from gateway.workflow.tasks import REQUEST_STATUS_REASON
from tests.auth.conftest import GP_SOFTWARE, HAINAUT_PLATFORM, OPERATOR, OTHER_GP, OTHER_SENDER, SENDER, token_of
from tests.conftest import load_example
from tests.support.referrals import fresh
from tests.workflow.test_decisions_api import pta_2016_referral

FHIR_JSON = {"Content-Type": "application/fhir+json"}
CLIENT_ID = "https://fhir.dac-gateway.org/client-id"
RPPS = "https://rpps.esante.gouv.fr"
IDNPS = "urn:oid:1.2.250.1.71.4.2.1"
GP_RPPS = "10100345676"  # GP_SOFTWARE's professional: the examples' patients' GP
REASON = {"statusReason": {"text": "prise en charge déjà organisée par le cabinet"}}


def _gp_entry(bundle: dict[str, Any], resource_type: str) -> dict[str, Any]:
    """The entry of the GP's Practitioner, or of its PractitionerRole (the one Patient.generalPractitioner names)."""
    practitioner = next(
        e
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Practitioner"
        and any(i["value"] == GP_RPPS for i in e["resource"]["identifier"])
    )
    if resource_type == "Practitioner":
        return practitioner
    return next(
        e
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "PractitionerRole"
        and e["resource"]["practitioner"]["reference"] == practitioner["fullUrl"]
    )


def _shaped(bundle: dict[str, Any], owner: str, identifier: str) -> dict[str, Any]:
    """``bundle`` whose GP is named by its PractitionerRole or its Practitioner, and whose Practitioner carries
    the RPPS, or only the IDNPS derived from it."""
    bundle = copy.deepcopy(bundle)
    practitioner = _gp_entry(bundle, "Practitioner")
    if owner == "Practitioner":
        role = _gp_entry(bundle, "PractitionerRole")
        bundle["entry"].remove(role)
        patient = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
        patient["generalPractitioner"] = [{"reference": practitioner["fullUrl"]}]
    if identifier == "IDNPS":
        resource = practitioner["resource"]
        resource["identifier"] = [i for i in resource["identifier"] if i["system"] == IDNPS]
        practitioner["request"]["ifNoneExist"] = f"identifier={IDNPS}|8{GP_RPPS}"
    return bundle


async def _posted(http: httpx.AsyncClient, bundle: dict[str, Any], headers: dict[str, str]) -> dict[str, str]:
    """The referral posted by ``headers``' client: its stored references by type (the first of each)."""
    answer = await http.post("/fhir", json=bundle, headers=headers | FHIR_JSON)
    assert answer.status_code == 200, answer.text
    references: dict[str, str] = {}
    for entry in answer.json()["entry"]:
        reference = entry["response"]["location"].split("/_history")[0]
        references.setdefault(reference.split("/")[0], reference)
    return references


async def _task(http: httpx.AsyncClient, service_request: str, code: str) -> dict[str, Any]:
    operator = await token_of(http, OPERATOR)
    found = await http.get("/fhir/Task", params={"focus": service_request, "code": code}, headers=operator)
    (task,) = [entry["resource"] for entry in found.json().get("entry", [])]
    return task


async def _decide(
    http: httpx.AsyncClient,
    headers: dict[str, str],
    task: dict[str, Any],
    changes: dict[str, Any],
    x_provenance: dict[str, Any] | None = None,
) -> httpx.Response:
    extra = {"X-Provenance": json.dumps(x_provenance)} if x_provenance else {}
    version = {"If-Match": f'W/"{task["meta"]["versionId"]}"'}
    return await http.put(
        f"/fhir/Task/{task['id']}", json=task | changes, headers=headers | FHIR_JSON | version | extra
    )


async def _decision_provenance(http: httpx.AsyncClient, task: dict[str, Any]) -> dict[str, Any]:
    operator = await token_of(http, OPERATOR)
    target = f"Task/{task['id']}/_history/{int(task['meta']['versionId']) + 1}"
    found = await http.get("/fhir/Provenance", params={"target": f"Task/{task['id']}"}, headers=operator)
    (provenance,) = [
        e["resource"] for e in found.json()["entry"] if any(t["reference"] == target for t in e["resource"]["target"])
    ]
    return provenance


def _revocation_reasons(service_request: dict[str, Any]) -> list[str]:
    return [
        e["valueCodeableConcept"]["coding"][0]["code"]
        for e in service_request.get("extension", [])
        if e["url"] == REQUEST_STATUS_REASON
    ]


def _issue(answer: httpx.Response) -> tuple[int, str, list[str]]:
    issue = answer.json()["issue"][0]
    return answer.status_code, issue["details"]["coding"][0]["code"], issue.get("expression", [])


async def _held(http: httpx.AsyncClient, bundle: dict[str, Any] | None = None) -> tuple[dict[str, str], dict[str, Any]]:
    """A nurse's referral under pta-2016 (DAC Hainaut), held for the GP: its references, its gp-validation Task."""
    posted = await _posted(http, bundle or pta_2016_referral(), await token_of(http, SENDER))
    return posted, await _task(http, posted["ServiceRequest"], "gp-validation")


@pytest.mark.parametrize("owner", ["PractitionerRole", "Practitioner"])
@pytest.mark.parametrize("identifier", ["RPPS", "IDNPS"])
async def test_the_gps_software_sees_its_professionals_tasks_and_their_referral(
    secure: httpx.AsyncClient, owner: str, identifier: str
) -> None:
    posted, task = await _held(secure, _shaped(pta_2016_referral(), owner, identifier))
    assert task["owner"]["reference"].startswith(f"{owner}/")
    gp = await token_of(secure, GP_SOFTWARE)
    for params in ({"status": "requested"}, {"owner": task["owner"]["reference"], "code": "gp-validation"}):
        found = (await secure.get("/fhir/Task", params=params, headers=gp)).json()
        assert [e["resource"]["id"] for e in found.get("entry", [])] == [task["id"]], params
    service_request = (await secure.get(f"/fhir/{posted['ServiceRequest']}", headers=gp)).json()
    assert service_request["status"] == "draft"
    care_team = next(
        i["reference"] for i in service_request["supportingInfo"] if i["reference"].startswith("CareTeam/")
    )
    for reference in (posted["Patient"], posted["Consent"], care_team, f"Task/{task['id']}"):
        assert (await secure.get(f"/fhir/{reference}", headers=gp)).status_code == 200, reference
    # Another physician's software: none of it exists, in reads and searches.
    other = await token_of(secure, OTHER_GP)
    for reference in (posted["ServiceRequest"], posted["Patient"], posted["Consent"], f"Task/{task['id']}"):
        assert (await secure.get(f"/fhir/{reference}", headers=other)).status_code == 404, reference
    for resource_type in ("Task", "ServiceRequest", "Patient", "Consent"):
        assert (await secure.get(f"/fhir/{resource_type}", headers=other)).json()["total"] == 0, resource_type


async def test_the_gp_accepts_and_the_referral_is_routed(secure: httpx.AsyncClient) -> None:
    posted, task = await _held(secure)
    gp, platform = await token_of(secure, GP_SOFTWARE), await token_of(secure, HAINAUT_PLATFORM)
    assert (await secure.get(f"/fhir/{posted['ServiceRequest']}", headers=platform)).status_code == 404
    answer = await _decide(secure, gp, task, {"status": "accepted"})
    assert answer.status_code == 200, answer.text
    assert (await secure.get(f"/fhir/{posted['ServiceRequest']}", headers=gp)).json()["status"] == "active"
    intake = await _task(secure, posted["ServiceRequest"], "platform-intake")
    assert intake["businessStatus"]["coding"][0]["code"] == "queued"
    # The decision's Provenance names the professional — the Practitioner behind the owner — and the software.
    operator = await token_of(secure, OPERATOR)
    role = (await secure.get(f"/fhir/{task['owner']['reference']}", headers=operator)).json()
    provenance = await _decision_provenance(secure, task)
    assert [(a["type"]["coding"][0]["code"], a["who"]) for a in provenance["agent"]] == [
        ("author", {"reference": role["practitioner"]["reference"]}),
        ("enterer", {"identifier": {"system": CLIENT_ID, "value": GP_SOFTWARE.client_id}}),
    ]
    # Routed: the platform's now; of the referral's Tasks the GP sees its own only.
    assert (await secure.get(f"/fhir/{posted['ServiceRequest']}", headers=platform)).status_code == 200
    assert (await secure.get(f"/fhir/Task/{intake['id']}", headers=platform)).status_code == 200
    assert (await secure.get(f"/fhir/Task/{intake['id']}", headers=gp)).status_code == 404
    mine = (await secure.get("/fhir/Task", params={"focus": posted["ServiceRequest"]}, headers=gp)).json()
    assert [e["resource"]["id"] for e in mine["entry"]] == [task["id"]]


async def test_the_gp_rejects_with_a_reason_and_the_referral_is_revoked(secure: httpx.AsyncClient) -> None:
    posted, task = await _held(secure)
    gp = await token_of(secure, GP_SOFTWARE)
    assert _issue(await _decide(secure, gp, task, {"status": "rejected"}))[:2] == (422, "status-reason-required")
    answer = await _decide(secure, gp, task, {"status": "rejected"} | REASON)
    assert answer.status_code == 200, answer.text
    service_request = (await secure.get(f"/fhir/{posted['ServiceRequest']}", headers=gp)).json()
    assert service_request["status"] == "revoked"
    assert _revocation_reasons(service_request) == ["gp-rejected"]
    # Never routed: the platform never sees it.
    platform = await token_of(secure, HAINAUT_PLATFORM)
    assert (await secure.get(f"/fhir/{posted['ServiceRequest']}", headers=platform)).status_code == 404
    operator = await token_of(secure, OPERATOR)
    found = await secure.get("/fhir/Task", params={"focus": posted["ServiceRequest"]}, headers=operator)
    assert [e["resource"]["code"]["coding"][0]["code"] for e in found.json()["entry"]] == ["gp-validation"]


async def test_another_practitioner_gets_404_on_the_decision(secure: httpx.AsyncClient) -> None:
    posted, task = await _held(secure)
    other = await token_of(secure, OTHER_GP)
    assert _issue(await _decide(secure, other, task, {"status": "accepted"}))[:2] == (404, "resource-not-found")
    patch = [{"op": "replace", "path": "/status", "value": "accepted"}]
    patched = await secure.patch(
        f"/fhir/Task/{task['id']}",
        json=patch,
        headers=other | {"If-Match": 'W/"1"', "Content-Type": "application/json-patch+json"},
    )
    assert patched.status_code == 404
    assert (await _task(secure, posted["ServiceRequest"], "gp-validation"))["meta"] == task["meta"]


async def test_the_gps_software_names_only_the_professional_in_x_provenance(secure: httpx.AsyncClient) -> None:
    _, task = await _held(secure)
    gp = await token_of(secure, GP_SOFTWARE)
    as_requester = {"resourceType": "Provenance", "agent": [{"who": task["requester"]}]}
    refused = await _decide(secure, gp, task, {"status": "accepted"}, as_requester)
    assert _issue(refused) == (403, "provenance-agent-mismatch", ["Provenance.agent[0]"])
    as_owner = {
        "resourceType": "Provenance",
        "agent": [{"who": task["owner"], "type": {"coding": [{"code": "verifier"}]}}],
    }
    answer = await _decide(secure, gp, task, {"status": "accepted"}, as_owner)
    assert answer.status_code == 200, answer.text
    agents = (await _decision_provenance(secure, task))["agent"]
    assert agents[0]["type"]["coding"][0]["code"] == "verifier"
    assert agents[0]["who"]["reference"].startswith("Practitioner/")  # the professional, not their role


async def test_the_gp_reads_the_referrals_consent_not_the_opposition_that_revoked_it(secure: httpx.AsyncClient) -> None:
    posted, task = await _held(secure)
    sender = await token_of(secure, SENDER)
    opposition = await secure.post(
        "/fhir/Consent", json=load_example("consent-opposition.json"), headers=sender | FHIR_JSON
    )
    assert opposition.status_code == 201, opposition.text
    gp = await token_of(secure, GP_SOFTWARE)
    assert (await secure.get(f"/fhir/Task/{task['id']}", headers=gp)).json()["status"] == "cancelled"
    assert (await secure.get(f"/fhir/Consent/{opposition.json()['id']}", headers=gp)).status_code == 404
    found = (await secure.get("/fhir/Consent", headers=gp)).json()
    assert [f"Consent/{e['resource']['id']}" for e in found["entry"]] == [posted["Consent"]]


async def test_on_a_referral_it_posted_a_practitioner_is_its_sender_not_the_gp(secure: httpx.AsyncClient) -> None:
    """Another physician's software posts a referral held for Dr Lilas: it may withdraw it, not answer for her."""
    posted = await _posted(secure, pta_2016_referral(), await token_of(secure, OTHER_GP))
    task = await _task(secure, posted["ServiceRequest"], "gp-validation")
    other = await token_of(secure, OTHER_GP)
    assert _issue(await _decide(secure, other, task, {"status": "accepted"}))[:2] == (403, "decision-not-allowed")
    withdrawn = await _decide(secure, other, task, {"status": "cancelled"} | REASON)
    assert withdrawn.status_code == 200, withdrawn.text
    (agent,) = (await _decision_provenance(secure, task))["agent"]
    assert agent["who"] == {"identifier": {"system": CLIENT_ID, "value": OTHER_GP.client_id}}


async def test_the_gp_reports_being_informed(secure: httpx.AsyncClient) -> None:
    """Under dac-2022 the GP is informed (gp-information): under way, done; never an acceptance."""
    posted = await _posted(secure, fresh(commune="75056"), await token_of(secure, SENDER))
    task = await _task(secure, posted["ServiceRequest"], "gp-information")
    gp = await token_of(secure, GP_SOFTWARE)
    refused = await _decide(secure, gp, task, {"status": "rejected"} | REASON)
    assert _issue(refused)[:2] == (403, "decision-not-allowed")
    answer = await _decide(secure, gp, task, {"status": "in-progress"})
    assert answer.status_code == 200, answer.text
    done = await _decide(secure, gp, answer.json(), {"status": "completed"})
    assert done.status_code == 200, done.text


# --- the requester relays the GP's answer ----------------------------------------------------------------------


def _relay(task: dict[str, Any], on_behalf_of: dict[str, Any]) -> dict[str, Any]:
    itself = {"identifier": {"system": CLIENT_ID, "value": SENDER.client_id}}
    return {"resourceType": "Provenance", "agent": [{"who": itself, "onBehalfOf": on_behalf_of}]}


async def test_the_requester_relays_the_gps_acceptance_on_the_gps_behalf(secure: httpx.AsyncClient) -> None:
    posted, task = await _held(secure)
    sender = await token_of(secure, SENDER)
    answer = await _decide(secure, sender, task, {"status": "accepted"}, _relay(task, task["owner"]))
    assert answer.status_code == 200, answer.text
    assert (await secure.get(f"/fhir/{posted['ServiceRequest']}", headers=sender)).json()["status"] == "active"
    assert (await _task(secure, posted["ServiceRequest"], "platform-intake"))["status"] == "requested"
    (agent,) = (await _decision_provenance(secure, task))["agent"]
    assert agent["who"] == {"identifier": {"system": CLIENT_ID, "value": SENDER.client_id}}
    assert agent["onBehalfOf"] == task["owner"]


async def test_the_requester_relays_the_gps_rejection(secure: httpx.AsyncClient) -> None:
    posted, task = await _held(secure)
    sender = await token_of(secure, SENDER)
    answer = await _decide(secure, sender, task, {"status": "rejected"} | REASON, _relay(task, task["owner"]))
    assert answer.status_code == 200, answer.text
    service_request = (await secure.get(f"/fhir/{posted['ServiceRequest']}", headers=sender)).json()
    assert service_request["status"] == "revoked"
    assert _revocation_reasons(service_request) == ["gp-rejected"]


async def test_without_the_gp_behind_it_the_requester_does_not_answer(secure: httpx.AsyncClient) -> None:
    posted, task = await _held(secure)
    sender = await token_of(secure, SENDER)
    bare = await _decide(secure, sender, task, {"status": "accepted"})
    assert _issue(bare) == (403, "decision-not-allowed", ["Task.status"])
    assert "onBehalfOf" in bare.json()["issue"][0]["diagnostics"]
    # A forged relay: on behalf of someone else than the Task's owner (here the requester).
    forged = await _decide(secure, sender, task, {"status": "accepted"}, _relay(task, task["requester"]))
    assert _issue(forged) == (403, "provenance-agent-mismatch", ["Provenance.agent[0].onBehalfOf"])
    assert task["requester"]["reference"] in forged.json()["issue"][0]["diagnostics"]
    # Another sender: the Task does not exist for it.
    other = await token_of(secure, OTHER_SENDER)
    assert (await _decide(secure, other, task, {"status": "accepted"}, _relay(task, task["owner"]))).status_code == 404
    unchanged = await _task(secure, posted["ServiceRequest"], "gp-validation")
    assert (unchanged["status"], unchanged["meta"]) == ("requested", task["meta"])


# --- a held referral is not the platform's yet -----------------------------------------------------------------


async def test_a_held_referral_is_not_the_platforms_until_escalated(
    secure: httpx.AsyncClient, database: Database, routing: RoutingTable
) -> None:
    bundle = pta_2016_referral()
    bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["resourceType"] != "Consent"]  # + patient-info
    posted, task = await _held(secure, bundle)
    information = await _task(secure, posted["ServiceRequest"], "patient-information")  # owned by the platform
    platform = await token_of(secure, HAINAUT_PLATFORM)
    held = (posted["ServiceRequest"], posted["Patient"], f"Task/{task['id']}", f"Task/{information['id']}")
    for reference in held:
        assert (await secure.get(f"/fhir/{reference}", headers=platform)).status_code == 404, reference
    for resource_type in ("ServiceRequest", "Task", "Patient", "CareTeam", "Provenance"):
        assert (await secure.get(f"/fhir/{resource_type}", headers=platform)).json()["total"] == 0, resource_type
    # At the deadline the platform is asked to contact the GP: from then on it is its referral.
    assert await escalate_due(database, datetime.now(UTC) + timedelta(days=60), routing=routing) == 1
    for reference in held:
        assert (await secure.get(f"/fhir/{reference}", headers=platform)).status_code == 200, reference
    found = (await secure.get("/fhir/Task", params={"focus": posted["ServiceRequest"]}, headers=platform)).json()
    codes = sorted(e["resource"]["code"]["coding"][0]["code"] for e in found["entry"])
    assert codes == ["contact-gp", "gp-validation", "patient-information"]
