"""Inputs that once broke the gateway: every one is a 4xx with an OperationOutcome, and nothing half-stored."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest

from tests.conftest import load_example
from tests.support.referrals import resource

FHIR_JSON = {"content-type": "application/fhir+json"}


def _entry(bundle: dict[str, Any], resource_type: str) -> tuple[int, dict[str, Any]]:
    return next((i, e) for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == resource_type)


def _odd(path: str, value: Any) -> dict[str, Any]:
    bundle = copy.deepcopy(load_example("referral-hospital-nurse.json"))
    target_type, _, element = path.partition(".")
    if target_type == "Bundle":
        bundle[element] = value
    else:
        resource(bundle, target_type)[element] = value
    return bundle


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("Bundle.entry", 5),
        ("Bundle.identifier", [{"value": "x"}]),
        ("Patient.identifier", 5),
        ("Patient.name", 5),
        ("Patient.address", 5),
        ("Patient.extension", 5),
        ("Patient.contained", 5),
        ("ServiceRequest.identifier", 5),
        ("ServiceRequest.subject", [{"reference": "Patient/1"}]),
    ],
)
async def test_odd_shapes_are_4xx(client: httpx.AsyncClient, path: str, value: Any) -> None:
    response = await client.post("/fhir", json=_odd(path, value), headers=FHIR_JSON)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    for issue in response.json()["issue"]:
        assert not issue.get("expression", [""])[0].endswith(".root")
    assert (await client.get("/fhir/ServiceRequest", params={"_summary": "count"})).json()["total"] == 0


async def test_if_none_exist_on_the_service_request_is_refused(client: httpx.AsyncClient) -> None:
    bundle = copy.deepcopy(load_example("referral-gp.json"))
    index, entry = _entry(bundle, "ServiceRequest")
    entry["request"]["ifNoneExist"] = "_id=anything"
    response = await client.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == [f"Bundle.entry[{index}].request.ifNoneExist"]


@pytest.mark.parametrize(
    ("if_none_exist", "code"),
    [
        ("colour=blue", "search-parameter-unknown"),
        ("birthdate=yesterday", "search-parameter-invalid"),
        ("identifier:above=x", "search-parameter-invalid"),
    ],
)
async def test_an_if_none_exist_that_is_no_search_names_the_entry(
    client: httpx.AsyncClient, if_none_exist: str, code: str
) -> None:
    """Regression: the 400 of an ifNoneExist that is no valid search had the parameter alone as its expression
    ("colour"), which names nothing in the posted Bundle."""
    bundle = copy.deepcopy(load_example("referral-gp.json"))
    index, entry = _entry(bundle, "Patient")
    entry["request"]["ifNoneExist"] = if_none_exist
    response = await client.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 400, response.text
    (issue,) = response.json()["issue"]
    assert issue["details"]["coding"][0]["code"] == code
    assert issue["expression"] == [f"Bundle.entry[{index}].request.ifNoneExist"]
    assert issue["diagnostics"].startswith("ifNoneExist: ")


async def test_a_consent_about_another_patient_is_refused(client: httpx.AsyncClient) -> None:
    bundle = copy.deepcopy(load_example("referral-hospital-nurse.json"))
    index, consent = _entry(bundle, "Consent")
    consent["resource"]["patient"] = {"reference": "Patient/somebody-else"}
    response = await client.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 422
    issue = response.json()["issue"][0]
    assert issue["details"]["coding"][0]["code"] == "referral-patient-mismatch"
    assert issue["expression"] == [f"Bundle.entry[{index}].resource.patient.reference"]


async def test_an_update_cannot_change_national_identifiers(client: httpx.AsyncClient) -> None:
    first = await client.post("/fhir", json=load_example("referral-gp.json"), headers=FHIR_JSON)
    patient_id = next(e["fullUrl"] for e in first.json()["entry"] if "/Patient/" in e["fullUrl"]).rsplit("/", 1)[1]
    bundle = copy.deepcopy(load_example("referral-gp.json"))
    bundle["identifier"]["value"] += "-2"
    resource(bundle, "ServiceRequest")["identifier"][0]["value"] += "-2"
    _, patient = _entry(bundle, "Patient")
    patient["request"] = {"method": "PUT", "url": f"Patient/{patient_id}"}
    first13 = "1410629019088"
    patient["resource"]["identifier"][0]["value"] = first13 + f"{97 - int(first13) % 97:02d}"
    response = await client.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 422
    assert response.json()["issue"][0]["details"]["coding"][0]["code"] == "identifier-change-forbidden"


@pytest.mark.parametrize(
    ("url", "status"),
    [
        # Past year 9999 in UTC (the year 1 east of Greenwich is clamped to its first instant: search.py _utc).
        ("/fhir/ServiceRequest?_lastUpdated=9999-12-31T23:00:00-01:00", 400),
        ("/fhir/Patient/x/_history/99999999999999999999", 404),
        ("/fhir/Patient/x/_history/%C2%B2", 404),
    ],
)
async def test_odd_reads_are_4xx(client: httpx.AsyncClient, url: str, status: int) -> None:
    response = await client.get(url)
    assert response.status_code == status and response.json()["resourceType"] == "OperationOutcome"


async def test_nul_characters_are_refused_on_both_backends(client: httpx.AsyncClient) -> None:
    body = load_example("referral-gp.json")
    resource(body, "ServiceRequest")["identifier"][0]["value"] += "\u0000"
    response = await client.post("/fhir", json=body, headers=FHIR_JSON)
    assert (
        response.status_code == 400 and response.json()["issue"][0]["details"]["coding"][0]["code"] == "value-too-long"
    )


async def test_validate_never_500(client: httpx.AsyncClient) -> None:
    for body in (_odd("Patient.identifier", 5), {"resourceType": "Parameters", "parameter": 5}):
        response = await client.post("/fhir/$validate", json=body, headers=FHIR_JSON)
        assert 200 <= response.status_code < 500, response.text


async def test_deep_nesting_is_a_400_not_a_500(client: httpx.AsyncClient) -> None:
    # Regression: 60 nested extensions (120 JSON levels) made the reference walker raise RecursionError → 500.
    bundle = copy.deepcopy(load_example("referral-hospital-nurse.json"))
    extension: dict[str, Any] = {"url": "http://example.org/x", "valueString": "x"}
    for _ in range(60):
        extension = {"url": "http://example.org/x", "extension": [extension]}
    resource(bundle, "Patient")["extension"] = [extension]
    response = await client.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 400, response.text
    assert response.json()["issue"][0]["details"]["coding"][0]["code"] == "nesting-too-deep"
    assert (await client.get("/fhir/ServiceRequest", params={"_summary": "count"})).json()["total"] == 0


@pytest.mark.parametrize("entry", [{"0": {}}, True, 5, "x"])
async def test_a_message_whose_entry_is_no_list_is_a_4xx(client: httpx.AsyncClient, entry: Any) -> None:
    # Regression (found by the hypothesis fuzz): reading the event of such a message raised KeyError → 500.
    bundle = {"resourceType": "Bundle", "type": "message", "entry": entry}
    response = await client.post("/fhir/$process-message", json=bundle, headers=FHIR_JSON)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("system", [["https://fhir.dac-gateway.org/CodeSystem/dac-mission"], {"a": 1}])
async def test_a_coding_system_of_the_wrong_type_is_a_4xx(client: httpx.AsyncClient, system: Any) -> None:
    # Regression (found by the hypothesis fuzz): the validation engine looked the system up in a set → 500.
    bundle = copy.deepcopy(load_example("referral-hospital-nurse.json"))
    resource(bundle, "ServiceRequest")["code"]["coding"][0]["system"] = system
    response = await client.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert 400 <= response.status_code < 500, response.text
    assert (await client.get("/fhir/ServiceRequest", params={"_summary": "count"})).json()["total"] == 0


@pytest.mark.parametrize("query", ["identifier=a%00b", "status=active%00", "_id=x%00"])
async def test_a_nul_in_a_search_is_a_400_on_both_backends(client: httpx.AsyncClient, query: str) -> None:
    """PostgreSQL text holds no NUL: the driver's error was a 500 there, while SQLite answered 200."""
    answer = await client.get(f"/fhir/Consent?{query}")
    assert answer.status_code == 400, answer.text
    assert answer.json()["issue"][0]["details"]["coding"][0]["code"] == "value-too-long"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/fhir/Patient/%00"),
        ("GET", "/fhir/Patient/a%00b/_history"),
        ("GET", "/fhir/Patient/a%00/_history/1"),
        ("GET", "/fhir/Task/%00"),
        ("PATCH", "/fhir/Task/%00"),
    ],
)
async def test_a_nul_in_an_id_is_unknown_on_both_backends(client: httpx.AsyncClient, method: str, path: str) -> None:
    """No resource has such an id (R4's id type): a 404 before any SQL, where PostgreSQL's driver answered a 500."""
    headers = {"content-type": "application/json-patch+json", "if-match": 'W/"1"'}
    answer = await client.request(method, path, content=b"[]", headers=headers)
    assert answer.status_code == 404, answer.text
    assert answer.json()["issue"][0]["details"]["coding"][0]["code"] == "resource-not-found"


@pytest.mark.parametrize("value", ["9999", "9999-12-31", "9999-12-31T23:59:59Z", "ge9999-12-31"])
async def test_the_last_instants_of_9999_are_searched(client: httpx.AsyncClient, value: str) -> None:
    """Their periods end past year 9999 (the next midnight, second): held to the latest instant, not a 400."""
    answer = await client.get("/fhir/ServiceRequest", params={"_lastUpdated": value})
    assert answer.status_code == 200, answer.text
    assert answer.json()["total"] == 0
