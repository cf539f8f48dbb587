"""read_referral: the shape rules of DESIGN §7, every finding reported at once with its FHIRPath."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gateway.errors import BusinessRuleViolation, GatewayError, InvalidRequest, InvalidResource, UnprocessableEntity
from gateway.intake.reading import read_referral
from tests.conftest import load_example


def _entry(bundle: dict[str, Any], resource_type: str) -> tuple[int, dict[str, Any]]:
    return next((i, e) for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == resource_type)


def _codes(exc: GatewayError) -> list[tuple[str, str | None]]:
    return [(str(issue.code), issue.expression) for issue in exc.issues]


@pytest.fixture
def bundle() -> dict[str, Any]:
    return copy.deepcopy(load_example("referral-hospital-nurse.json"))


def test_example_reads_as_a_referral(bundle: dict[str, Any]) -> None:
    referral = read_referral(bundle, "transaction")
    assert referral.service_request.resource_type == "ServiceRequest"
    assert referral.patient.resource_type == "Patient"
    assert referral.patient.if_none_exist and referral.patient.if_none_exist.startswith("identifier=")
    sr_id = referral.service_request.resource["identifier"][0]
    assert f"servicerequest:{sr_id['system']}|{sr_id['value']}" in referral.idempotency_keys
    assert any(key.startswith("bundle:") for key in referral.idempotency_keys)


def test_missing_patient_and_identifier_are_reported_together(bundle: dict[str, Any]) -> None:
    index, service_request = _entry(bundle, "ServiceRequest")
    del service_request["resource"]["identifier"]
    bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["resourceType"] != "Patient"]
    index, _ = _entry(bundle, "ServiceRequest")
    # The profile (identifier 1..*) and the rules (no Patient) together: a 422 listing both.
    with pytest.raises(UnprocessableEntity) as caught:
        read_referral(bundle, "transaction")
    codes = _codes(caught.value)
    assert ("element-required", f"Bundle.entry[{index}].resource.identifier") in codes
    assert ("referral-patient-missing", "Bundle.entry") in codes
    assert ("servicerequest-identifier-missing", f"Bundle.entry[{index}].resource.identifier") in codes
    assert caught.value.status_code == 422


def test_two_service_requests(bundle: dict[str, Any]) -> None:
    _, service_request = _entry(bundle, "ServiceRequest")
    second = copy.deepcopy(service_request)
    second["fullUrl"] = "urn:uuid:00000000-0000-4000-8000-00000000beef"
    bundle["entry"].append(second)
    with pytest.raises(BusinessRuleViolation) as caught:
        read_referral(bundle, "transaction")
    assert ("referral-servicerequest-multiple", f"Bundle.entry[{len(bundle['entry']) - 1}]") in _codes(caught.value)


def test_dangling_reference(bundle: dict[str, Any]) -> None:
    index, service_request = _entry(bundle, "ServiceRequest")
    service_request["resource"]["requester"] = {"reference": "urn:uuid:11111111-2222-4333-8444-555555555555"}
    with pytest.raises(BusinessRuleViolation) as caught:
        read_referral(bundle, "transaction")
    assert _codes(caught.value) == [("reference-unresolved", f"Bundle.entry[{index}].resource.requester.reference")]


def test_subject_must_be_the_patient(bundle: dict[str, Any]) -> None:
    index, service_request = _entry(bundle, "ServiceRequest")
    _, role = _entry(bundle, "PractitionerRole")
    service_request["resource"]["subject"] = {"reference": role["fullUrl"]}
    with pytest.raises(UnprocessableEntity) as caught:
        read_referral(bundle, "transaction")
    assert ("servicerequest-subject-mismatch", f"Bundle.entry[{index}].resource.subject") in _codes(caught.value)
    # dac-servicerequest: subject → Patient only (the profile's target type)
    assert ("reference-target-invalid", f"Bundle.entry[{index}].resource.subject.reference") in _codes(caught.value)


def test_posted_status_must_be_active_or_draft(bundle: dict[str, Any]) -> None:
    index, service_request = _entry(bundle, "ServiceRequest")
    service_request["resource"]["status"] = "completed"
    with pytest.raises(BusinessRuleViolation) as caught:
        read_referral(bundle, "transaction")
    assert _codes(caught.value) == [("servicerequest-status-invalid", f"Bundle.entry[{index}].resource.status")]


def test_structure_errors_come_with_rule_errors(bundle: dict[str, Any]) -> None:
    index, patient = _entry(bundle, "Patient")
    patient["resource"]["birthDate"] = "1950-02-30x"
    patient["resource"]["colour"] = "blue"
    with pytest.raises(InvalidResource) as caught:
        read_referral(bundle, "transaction")
    codes = _codes(caught.value)
    assert ("value-invalid", f"Bundle.entry[{index}].resource.birthDate") in codes
    assert ("element-unknown", f"Bundle.entry[{index}].resource.colour") in codes


def test_resource_types_outside_a_referral_are_refused(bundle: dict[str, Any]) -> None:
    bundle["entry"].append(
        {
            "fullUrl": "urn:uuid:00000000-0000-4000-8000-0000000000aa",
            "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}},
            "request": {"method": "POST", "url": "Observation"},
        }
    )
    with pytest.raises(BusinessRuleViolation) as caught:
        read_referral(bundle, "transaction")
    assert _codes(caught.value) == [("resource-type-not-allowed", f"Bundle.entry[{len(bundle['entry']) - 1}].resource")]


@pytest.mark.parametrize(
    ("request_", "expression_suffix"),
    [
        ({"method": "DELETE", "url": "Patient/1"}, "request"),
        ({"method": "POST", "url": "Practitioner"}, "request.url"),
        ({"method": "POST", "url": "Patient", "ifMatch": 'W/"1"'}, "request.ifMatch"),
        ({"method": "PUT", "url": "Patient?identifier=x|y"}, "request.url"),
    ],
)
def test_bad_entry_requests_are_400(bundle: dict[str, Any], request_: dict[str, str], expression_suffix: str) -> None:
    index, patient = _entry(bundle, "Patient")
    patient["request"] = request_
    with pytest.raises(GatewayError) as caught:
        read_referral(bundle, "transaction")
    assert ("entry-request-invalid", f"Bundle.entry[{index}].{expression_suffix}") in _codes(caught.value)


def test_put_of_a_service_request_is_refused(bundle: dict[str, Any]) -> None:
    index, service_request = _entry(bundle, "ServiceRequest")
    service_request["request"] = {"method": "PUT", "url": "ServiceRequest/abc"}
    with pytest.raises(InvalidRequest) as caught:
        read_referral(bundle, "transaction")
    assert _codes(caught.value) == [("entry-request-invalid", f"Bundle.entry[{index}].request.method")]


def test_wrong_bundle_type() -> None:
    with pytest.raises(InvalidRequest) as caught:
        read_referral({"resourceType": "Bundle", "type": "collection"}, "transaction")
    assert _codes(caught.value) == [("bundle-type-unsupported", "Bundle.type")]


def test_message_needs_a_referral_request_header() -> None:
    message = copy.deepcopy(load_example("message-referral-gp.json"))
    referral = read_referral(message, "message")
    assert referral.message_header is not None
    assert f"message:{message['entry'][0]['resource']['id']}" in referral.idempotency_keys
    message["entry"][0]["resource"]["eventCoding"]["code"] = "something-else"
    with pytest.raises(UnprocessableEntity) as caught:
        read_referral(message, "message")
    # Not a dac-message-event code (dac-messageheader's required binding), and not the event this endpoint takes.
    assert sorted(_codes(caught.value)) == [
        ("binding-required", "Bundle.entry[0].resource.eventCoding.code"),
        ("message-event-unsupported", "Bundle.entry[0].resource.eventCoding"),
    ]
    del message["entry"][0]
    with pytest.raises(BusinessRuleViolation) as caught:
        read_referral(message, "message")
    assert ("message-header-missing", "Bundle.entry[0]") in _codes(caught.value)
