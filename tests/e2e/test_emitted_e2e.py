"""One of each kind of answer and message the gateway emits, on a gateway of this module's own.

The end-to-end conftest checks every FHIR body a test receives, and every message a loopback platform receives,
with two independent validators (tests/support/fhir_validators.py). The other e2e modules reach most answers as a
side effect of what they test; this one makes sure the rest are produced at least once — every example posted,
everything stored read back in JSON and XML (read, version read, history, searches), ``$validate`` on every
example and every invalid one, decisions by PUT and PATCH and their refusals, errors in XML, an opposition by
Consent and by message with what it sends to the platforms. The assertions are on statuses: the checks are the
point.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ApiGateway
from tests.e2e.referrals import EXAMPLES, example, example_bytes, fresh_referral, transaction_examples
from tests.support.processes import wait_until

pytestmark = pytest.mark.e2e

FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"
AS_XML = {"accept": FHIR_XML}
#: Resource types the README says are searchable.
SEARCHABLE = (
    "ServiceRequest",
    "Task",
    "Consent",
    "CareTeam",
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "RelatedPerson",
    "DocumentReference",
    "Provenance",
)


def post_json(api_gateway: ApiGateway, body: dict[str, Any], path: str = "", **headers: str) -> httpx.Response:
    if body.get("resourceType") == "Bundle":
        api_gateway.remember(body)
    return httpx.post(
        api_gateway.base + path, content=json.dumps(body).encode(), headers={"content-type": FHIR_JSON, **headers}
    )


def stored_locations(answer: dict[str, Any]) -> list[str]:
    """``Type/id`` of each entry of a transaction-response."""
    return [str(e["response"]["location"]).split("/_history")[0] for e in answer["entry"]]


def test_every_example_posted_and_everything_stored_read_back(api: httpx.Client, api_gateway: ApiGateway) -> None:
    stored: set[str] = set()
    for name in transaction_examples():
        response = post_json(api_gateway, example(name))
        assert response.status_code == 200, f"{name}: {response.text}"
        stored |= set(stored_locations(response.json()))
    as_xml = httpx.post(
        api_gateway.base,
        content=example_bytes("referral-hospital-nurse.xml"),
        headers={"content-type": FHIR_XML, **AS_XML},
    )
    assert as_xml.status_code == 200, as_xml.text
    message = post_json(api_gateway, example("message-referral-gp.json"), "/$process-message")
    assert message.status_code == 200, message.text

    made_by_the_gateway = api.get("/Task", params={"_count": "100"}).json()["entry"]
    stored |= {f"Task/{e['resource']['id']}" for e in made_by_the_gateway}
    for location in sorted(stored):
        for headers in ({}, AS_XML):
            assert api.get(f"/{location}", headers=headers).status_code == 200, location
            assert api.get(f"/{location}/_history/1", headers=headers).status_code == 200, location
            assert api.get(f"/{location}/_history", headers=headers).status_code == 200, location
        resource_type, resource_id = location.split("/")
        assert api.get(f"/{resource_type}", params={"_id": resource_id}).status_code == 200, location


def test_searches_in_every_form(api: httpx.Client, api_gateway: ApiGateway) -> None:
    for _ in range(3):
        assert post_json(api_gateway, fresh_referral()).status_code == 200
    for resource_type in SEARCHABLE:
        for params in ({}, {"_count": "1"}, {"_summary": "count"}, {"_sort": "-_lastUpdated", "_count": "2"}):
            response = api.get(f"/{resource_type}", params=params)
            assert response.status_code == 200, f"{resource_type} {params}: {response.text}"
            for link in response.json().get("link", []):
                if link["relation"] == "next":
                    assert httpx.get(link["url"]).status_code == 200
        assert api.get(f"/{resource_type}", params={"_count": "2"}, headers=AS_XML).status_code == 200
        posted = api.post(f"/{resource_type}/_search", data={"_count": "2"})
        assert posted.status_code == 200, f"{resource_type} _search: {posted.text}"


def test_validate_answers(api_gateway: ApiGateway) -> None:
    for path in sorted(EXAMPLES.glob("*.json")) + sorted((EXAMPLES / "invalid").glob("*.json")):
        if path.name == "expected.json":
            continue
        body = json.loads(path.read_text(encoding="utf-8"))
        response = post_json(api_gateway, body, "/$validate")
        assert response.status_code in (200, 400), f"{path.name}: {response.text}"
    xml = httpx.post(
        f"{api_gateway.base}/$validate",
        content=example_bytes("referral-hospital-nurse.xml"),
        headers={"content-type": FHIR_XML, **AS_XML},
    )
    assert xml.status_code == 200, xml.text
    patient = next(
        e["resource"] for e in example("referral-gp.json")["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    assert post_json(api_gateway, patient, "/Patient/$validate").status_code == 200
    parameters = {
        "resourceType": "Parameters",
        "parameter": [{"name": "resource", "resource": patient | {"gender": "x"}}],
    }
    assert post_json(api_gateway, parameters, "/Patient/$validate").status_code == 200
    assert post_json(api_gateway, patient, "/Consent/$validate").status_code == 400
    assert post_json(api_gateway, {"resourceType": "Parameters"}, "/$validate").status_code == 400


def test_errors_in_xml(api: httpx.Client, api_gateway: ApiGateway) -> None:
    assert api.get("/ServiceRequest/no-such-one", headers=AS_XML).status_code == 404
    assert api.get("/Observation", headers=AS_XML).status_code == 404
    assert api.get("/ServiceRequest", params={"colour": "blue"}, headers=AS_XML).status_code == 400
    assert api.delete("/ServiceRequest/x", headers=AS_XML).status_code == 405
    unsupported = httpx.post(api_gateway.base, content=b"x", headers={"content-type": "text/plain", **AS_XML})
    assert unsupported.status_code == 415
    broken = example("referral-gp.json")
    broken["entry"] = [e for e in broken["entry"] if e["resource"]["resourceType"] != "Patient"]
    assert post_json(api_gateway, broken, **AS_XML).status_code == 422
    assert httpx.post(api_gateway.base, content=b"<Bundle", headers={"content-type": FHIR_XML}).status_code == 400
    # A format we cannot write (406, in JSON), and answers pretty-printed in both formats.
    assert api.get("/ServiceRequest", headers={"accept": "text/html"}).status_code == 406
    assert api.get("/metadata", params={"_format": "turtle"}).status_code == 406
    for headers in ({}, AS_XML):
        assert api.get("/metadata", params={"_pretty": "true"}, headers=headers).status_code == 200
        assert api.get("/ServiceRequest/no-such-one", params={"_pretty": "true"}, headers=headers).status_code == 404


def _gp_validation_task(api: httpx.Client, api_gateway: ApiGateway) -> dict[str, Any]:
    """A fresh referral under pta-2016: its gp-validation Task, waiting for the GP."""
    response = post_json(api_gateway, fresh_referral("referral-nurse-pta-2016.json"))
    assert response.status_code == 200, response.text
    service_request = next(loc for loc in stored_locations(response.json()) if loc.startswith("ServiceRequest/"))
    found = api.get("/Task", params={"focus": service_request, "code": "gp-validation"}).json()
    task: dict[str, Any] = found["entry"][0]["resource"]
    return task


def test_decisions_and_their_refusals(api: httpx.Client, api_gateway: ApiGateway) -> None:
    task = _gp_validation_task(api, api_gateway)
    url, version = f"/Task/{task['id']}", {"if-match": 'W/"1"'}
    json_headers = {"content-type": FHIR_JSON}
    assert api.put(url, json=task | {"status": "rejected"}, headers=json_headers | version).status_code == 422
    assert api.put(url, json=task | {"status": "accepted"}, headers=json_headers | AS_XML).status_code == 428
    stale = api.put(url, json=task | {"status": "accepted"}, headers=json_headers | {"if-match": 'W/"9"'})
    assert stale.status_code == 412
    patch = [{"op": "replace", "path": "/status", "value": "accepted"}]
    patched = api.patch(url, json=patch, headers={"content-type": "application/json-patch+json"} | version)
    assert patched.status_code == 200, patched.text
    completed = patched.json() | {"status": "completed"}
    assert api.put(url, json=completed, headers=json_headers | {"if-match": 'W/"2"'}).status_code == 200
    forbidden = api.put(url, json=completed | {"status": "accepted"}, headers=json_headers | {"if-match": 'W/"3"'})
    assert forbidden.status_code == 409
    no_id = {key: value for key, value in completed.items() if key != "id"}
    assert api.put(url, json=no_id, headers=json_headers | {"if-match": 'W/"3"'}).status_code == 400
    assert api.put(url, json=completed, headers=json_headers | {"if-match": "*"}).status_code == 428
    failing_test = [{"op": "test", "path": "/status", "value": "requested"}]
    refused = api.patch(url, json=failing_test, headers={"content-type": "application/json-patch+json"} | version)
    assert refused.status_code == 422, refused.text
    assert api.get(f"{url}/_history").status_code == 200

    other = _gp_validation_task(api, api_gateway)
    reason = {"statusReason": {"text": "situation déjà suivie"}}
    rejected = api.put(
        f"/Task/{other['id']}", json=other | {"status": "rejected"} | reason, headers=json_headers | version
    )
    assert rejected.status_code == 200, rejected.text


def _focus_received(api_gateway: ApiGateway, event: str) -> set[str]:
    """``ServiceRequest/{id}`` of each message of this event the loopback platform received."""
    return {
        str(focus["reference"]).split("/fhir/")[-1]
        for message in list(api_gateway.platform.received)
        if message["entry"][0]["resource"]["eventCoding"]["code"] == event
        for focus in message["entry"][0]["resource"].get("focus", [])
    }


def test_oppositions_and_what_they_send(api: httpx.Client, api_gateway: ApiGateway) -> None:
    referrals = set()
    for name in ("referral-hospital-nurse.json", "referral-corsica.json"):
        response = post_json(api_gateway, example(name))  # (a replay when posted before)
        assert response.status_code == 200, response.text
        referrals |= {loc for loc in stored_locations(response.json()) if loc.startswith("ServiceRequest/")}
    # Delivered first: an opposition that comes while a delivery is queued stops it, and nothing is sent.
    wait_until(lambda: referrals <= _focus_received(api_gateway, "referral-request"), what="both referrals delivered")
    consent = post_json(api_gateway, example("consent-opposition.json"), "/Consent")
    assert consent.status_code == 201, consent.text
    # Posted again on the condition of its id: the one stored (200); on a broader one, several (412); on no search.
    again = {"If-None-Exist": f"_id={consent.json()['id']}"}
    assert post_json(api_gateway, example("consent-opposition.json"), "/Consent", **again).status_code == 200
    for criteria, status in (("status=active,inactive", None), ("colour=blue", 400)):
        answer = post_json(api_gateway, example("consent-opposition.json"), "/Consent", **{"If-None-Exist": criteria})
        assert answer.status_code in ((200, 201, 412) if status is None else (status,)), answer.text
    message = post_json(api_gateway, example("message-opposition.json"), "/$process-message")
    assert message.status_code == 200, message.text
    wait_until(lambda: referrals <= _focus_received(api_gateway, "referral-update"), what="the platforms told")
    assert api.get("/Consent", params={"_count": "50"}, headers=AS_XML).status_code == 200
