"""The independent checks themselves (tests/support/fhir_validators.py): they run, and they catch what they must.

Each test hands ``FhirValidators.check`` bodies with one known defect, as if a gateway had emitted them, and
asserts the validator that covers that defect names it — so a broken harness cannot pass silently.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.fhir_validators import (
    ALLOWED,
    RECEIVED,
    Emitted,
    FhirValidators,
    unavailable_reason,
)

pytestmark = pytest.mark.e2e
FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"


@pytest.fixture
def validators(fhir_validators: FhirValidators | None) -> Iterator[FhirValidators]:
    """The session's validators, with the session's figures put aside while these made-up bodies are checked."""
    if fhir_validators is None:
        pytest.skip(f"independent FHIR validators not run: {unavailable_reason()}")
    with fhir_validators.apart():
        yield fhir_validators


def emitted(resource: dict[str, Any], source: str = "GET http://127.0.0.1/fhir/x → 200") -> Emitted:
    return Emitted(source, json.dumps(resource).encode(), FHIR_JSON)


def failures(validators: FhirValidators, resource: dict[str, Any]) -> str:
    return "\n".join(validators.check([emitted(resource)]).failures)


EXTENSION = {"url": "http://example.org/fhir/StructureDefinition/x", "valueString": "y"}
TASK = {
    "resourceType": "Task",
    "status": "requested",
    "intent": "order",
    "code": {"coding": [{"system": "https://fhir.dac-gateway.org/CodeSystem/dac-task-type", "code": "contact-gp"}]},
    "focus": {"reference": "ServiceRequest/1"},
    "for": {"reference": "Patient/1"},
    "authoredOn": "2026-01-02T10:00:00+01:00",
    "owner": {"reference": "Organization/1"},
}


def test_a_valid_gateway_task_passes(validators: FhirValidators) -> None:
    assert failures(validators, TASK) == ""
    assert validators.stats.resources == {"json": 1, "fhir": 1, "medplum": 1, "medplum vs dac-task": 1}


def test_an_issue_without_code_is_caught_by_both(validators: FhirValidators) -> None:
    found = failures(validators, {"resourceType": "OperationOutcome", "issue": [{"severity": "error"}]})
    assert "[fhir] OperationOutcome OperationOutcome.issue[0].code" in found
    assert "[medplum] OperationOutcome OperationOutcome.issue[0].code" in found
    assert "from GET http://127.0.0.1/fhir/x → 200" in found


def test_a_task_without_intent_in_a_searchset_is_caught(validators: FhirValidators) -> None:
    task = {key: value for key, value in TASK.items() if key != "intent"}
    found = failures(validators, {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": task}]})
    assert "[fhir] Bundle Task.intent: Missing property" in found
    assert "[medplum] Bundle Bundle.entry[0].resource.intent" in found
    assert "[medplum vs dac-task] Task Task.intent" in found


def test_each_validator_covers_the_others_gap(validators: FhirValidators) -> None:
    assert "[fhir] Task Task.status" in failures(validators, TASK | {"status": "bogus"})  # required binding
    assert "[medplum] Task Task.authoredOn" in failures(validators, TASK | {"authoredOn": "2026-13-45"})
    unknown = failures(validators, TASK | {"colour": "blue"})
    assert "[fhir] Task Task.colour" in unknown and "[medplum] Task Task.colour" in unknown


def test_a_reference_to_a_type_the_element_does_not_allow_is_an_error(validators: FhirValidators) -> None:
    # @medplum/core says so as a warning; R4 (Annotation.author: Practitioner, Patient, RelatedPerson,
    # Organization) makes it an error — the examples' ServiceRequest notes were authored by a PractitionerRole.
    note = {"authorReference": {"reference": "PractitionerRole/1"}, "text": "x"}
    assert "[medplum] Task Task.note[0].author[x]: Invalid reference" in failures(validators, TASK | {"note": [note]})
    by_practitioner = {"authorReference": {"reference": "Practitioner/1"}, "text": "x"}
    assert failures(validators, TASK | {"note": [by_practitioner]}) == ""
    # A urn:uuid reference to another entry of a Bundle: @medplum/core cannot tell its type, so it is no finding.
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "information", "code": "informational"}]}
    header = {
        "resourceType": "MessageHeader",
        "eventCoding": {"system": "https://fhir.dac-gateway.org/CodeSystem/dac-message-event", "code": "opposition"},
        "source": {"endpoint": "http://127.0.0.1/fhir"},
        "response": {"identifier": "1", "code": "ok", "details": {"reference": "urn:uuid:" + "0" * 32}},
        "focus": [{"reference": "Consent/1"}],
    }
    entries = [
        {"fullUrl": "urn:uuid:" + "1" * 32, "resource": header},
        {"fullUrl": "urn:uuid:" + "0" * 32, "resource": outcome},
    ]
    assert failures(validators, {"resourceType": "Bundle", "type": "message", "entry": entries}) == ""


def test_a_gateway_task_against_our_profile(validators: FhirValidators) -> None:
    found = failures(validators, TASK | {"status": "rejected"})  # R4 allows it; dac-task-1 wants a statusReason
    assert "[medplum vs dac-task] Task" in found and "dac-task-1" in found
    assert "[fhir]" not in found and "[medplum]" not in found


def test_a_senders_resource_against_our_profile_is_reported_not_failed(validators: FhirValidators) -> None:
    patient = {"resourceType": "Patient", "name": [{"family": "Martin", "given": ["Anne"]}], "gender": "female"}
    assert failures(validators, patient) == ""  # valid R4, but dac-patient wants identifier and address
    assert any("[medplum vs dac-patient]" in line for line in validators.stats.reports)


def test_a_referral_message_received_by_a_platform_is_checked_against_our_profile(validators: FhirValidators) -> None:
    header = {
        "resourceType": "MessageHeader",
        "eventCoding": {
            "system": "https://fhir.dac-gateway.org/CodeSystem/dac-message-event",
            "code": "referral-request",
        },
        "source": {"endpoint": "http://127.0.0.1/fhir"},
        "focus": [{"reference": "ServiceRequest/1"}],
    }
    message = {"resourceType": "Bundle", "type": "message", "entry": [{"resource": header}]}
    found = "\n".join(
        validators.check([emitted(message, f"{RECEIVED}http://127.0.0.1/fhir/$process-message")]).failures
    )
    assert "[medplum vs dac-referral-message] Bundle" in found and "dac-message-2" in found
    assert f"from {RECEIVED}http://127.0.0.1/fhir/$process-message" in found


def test_xml_answers_are_parsed_and_checked(validators: FhirValidators) -> None:
    xml = '<OperationOutcome xmlns="http://hl7.org/fhir"><issue><severity value="error"/></issue></OperationOutcome>'
    found = validators.check([Emitted("GET http://127.0.0.1/fhir/y → 400", xml.encode(), FHIR_XML)]).failures
    assert any("[fhir] OperationOutcome" in line and "code" in line for line in found)
    assert any("[medplum] OperationOutcome" in line and "code" in line for line in found)


def test_a_json_answer_that_is_not_fhir_fails(validators: FhirValidators) -> None:
    body = Emitted("GET http://127.0.0.1/fhir/z → 404", b'{"detail": "Not Found"}', "application/json")
    assert "not a FHIR resource" in validators.check([body]).failures[0]


def test_the_json_rules_neither_validator_checks(validators: FhirValidators) -> None:
    found = failures(validators, TASK | {"description": "", "input": [], "code": {}, "id": "a b"})
    assert "[json] Task Task.description: an empty string" in found
    assert "[json] Task Task.input: an empty array" in found
    assert "[json] Task Task.code: an empty object" in found
    assert "[json] Task Task.id: 'a b' is not an R4 id" in found
    assert "[fhir]" not in found and "[medplum]" not in found  # the gap this covers
    placeholders = {"name": [{"given": ["Anne", None], "_given": [None, {"extension": [EXTENSION]}]}]}
    assert failures(validators, {"resourceType": "Patient"} | placeholders) == ""


def test_allowed_findings_are_narrow() -> None:
    for allowed in ALLOWED:
        assert allowed.reason and allowed.location not in ("", ".*", ".+") and allowed.message not in ("", ".*")
