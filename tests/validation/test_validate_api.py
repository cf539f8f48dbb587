from __future__ import annotations

import copy
import subprocess
import sys

import httpx

from tests.conftest import EXAMPLES, load_example

FHIR_JSON = {"content-type": "application/fhir+json"}


def _codes(response: httpx.Response) -> list[str]:
    return [issue["details"]["coding"][0]["code"] for issue in response.json()["issue"]]


async def test_validate_a_referral_stores_nothing(client: httpx.AsyncClient) -> None:
    response = await client.post("/fhir/$validate", json=load_example("referral-gp.json"), headers=FHIR_JSON)
    assert response.status_code == 200 and _codes(response) == ["validation-passed"]
    broken = copy.deepcopy(load_example("referral-gp.json"))
    broken["entry"] = [e for e in broken["entry"] if e["resource"]["resourceType"] != "Patient"]
    response = await client.post("/fhir/$validate", json=broken, headers=FHIR_JSON)
    assert response.status_code == 200 and "referral-patient-missing" in _codes(response)
    assert (await client.get("/fhir/ServiceRequest", params={"_summary": "count"})).json()["total"] == 0


async def test_validate_one_resource_by_type(client: httpx.AsyncClient) -> None:
    patient = next(
        e["resource"] for e in load_example("referral-gp.json")["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    ok = await client.post("/fhir/Patient/$validate", json=patient, headers=FHIR_JSON)
    assert _codes(ok) == ["validation-passed"]
    bad = copy.deepcopy(patient)
    bad["identifier"][0]["value"] = bad["identifier"][0]["value"][:13] + "00"
    parameters = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": bad}]}
    response = await client.post("/fhir/Patient/$validate", json=parameters, headers=FHIR_JSON)
    assert _codes(response) == ["ins-key-invalid"]
    assert response.json()["issue"][0]["expression"] == ["Patient.identifier[0].value"]
    wrong_type = await client.post("/fhir/Consent/$validate", json=patient, headers=FHIR_JSON)
    assert wrong_type.status_code == 400


def test_validate_command(tmp_path) -> None:  # type: ignore[no-untyped-def]
    broken = copy.deepcopy(load_example("referral-gp.json"))
    broken["type"] = "transaction"
    for entry in broken["entry"]:
        if entry["resource"]["resourceType"] == "ServiceRequest":
            del entry["resource"]["identifier"]
    path = tmp_path / "broken.json"
    path.write_text(__import__("json").dumps(broken))
    good = subprocess.run(
        [sys.executable, "-m", "gateway", "validate", str(EXAMPLES / "referral-gp.json")],
        capture_output=True,
        text=True,
    )
    assert good.returncode == 0 and "valid" in good.stdout
    bad = subprocess.run([sys.executable, "-m", "gateway", "validate", str(path)], capture_output=True, text=True)
    assert bad.returncode == 1 and "servicerequest-identifier-missing" in bad.stdout


async def test_validate_against_a_named_profile(client: httpx.AsyncClient) -> None:
    """``profile`` (query or Parameters part) picks the profile; one we do not know is a 400."""
    service_request = next(
        e["resource"]
        for e in load_example("referral-gp.json")["entry"]
        if e["resource"]["resourceType"] == "ServiceRequest"
    )
    plan = copy.deepcopy(service_request)
    plan["intent"] = "plan"
    ours = "https://fhir.dac-gateway.org/StructureDefinition/dac-servicerequest"
    base = "http://hl7.org/fhir/StructureDefinition/ServiceRequest"
    against_ours = await client.post(
        "/fhir/ServiceRequest/$validate", params={"profile": ours}, json=plan, headers=FHIR_JSON
    )
    assert _codes(against_ours) == ["fixed-value-mismatch"]
    assert ours in against_ours.json()["issue"][0]["diagnostics"]
    # R4's ServiceRequest has no fixed intent: the same resource passes against the base.
    parameters = {
        "resourceType": "Parameters",
        "parameter": [{"name": "resource", "resource": plan}, {"name": "profile", "valueCanonical": base}],
    }
    against_base = await client.post("/fhir/ServiceRequest/$validate", json=parameters, headers=FHIR_JSON)
    assert _codes(against_base) == ["validation-passed"]
    unknown = await client.post(
        "/fhir/ServiceRequest/$validate", params={"profile": "https://example.org/nope"}, json=plan, headers=FHIR_JSON
    )
    assert unknown.status_code == 400 and _codes(unknown) == ["profile-unknown"]
    wrong_type = await client.post(
        "/fhir/ServiceRequest/$validate",
        params={"profile": "https://fhir.dac-gateway.org/StructureDefinition/dac-patient"},
        json=plan,
        headers=FHIR_JSON,
    )
    assert _codes(wrong_type) == ["profile-type-mismatch"]


def test_validate_command_with_a_profile(tmp_path) -> None:  # type: ignore[no-untyped-def]
    service_request = next(
        e["resource"]
        for e in load_example("referral-gp.json")["entry"]
        if e["resource"]["resourceType"] == "ServiceRequest"
    )
    plan = copy.deepcopy(service_request)
    plan["intent"] = "plan"
    path = tmp_path / "plan.json"
    path.write_text(__import__("json").dumps(plan))
    command = [sys.executable, "-m", "gateway", "validate"]
    ours = subprocess.run([*command, str(path)], capture_output=True, text=True)
    assert ours.returncode == 1 and "fixed-value-mismatch at ServiceRequest.intent" in ours.stdout
    base = "http://hl7.org/fhir/StructureDefinition/ServiceRequest"
    against_base = subprocess.run([*command, "--profile", base, str(path)], capture_output=True, text=True)
    assert against_base.returncode == 0, against_base.stdout
