"""Decisions on Tasks through the HTTP API: validation, rejection, versions, forbidden changes, Provenance."""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
from lxml import etree

from gateway.fhir.primitives import utc_now
from gateway.routing.config import RoutingTable
from gateway.store import Database
from gateway.workflow.deadlines import escalate_due
from tests.conftest import load_example

FHIR_JSON = {"content-type": "application/fhir+json"}
NS = {"f": "http://hl7.org/fhir"}
VALENCIENNES = {
    "use": "home",
    "line": ["3 rue de Famars"],
    "city": "Valenciennes",
    "postalCode": "59300",
    "extension": [
        {
            "url": "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-address-insee-code",
            "valueCoding": {
                "system": "https://mos.esante.gouv.fr/NOS/TRE_R13-CommuneOM/FHIR/TRE-R13-CommuneOM",
                "code": "59606",
            },
        }
    ],
}


def pta_2016_referral(suffix: str = "") -> dict[str, Any]:
    """The hospital nurse's referral, for a patient living where the platform applies the 2016 rule."""
    bundle = copy.deepcopy(load_example("referral-hospital-nurse.json"))
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Patient":
            resource["address"] = [VALENCIENNES]
        if resource["resourceType"] == "ServiceRequest":
            resource["identifier"][0]["value"] += f"-pta{suffix}"
    bundle["identifier"]["value"] += f"-pta{suffix}"
    return bundle


async def _post(client: httpx.AsyncClient, bundle: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def _gp_validation(client: httpx.AsyncClient) -> tuple[dict[str, Any], dict[str, Any]]:
    answer = await _post(client, pta_2016_referral())
    sr_entry = next(e for e in answer["entry"] if "/ServiceRequest/" in e["fullUrl"])
    sr_reference = sr_entry["response"]["location"].split("/_history")[0]
    service_request = (await client.get(f"/fhir/{sr_reference}")).json()
    tasks = (await client.get("/fhir/Task", params={"focus": sr_reference})).json()["entry"]
    (task,) = [t["resource"] for t in tasks if t["resource"]["code"]["coding"][0]["code"] == "gp-validation"]
    return service_request, task


async def test_waiting_referral_then_gp_accepts(client: httpx.AsyncClient) -> None:
    service_request, task = await _gp_validation(client)
    assert service_request["status"] == "draft"
    assert task["status"] == "requested" and task["owner"]["reference"].startswith("PractitionerRole/")
    assert task["restriction"]["period"]["end"] > task["authoredOn"]

    accepted = copy.deepcopy(task) | {"status": "accepted"}
    response = await client.put(f"/fhir/Task/{task['id']}", json=accepted, headers=FHIR_JSON | {"if-match": 'W/"1"'})
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == 'W/"2"'
    assert response.json()["businessStatus"]["coding"][0]["code"] == "accepted"
    after = (await client.get(f"/fhir/ServiceRequest/{service_request['id']}")).json()
    assert after["status"] == "active" and after["meta"]["versionId"] == "2"
    task_reference = f"Task/{task['id']}"
    provenance = (await client.get("/fhir/Provenance", params={"target": task_reference})).json()
    by_activity = {entry["resource"]["activity"]["text"]: entry["resource"] for entry in provenance["entry"]}
    held = by_activity.pop("referral held for the GP's validation, not routed")  # the gateway's, at intake
    assert {t["reference"] for t in held["target"]} == {f"ServiceRequest/{service_request['id']}", task_reference}
    assert held["agent"][0]["who"] == {"type": "Device", "display": "DAC Gateway"}
    assert "pta-2016" in held["reason"][0]["text"]
    (decision,) = by_activity.values()
    targets = {t["reference"] for t in decision["target"]}
    assert targets == {f"Task/{task['id']}/_history/2", f"ServiceRequest/{service_request['id']}/_history/2"}
    assert decision["agent"][0]["who"] == task["owner"]
    # Validated, the referral is routed: the gateway's routing decision, caused by the GP's.
    routed = await client.get("/fhir/Provenance", params={"target": f"ServiceRequest/{service_request['id']}"})
    (routing,) = [
        e["resource"] for e in routed.json()["entry"] if e["resource"]["activity"]["text"].startswith("routed")
    ]
    assert [a["who"] for a in routing["agent"]] == [{"type": "Device", "display": "DAC Gateway"}, task["owner"]]
    assert any(t["reference"].startswith("Task/") for t in routing["target"])


async def test_gp_rejects_with_a_reason(client: httpx.AsyncClient) -> None:
    service_request, task = await _gp_validation(client)
    headers = FHIR_JSON | {"if-match": 'W/"1"'}
    no_reason = await client.put(f"/fhir/Task/{task['id']}", json=task | {"status": "rejected"}, headers=headers)
    assert no_reason.status_code == 422
    assert no_reason.json()["issue"][0]["details"]["coding"][0]["code"] == "status-reason-required"
    rejected = task | {"status": "rejected", "statusReason": {"text": "Je suis déjà la situation avec l'IDE."}}
    assert (await client.put(f"/fhir/Task/{task['id']}", json=rejected, headers=headers)).status_code == 200
    after = (await client.get(f"/fhir/ServiceRequest/{service_request['id']}")).json()
    assert after["status"] == "revoked"
    reasons = [
        e for e in after["extension"] if e["url"] == "http://hl7.org/fhir/StructureDefinition/request-statusReason"
    ]
    assert reasons[0]["valueCodeableConcept"]["coding"][0]["code"] == "gp-rejected"
    # nothing back from a final state
    again = await client.put(
        f"/fhir/Task/{task['id']}", json=task | {"status": "accepted"}, headers=FHIR_JSON | {"if-match": 'W/"2"'}
    )
    assert again.status_code == 409
    assert "allowed from rejected: none" in again.json()["issue"][0]["diagnostics"]


async def test_versions_are_checked(client: httpx.AsyncClient) -> None:
    _, task = await _gp_validation(client)
    accepted = task | {"status": "accepted"}
    missing = await client.put(f"/fhir/Task/{task['id']}", json=accepted, headers=FHIR_JSON)
    assert missing.status_code == 428
    # If-Match: * holds for any version (RFC 9110): it names none, so it is refused as no If-Match is, not as a 400.
    anything = await client.put(f"/fhir/Task/{task['id']}", json=accepted, headers=FHIR_JSON | {"if-match": "*"})
    assert anything.status_code == 428 and anything.json()["issue"][0]["details"]["coding"][0]["code"] == (
        "if-match-required"
    )
    stale = await client.put(f"/fhir/Task/{task['id']}", json=accepted, headers=FHIR_JSON | {"if-match": 'W/"7"'})
    assert stale.status_code == 412 and 'W/"1"' in stale.json()["issue"][0]["diagnostics"]
    assert (await client.get(f"/fhir/Task/{task['id']}")).json()["status"] == "requested"


@pytest.mark.parametrize(
    ("change", "expression"),
    [
        ({"owner": {"reference": "Organization/someone-else"}}, "Task.owner"),
        ({"focus": {"reference": "ServiceRequest/other"}}, "Task.focus"),
        ({"for": {"reference": "Patient/other"}}, "Task.for"),
        ({"requester": {"reference": "Practitioner/other"}}, "Task.requester"),
    ],
)
async def test_a_decision_never_changes_who_or_what(
    client: httpx.AsyncClient, change: dict[str, Any], expression: str
) -> None:
    _, task = await _gp_validation(client)
    response = await client.put(
        f"/fhir/Task/{task['id']}",
        json=task | {"status": "accepted"} | change,
        headers=FHIR_JSON | {"if-match": 'W/"1"'},
    )
    assert response.status_code == 422
    assert response.json()["issue"][0]["expression"] == [expression]


@pytest.mark.parametrize("body_id", [None, "another-task"])
async def test_a_put_body_without_the_url_id_is_a_400(client: httpx.AsyncClient, body_id: str | None) -> None:
    """R4 http.html#update: the body's id must be the URL's; none, or another, is a 400 — not a 422 on an element
    the decision would change — and nothing changes."""
    _, task = await _gp_validation(client)
    body = {key: value for key, value in task.items() if key != "id"} | {"status": "accepted"}
    if body_id is not None:
        body["id"] = body_id
    response = await client.put(f"/fhir/Task/{task['id']}", json=body, headers=FHIR_JSON | {"if-match": 'W/"1"'})
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert issue["details"]["coding"][0]["code"] == "entry-request-invalid" and issue["expression"] == ["Task.id"]
    assert (await client.get(f"/fhir/Task/{task['id']}")).json()["meta"]["versionId"] == "1"


@pytest.mark.parametrize(
    ("operations", "status"),
    [
        # Valid JSON Patches this Task refuses: 422 (R5 http.html#patch: a failing test op is a 422).
        (
            [
                {"op": "test", "path": "/status", "value": "accepted"},
                {"op": "replace", "path": "/status", "value": "completed"},
            ],
            422,
        ),
        ([{"op": "remove", "path": "/nothing"}], 422),
        # No valid JSON Patch: 400.
        ([{"op": "frobnicate", "path": "/status"}], 400),
        ([{"op": "replace", "path": "status", "value": "completed"}], 400),
        ({"op": "replace", "path": "/status", "value": "completed"}, 400),
        # Operations without what they need, which jsonpatch finds only when applying them: no valid patch either.
        ([{"op": "replace", "path": "/status"}], 400),
        ([{"op": "test", "path": "/status"}], 400),
        ([{"op": "move", "path": "/status"}], 400),
        # The result is processed as an update: without its id, a 400 as for a PUT.
        ([{"op": "remove", "path": "/id"}], 400),
    ],
)
async def test_patch_failures_are_told_apart(client: httpx.AsyncClient, operations: Any, status: int) -> None:
    _, task = await _gp_validation(client)
    response = await client.patch(
        f"/fhir/Task/{task['id']}",
        json=operations,
        headers={"content-type": "application/json-patch+json", "if-match": 'W/"1"'},
    )
    assert response.status_code == status, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    assert (await client.get(f"/fhir/Task/{task['id']}")).json()["meta"]["versionId"] == "1"


async def test_forbidden_transition_says_what_is_allowed(client: httpx.AsyncClient) -> None:
    _, task = await _gp_validation(client)
    response = await client.put(
        f"/fhir/Task/{task['id']}", json=task | {"status": "draft"}, headers=FHIR_JSON | {"if-match": 'W/"1"'}
    )
    assert response.status_code == 409
    diagnostics = response.json()["issue"][0]["diagnostics"]
    assert "from requested to draft" in diagnostics and "accepted" in diagnostics and "rejected" in diagnostics


@pytest.mark.parametrize(
    ("status", "code"), [("acepted", "binding-required"), (None, "element-required"), (7, "value-invalid")]
)
async def test_a_status_that_is_no_task_status_is_a_422(client: httpx.AsyncClient, status: Any, code: str) -> None:
    """Regression: a typo in the status was a 403 decision-not-allowed (even for an operator), as if the caller
    lacked a right. It is a 422 on Task.status, by PUT and by PATCH, and nothing changes."""
    _, task = await _gp_validation(client)
    body = task | {"status": status} if status is not None else {k: v for k, v in task.items() if k != "status"}
    put = await client.put(f"/fhir/Task/{task['id']}", json=body, headers=FHIR_JSON | {"if-match": 'W/"1"'})
    operation = {"op": "replace", "path": "/status", "value": status} if status is not None else {}
    patch = await client.patch(
        f"/fhir/Task/{task['id']}",
        json=[operation or {"op": "remove", "path": "/status"}],
        headers={"content-type": "application/json-patch+json", "if-match": 'W/"1"'},
    )
    for response in (put, patch):
        assert response.status_code == 422, response.text
        (issue,) = response.json()["issue"]
        assert issue["details"]["coding"][0]["code"] == code and issue["expression"] == ["Task.status"]
    assert (await client.get(f"/fhir/Task/{task['id']}")).json()["meta"]["versionId"] == "1"


async def test_a_decision_keeps_the_profile_the_task_claims(client: httpx.AsyncClient) -> None:
    """Regression: the meta sent with a decision was dropped whole, and with it the Task's meta.profile (dac-task):
    from its second version on, a Task no longer said which profile it conforms to."""
    _, task = await _gp_validation(client)
    assert task["meta"]["profile"] == ["https://fhir.dac-gateway.org/StructureDefinition/dac-task"]
    decided = {k: v for k, v in task.items() if k != "meta"} | {"status": "accepted"}
    response = await client.put(f"/fhir/Task/{task['id']}", json=decided, headers=FHIR_JSON | {"if-match": 'W/"1"'})
    assert response.status_code == 200, response.text
    for answer in (response.json(), (await client.get(f"/fhir/Task/{task['id']}")).json()):
        assert answer["meta"]["profile"] == task["meta"]["profile"] and answer["meta"]["versionId"] == "2"


async def test_a_decision_in_xml_on_the_task_read_in_xml(client: httpx.AsyncClient) -> None:
    """Regression: XML wrote the gateway's instants as Python prints them (``…41.782000+00:00``) and read them
    back as ``…41.782000Z``, so the Task read in XML, its status changed and PUT back in XML, was a 422
    task-element-immutable on authoredOn and restriction: no XML client could decide. Dates now go through XML
    as they are stored."""
    service_request, task = await _gp_validation(client)
    read = await client.get(f"/fhir/Task/{task['id']}", headers={"accept": "application/fhir+xml"})
    root = etree.fromstring(read.content)
    assert root.find("f:authoredOn", NS).get("value") == task["authoredOn"]
    assert root.find("f:restriction/f:period/f:end", NS).get("value") == task["restriction"]["period"]["end"]
    root.find("f:status", NS).set("value", "accepted")
    response = await client.put(
        f"/fhir/Task/{task['id']}",
        content=etree.tostring(root),
        headers={"content-type": "application/fhir+xml", "accept": "application/fhir+xml", "if-match": 'W/"1"'},
    )
    assert response.status_code == 200, response.text
    assert etree.fromstring(response.content).find("f:status", NS).get("value") == "accepted"
    assert (await client.get(f"/fhir/ServiceRequest/{service_request['id']}")).json()["status"] == "active"


async def test_prefer_return_shapes_the_answer_of_a_decision(client: httpx.AsyncClient) -> None:
    """Regression: Prefer: return=minimal and return=OperationOutcome were ignored (the Task came back whole).
    FHIR R4 http: minimal is no body, OperationOutcome an outcome; the headers are the same either way."""
    _, task = await _gp_validation(client)
    minimal = await client.put(
        f"/fhir/Task/{task['id']}",
        json=task | {"status": "received"},
        headers=FHIR_JSON | {"if-match": 'W/"1"', "prefer": "return=minimal"},
    )
    assert minimal.status_code == 200 and minimal.content == b""
    assert minimal.headers["etag"] == 'W/"2"' and minimal.headers["content-location"].endswith("/_history/2")
    outcome = await client.patch(
        f"/fhir/Task/{task['id']}",
        json=[{"op": "replace", "path": "/status", "value": "accepted"}],
        headers={
            "content-type": "application/json-patch+json",
            "if-match": 'W/"2"',
            "prefer": "return=OperationOutcome",
        },
    )
    assert outcome.status_code == 200 and outcome.headers["etag"] == 'W/"3"'
    (issue,) = outcome.json()["issue"]
    assert issue["severity"] == "information" and f"Task/{task['id']}/_history/3" in issue["diagnostics"]
    whole = await client.get(f"/fhir/Task/{task['id']}")
    assert whole.json()["status"] == "accepted"


async def test_json_patch_and_on_behalf_provenance(client: httpx.AsyncClient) -> None:
    service_request, task = await _gp_validation(client)
    platform = service_request["performer"][0]["reference"]
    x_provenance = json.dumps(
        {
            "resourceType": "Provenance",
            "agent": [{"who": {"reference": platform}, "onBehalfOf": {"reference": task["owner"]["reference"]}}],
        }
    )
    response = await client.patch(
        f"/fhir/Task/{task['id']}",
        json=[{"op": "replace", "path": "/status", "value": "completed"}],
        headers={"content-type": "application/json-patch+json", "if-match": 'W/"1"', "x-provenance": x_provenance},
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "completed" and "end" in response.json()["executionPeriod"]
    assert (await client.get(f"/fhir/ServiceRequest/{service_request['id']}")).json()["status"] == "active"
    found = (await client.get("/fhir/Provenance", params={"agent": platform})).json()["entry"]
    # The decision's, and the routing it caused (the gateway routed, the platform's decision was why).
    assert sorted(e["resource"]["activity"]["text"] for e in found) == [
        "Task requested → completed",
        "routed to DAC Hainaut",
    ]
    for entry in found:
        assert entry["resource"]["agent"][-1]["onBehalfOf"] == task["owner"]
    bad_patch = await client.patch(
        f"/fhir/Task/{task['id']}",
        json=[{"op": "replace", "path": "/nothing/here", "value": 1}],
        headers={"content-type": "application/json-patch+json", "if-match": 'W/"2"'},
    )
    assert bad_patch.status_code == 422  # a valid patch this Task cannot take (test_patch_failures_are_…)


async def test_deadline_escalation_is_done_once(
    client: httpx.AsyncClient, database: Database, routing: RoutingTable
) -> None:
    service_request, task = await _gp_validation(client)
    assert await escalate_due(database, routing=routing) == 0  # not due yet
    later = utc_now() + timedelta(days=30)
    assert await escalate_due(database, later, routing=routing) == 1
    assert await escalate_due(database, later, routing=routing) == 0  # already escalated
    escalated = (await client.get(f"/fhir/Task/{task['id']}")).json()
    assert escalated["status"] == "requested"
    assert escalated["businessStatus"]["coding"][0]["code"] == "escalated"
    contact = (
        await client.get(
            "/fhir/Task", params={"focus": f"ServiceRequest/{service_request['id']}", "code": "contact-gp"}
        )
    ).json()
    (entry,) = contact["entry"]
    assert entry["resource"]["owner"]["reference"] == service_request["performer"][0]["reference"]
    assert entry["resource"]["partOf"] == [{"reference": f"Task/{task['id']}"}]


async def test_concurrent_escalations_do_not_double(
    client: httpx.AsyncClient, database: Database, routing: RoutingTable
) -> None:
    import asyncio

    await _gp_validation(client)
    later = utc_now() + timedelta(days=30)
    results = await asyncio.gather(*(escalate_due(database, later, routing=routing) for _ in range(4)))
    assert sum(results) == 1
    contact = (await client.get("/fhir/Task", params={"code": "contact-gp"})).json()
    assert contact["total"] == 1


async def test_gp_validation_declared_by_the_requester(client: httpx.AsyncClient) -> None:
    answer = await _post(client, load_example("referral-gp-validated.json"))
    location = next(e["response"]["location"] for e in answer["entry"] if "/ServiceRequest/" in e["fullUrl"])
    reference = location.split("/_history")[0]
    assert (await client.get(f"/fhir/{reference}")).json()["status"] == "active"
    tasks = (await client.get("/fhir/Task", params={"focus": reference})).json()["entry"]
    by_code = {t["resource"]["code"]["coding"][0]["code"]: t["resource"] for t in tasks}
    assert by_code["gp-validation"]["status"] == "completed"
    assert by_code["platform-intake"]["businessStatus"]["coding"][0]["code"] == "queued"
    provenance = (
        await client.get("/fhir/Provenance", params={"target": f"Task/{by_code['gp-validation']['id']}"})
    ).json()
    (entry,) = provenance["entry"]  # the declared validation; routing's targets the platform-intake Task
    informant = next(a for a in entry["resource"]["agent"] if a["type"]["coding"][0]["code"] == "informant")
    service_request = (await client.get(f"/fhir/{reference}")).json()
    assert informant["who"] == {"reference": service_request["requester"]["reference"]}


async def test_nurse_under_the_2016_rule_waits(client: httpx.AsyncClient) -> None:
    answer = await _post(client, load_example("referral-nurse-pta-2016.json"))
    location = next(e["response"]["location"] for e in answer["entry"] if "/ServiceRequest/" in e["fullUrl"])
    reference = location.split("/_history")[0]
    assert (await client.get(f"/fhir/{reference}")).json()["status"] == "draft"
    codes = {
        t["resource"]["code"]["coding"][0]["code"]
        for t in (await client.get("/fhir/Task", params={"focus": reference})).json()["entry"]
    }
    assert codes == {"gp-validation"}  # no platform-intake: nothing is routed before the GP validates
