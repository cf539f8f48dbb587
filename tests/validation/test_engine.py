"""The profile engine, one check kind at a time: each test breaks one rule a profile (or R4) states and expects
exactly that finding — code, FHIRPath as posted, and the profile named."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gateway.errors import Issue
from gateway.validation.definitions import structure_definitions
from gateway.validation.engine import Engine, engine
from tests.conftest import load_example

Json = dict[str, Any]
DAC = "https://fhir.dac-gateway.org/StructureDefinition"


def _resource(example: str, resource_type: str) -> Json:
    bundle = load_example(example)
    found: Json = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type)
    return copy.deepcopy(found)


def _errors(issues: list[Issue]) -> list[tuple[str, str | None]]:
    return sorted((issue.code.value, issue.expression) for issue in issues if issue.severity == "error")


def _warnings(issues: list[Issue]) -> list[tuple[str, str | None]]:
    return sorted((issue.code.value, issue.expression) for issue in issues if issue.severity == "warning")


@pytest.fixture
def patient() -> Json:
    return _resource("referral-hospital-nurse.json", "Patient")


@pytest.fixture
def service_request() -> Json:
    return _resource("referral-hospital-nurse.json", "ServiceRequest")


def test_compiled_once_and_counted() -> None:
    assert engine() is engine()
    assert engine().check_count() > 1000


def test_every_example_resource_passes_its_profile() -> None:
    for name in ("referral-hospital-nurse.json", "referral-social-worker.json", "message-referral-gp.json"):
        assert engine().validate(load_example(name)) == [], name


# cardinality


def test_a_required_element(service_request: Json) -> None:
    del service_request["requester"]  # dac-servicerequest: requester 1..1
    issues = engine().validate(service_request)
    assert _errors(issues) == [("element-required", "ServiceRequest.requester")]
    assert f"{DAC}/dac-servicerequest" in issues[0].diagnostics


def test_a_backbone_child_is_required_only_when_its_parent_is_there() -> None:
    care_team = _resource("referral-social-worker.json", "CareTeam")
    without_participants = copy.deepcopy(care_team)
    del without_participants["participant"]
    assert _errors(engine().validate(without_participants)) == []
    del care_team["participant"][1]["member"]  # dac-careteam: participant.member 1..1
    assert _errors(engine().validate(care_team)) == [("element-required", "CareTeam.participant[1].member")]


def test_an_empty_list_is_no_list(service_request: Json) -> None:
    service_request["identifier"] = []  # 1..*
    assert _errors(engine().validate(service_request)) == [("element-required", "ServiceRequest.identifier")]
    service_request["identifier"] = [{"system": "urn:x", "value": "1"}]
    service_request["reasonCode"] = []  # 0..*: never empty in JSON
    assert _errors(engine().validate(service_request)) == [("value-invalid", "ServiceRequest.reasonCode")]


def test_lists_and_single_values(patient: Json) -> None:
    patient["gender"] = ["female"]
    patient["name"] = patient["name"][0]
    assert _errors(engine().validate(patient)) == [
        ("value-invalid", "Patient.gender"),
        ("value-invalid", "Patient.name"),
    ]


def test_an_empty_object_is_refused(patient: Json) -> None:
    patient["maritalStatus"] = {}
    assert _errors(engine().validate(patient)) == [("value-invalid", "Patient.maritalStatus")]


# unknown elements, primitive extensions, choice types


def test_unknown_elements_at_any_depth(patient: Json) -> None:
    patient["colour"] = "blue"
    patient["name"][0]["nickname"] = "Jeannette"
    patient["_unknownThing"] = {"extension": []}
    assert _errors(engine().validate(patient)) == [
        ("element-unknown", "Patient._unknownThing"),
        ("element-unknown", "Patient.colour"),
        ("element-unknown", "Patient.name[0].nickname"),
    ]


def test_primitive_extension_siblings(patient: Json) -> None:
    patient["_gender"] = {"extension": [{"url": "http://example.org/x", "valueString": "y"}]}
    assert _errors(engine().validate(patient)) == []
    patient["_gender"] = "female"
    assert _errors(engine().validate(patient)) == [("type-invalid", "Patient.gender")]
    patient["_gender"] = {"colour": "blue"}
    assert _errors(engine().validate(patient)) == [("element-unknown", "Patient.gender.colour")]


def test_choice_types(patient: Json) -> None:
    patient["deceasedBoolean"] = False
    assert _errors(engine().validate(patient)) == []
    patient["deceasedDateTime"] = "2025-01-01"
    assert _errors(engine().validate(patient)) == [("cardinality-max", "Patient.deceasedDateTime")]
    del patient["deceasedBoolean"], patient["deceasedDateTime"]
    patient["deceasedString"] = "yes"
    issues = engine().validate(patient)
    assert _errors(issues) == [("type-invalid", "Patient.deceasedString")]
    assert "deceasedBoolean, deceasedDateTime" in issues[0].diagnostics


# types and primitive formats


@pytest.mark.parametrize(
    ("element", "value", "code"),
    [
        ("active", "yes", "type-invalid"),  # a boolean is JSON true / false
        ("active", 1, "type-invalid"),
        ("birthDate", 19380101, "type-invalid"),
        ("birthDate", "1938-02-30", "value-invalid"),  # matches the regex, not the calendar
        ("birthDate", "1938-1-1", "value-invalid"),
        ("multipleBirthInteger", "2", "type-invalid"),
        ("multipleBirthInteger", True, "type-invalid"),
        ("id", "has spaces", "value-invalid"),
        ("gender", "", "value-invalid"),
        ("maritalStatus", "married", "type-invalid"),  # a CodeableConcept is an object
    ],
)
def test_types_and_formats(patient: Json, element: str, value: Any, code: str) -> None:
    patient[element] = value
    assert _errors(engine().validate(patient)) == [(code, f"Patient.{element}")]


# fixed and pattern values


def test_a_fixed_value(service_request: Json) -> None:
    service_request["intent"] = "plan"  # dac-servicerequest: intent fixed to order
    issues = engine().validate(service_request)
    assert _errors(issues) == [("fixed-value-mismatch", "ServiceRequest.intent")]
    assert "'order'" in issues[0].diagnostics


def test_a_fixed_value_inside_a_type() -> None:
    header = _resource("message-referral-gp.json", "MessageHeader")
    header["eventCoding"]["system"] = "http://example.org/events"  # fixed to dac-message-event
    assert ("fixed-value-mismatch", "MessageHeader.eventCoding.system") in _errors(engine().validate(header))


def _with_pattern() -> Engine:
    """A profile of CareTeam whose category must match a pattern (none of ours has one)."""
    definitions = dict(structure_definitions())
    profile = copy.deepcopy(definitions[f"{DAC}/dac-careteam"])
    profile["url"] = "https://example.org/StructureDefinition/careteam-with-pattern"
    for element in profile["snapshot"]["element"]:
        if element["id"] == "CareTeam.category":
            element["patternCodeableConcept"] = {"coding": [{"system": "http://loinc.org", "code": "LA28865-6"}]}
    definitions[profile["url"]] = profile
    return Engine(definitions)


def test_a_pattern() -> None:
    care_team = _resource("referral-social-worker.json", "CareTeam")
    url = "https://example.org/StructureDefinition/careteam-with-pattern"
    care_team["category"] = [{"coding": [{"system": "http://loinc.org", "code": "LA28865-6"}], "text": "x"}]
    assert _errors(_with_pattern().validate(care_team, url)) == []
    care_team["category"] = [{"coding": [{"system": "http://loinc.org", "code": "other"}]}]
    assert _errors(_with_pattern().validate(care_team, url)) == [("pattern-mismatch", "CareTeam.category[0]")]


# bindings


def test_a_required_binding_on_a_code() -> None:
    consent = _resource("referral-hospital-nurse.json", "Consent")
    consent["provision"]["type"] = "maybe"
    issues = engine().validate(consent)
    assert _errors(issues) == [("binding-required", "Consent.provision.type")]
    assert "http://hl7.org/fhir/ValueSet/consent-provision-type" in issues[0].diagnostics


def test_a_required_binding_on_a_codeable_concept_keeps_its_stable_code(service_request: Json) -> None:
    service_request["code"]["coding"][0]["code"] = "home-care"
    assert _errors(engine().validate(service_request)) == [("mission-invalid", "ServiceRequest.code.coding[0].code")]


def test_an_extensible_binding_warns() -> None:
    care_team = _resource("referral-social-worker.json", "CareTeam")
    care_team["participant"][0]["role"] = [{"coding": [{"system": "http://example.org/roles", "code": "x"}]}]
    issues = engine().validate(care_team)
    assert _errors(issues) == []
    assert _warnings(issues) == [("binding-extensible", "CareTeam.participant[0].role[0]")]


def test_a_code_of_an_unexpanded_system_is_not_decided() -> None:
    document = {
        "resourceType": "DocumentReference",
        "status": "current",
        "content": [{"attachment": {"contentType": "application/x-anything"}}],
    }
    assert engine().validate(document) == []  # mimetypes (urn:ietf:bcp:13) cannot be enumerated
    document["status"] = "draft"  # not document-reference-status
    assert _errors(engine().validate(document)) == [("binding-required", "DocumentReference.status")]


# extensions


def _extension(resource: Json, suffix: str) -> tuple[int, Json]:
    position = next(i for i, x in enumerate(resource["extension"]) if x["url"].endswith(suffix))
    extension: Json = resource["extension"][position]
    return position, extension


def test_an_extension_value_type_and_binding(service_request: Json) -> None:
    position, gp_link = _extension(service_request, "/dac-gp-link")
    gp_link["valueCode"] = "cousin"
    assert _errors(engine().validate(service_request)) == [
        ("binding-required", f"ServiceRequest.extension[{position}].valueCode")
    ]
    gp_link["valueString"] = gp_link.pop("valueCode")
    issues = engine().validate(service_request)
    assert _errors(issues) == [("type-invalid", f"ServiceRequest.extension[{position}].valueString")]
    assert f"{DAC}/dac-gp-link" in issues[0].diagnostics


def test_a_complex_extension() -> None:
    service_request = _resource("referral-gp-validated.json", "ServiceRequest")
    position, validation = _extension(service_request, "/dac-gp-validation")
    validation["extension"] = [x for x in validation["extension"] if x["url"] != "date"]
    issues = engine().validate(service_request)
    assert _errors(issues) == [("slice-cardinality", f"ServiceRequest.extension[{position}].extension")]
    assert "slice date" in issues[0].diagnostics
    validation["extension"].append({"url": "date", "valueDate": "2025-03-01"})  # in the slice, but a dateTime
    assert _errors(engine().validate(service_request)) == [
        ("type-invalid", f"ServiceRequest.extension[{position}].extension[1].valueDate"),
    ]


def test_extensions_in_our_namespace_must_exist(service_request: Json) -> None:
    service_request["extension"].append({"url": f"{DAC}/dac-no-such-thing", "valueString": "x"})
    service_request["extension"].append({"url": "http://example.org/someone-elses", "valueString": "x"})
    position = len(service_request["extension"]) - 2
    assert _errors(engine().validate(service_request)) == [
        ("extension-unknown", f"ServiceRequest.extension[{position}].url")
    ]


def test_an_extension_has_a_value_or_extensions(patient: Json) -> None:
    patient["extension"].append({"url": "http://example.org/empty"})
    position = len(patient["extension"]) - 1
    assert _errors(engine().validate(patient)) == [("invariant-failed", f"Patient.extension[{position}]")]


def test_an_extension_slice_cardinality() -> None:
    header = _resource("message-referral-gp.json", "MessageHeader")
    hop = {"url": f"{DAC}/dac-hop-count", "valueUnsignedInt": 1}
    header["extension"] = [hop, dict(hop)]
    assert _errors(engine().validate(header)) == [("slice-cardinality", "MessageHeader.extension")]
    header["extension"] = [{"url": f"{DAC}/dac-hop-count", "valueUnsignedInt": "1"}]
    assert _errors(engine().validate(header)) == [("type-invalid", "MessageHeader.extension[0].valueUnsignedInt")]


# slices on identifier.system


def test_an_identifier_slice(patient: Json) -> None:
    nir = next(x for x in patient["identifier"] if x["system"] == "urn:oid:1.2.250.1.213.1.4.8")
    patient["identifier"].append(copy.deepcopy(nir))
    issues = engine().validate(patient)
    assert _errors(issues) == [("slice-cardinality", "Patient.identifier")]
    assert "INS-NIR" in issues[0].diagnostics and f"{DAC}/dac-patient" in issues[0].diagnostics


def test_a_slice_s_own_rules(patient: Json) -> None:
    position = next(i for i, x in enumerate(patient["identifier"]) if x["system"] == "urn:oid:1.2.250.1.213.1.4.8")
    del patient["identifier"][position]["value"]  # slice INS-NIR: value 1..1
    errors = _errors(engine().validate(patient))
    assert ("element-required", f"Patient.identifier[{position}].value") in errors


# reference targets


def test_reference_targets_inside_a_bundle() -> None:
    bundle = load_example("referral-hospital-nurse.json")
    index = next(i for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == "ServiceRequest")
    practitioner = next(e["fullUrl"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Practitioner")
    bundle["entry"][index]["resource"]["performer"] = [{"reference": practitioner}]  # → Organization only
    issues = engine().validate(bundle)
    assert _errors(issues) == [("reference-target-invalid", f"Bundle.entry[{index}].resource.performer[0].reference")]
    assert "Practitioner" in issues[0].diagnostics


def test_reference_target_of_a_literal_reference(service_request: Json) -> None:
    service_request["subject"] = {"reference": "Group/123"}
    assert _errors(engine().validate(service_request)) == [
        ("reference-target-invalid", "ServiceRequest.subject.reference")
    ]
    service_request["subject"] = {"reference": "urn:uuid:0b8f5e2e-8d2c-4e55-9e53-000000000000"}  # not known here
    assert _errors(engine().validate(service_request)) == []


# invariants


def test_a_profile_invariant() -> None:
    consent = _resource("referral-hospital-nurse.json", "Consent")
    consent["policyRule"] = {"text": "Information du patient"}
    issues = engine().validate(consent)
    assert _errors(issues) == [("invariant-failed", "Consent")]
    assert issues[0].diagnostics.startswith("dac-consent-1")


def test_an_invariant_of_a_data_type(patient: Json) -> None:
    patient["telecom"] = [{"value": "0102030405"}]  # cpt-2: a value needs a system
    assert _errors(engine().validate(patient)) == [("invariant-failed", "Patient.telecom[0]")]


def test_an_r4_invariant_on_a_bundle() -> None:
    bundle = load_example("referral-gp.json")
    bundle["total"] = 3  # bdl-1: total only in a searchset or history
    assert _errors(engine().validate(bundle)) == [("invariant-failed", "Bundle")]


def test_an_invariant_that_cannot_be_evaluated_is_a_warning() -> None:
    definitions = dict(structure_definitions())
    profile = copy.deepcopy(definitions[f"{DAC}/dac-task"])
    profile["url"] = "https://example.org/StructureDefinition/task-odd"
    # matches() on a collection of two raises in fhirpathpy (DESIGN §9)
    odd = {"key": "odd-1", "severity": "error", "human": "odd", "expression": "input.type.text.matches('x')"}
    profile["snapshot"]["element"][0]["constraint"].append(odd)
    definitions[profile["url"]] = profile
    task = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": "https://fhir.dac-gateway.org/CodeSystem/dac-task-type", "code": "contact-gp"}]},
        "focus": {"reference": "ServiceRequest/1"},
        "for": {"reference": "Patient/1"},
        "owner": {"reference": "Organization/1"},
        "input": [{"type": {"text": "a"}, "valueString": "1"}, {"type": {"text": "b"}, "valueString": "2"}],
    }
    issues = Engine(definitions).validate(task, profile["url"])
    assert _errors(issues) == []
    assert _warnings(issues) == [("invariant-not-evaluated", "Task")]


# messages: MessageDefinition referral-request and its GraphDefinition


def test_message_focus_and_allowed_types() -> None:
    message = load_example("message-referral-gp.json")
    patient = next(e["fullUrl"] for e in message["entry"] if e["resource"]["resourceType"] == "Patient")
    message["entry"][0]["resource"]["focus"] = [{"reference": patient}]
    message["entry"].append(
        {
            "fullUrl": "urn:uuid:00000000-0000-4000-8000-0000000000c3",
            "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "Poids"}},
        }
    )
    issues = engine().validate(message)
    assert _errors(issues) == [
        ("message-focus-invalid", "Bundle.entry[0].resource.focus"),
        ("resource-type-not-allowed", f"Bundle.entry[{len(message['entry']) - 1}].resource"),
    ]
    assert "https://fhir.dac-gateway.org/MessageDefinition/referral-request" in issues[0].diagnostics


def test_a_referral_message_is_checked_against_its_bundle_profile() -> None:
    message = load_example("message-referral-gp.json")
    message["entry"].append(copy.deepcopy(message["entry"][1]))  # dac-message-2: one ServiceRequest
    errors = _errors(engine().validate(message))
    assert ("invariant-failed", "Bundle") in errors


# robustness: odd shapes are findings, never exceptions


@pytest.mark.parametrize(
    "odd",
    [
        {"resourceType": "Patient", "name": "x"},
        {"resourceType": "Patient", "name": [None, 3, "x"]},
        {"resourceType": "Patient", "extension": [{"url": 3}]},
        {"resourceType": "Patient", "_birthDate": [1]},
        {"resourceType": "Bundle", "type": "message", "entry": [{"resource": {"resourceType": "MessageHeader"}}, 3]},
        {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": []}]},
        {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Nope"}}]},
    ],
)
def test_odd_shapes_give_findings(odd: Json) -> None:
    assert _errors(engine().validate(odd))


_UNKNOWN = {
    "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}]
}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ({"given": [None, "Ann"], "_given": [_UNKNOWN, None]}, []),  # R4 json.html#primitive: null, extension
        ({"given": ["Ann", "Lee"], "_given": [None, {"id": "g2"}]}, []),  # an id beside a value is fine
        # ele-1: no value, and an id is no child.
        ({"given": [None, "Ann"], "_given": [{"id": "g1"}, None]}, [("value-invalid", "Patient.name[0].given[0]")]),
        # The two lists pair by position: of unequal length they do not pair.
        (
            {"given": ["Ann", "Lee"], "_given": [{"id": "g1"}]},
            [("value-invalid", "Patient.name[0].given")],
        ),
        (
            {"given": [None, "Ann", "Lee"], "_given": [_UNKNOWN, None, None, _UNKNOWN]},
            [("value-invalid", "Patient.name[0].given")],
        ),
        (
            {"given": ["Ann", None], "_given": [None]},  # the null no entry accounts for is a wrong value too
            [("type-invalid", "Patient.name[0].given[1]"), ("value-invalid", "Patient.name[0].given")],
        ),
    ],
)
def test_null_repeats_and_their_extensions(name: Json, expected: list[tuple[str, str]]) -> None:
    """Regression: a null in a repeated primitive was taken as present whenever its _ entry existed — one with only
    an id (no value, no children: ele-1) or a _ list shorter or longer than the values too."""
    found = engine().validate({"resourceType": "Patient", "name": [{"family": "Doe", **name}]})
    assert [error for error in _errors(found) if str(error[1]).startswith("Patient.name")] == expected


def test_a_single_primitive_with_only_an_id_has_no_value() -> None:
    for companion, expected in (({"id": "b"}, [("value-invalid", "Patient.birthDate")]), (_UNKNOWN, [])):
        found = engine().validate({"resourceType": "Patient", "_birthDate": companion})
        assert [error for error in _errors(found) if error[1] == "Patient.birthDate"] == expected
