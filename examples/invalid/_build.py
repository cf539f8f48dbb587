"""The conformance kit: invalid referrals, one mistake each, made from the valid examples, and what the gateway
must answer for each (``expected.json``: HTTP status, then every issue's dac-issue code and FHIRPath).

    .venv/bin/python examples/invalid/_build.py

Deterministic; tests/validation/test_invalid_examples.py posts every file and checks it gives exactly that.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
Json = dict[str, Any]


def example(name: str) -> Json:
    data: Json = json.loads((HERE.parent / name).read_text())
    return data


def index_of(bundle: Json, resource_type: str, nth: int = 0) -> int:
    return [i for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == resource_type][nth]


def res(bundle: Json, resource_type: str) -> Json:
    resource: Json = bundle["entry"][index_of(bundle, resource_type)]["resource"]
    return resource


def at(bundle: Json, resource_type: str, path: str) -> str:
    return f"Bundle.entry[{index_of(bundle, resource_type)}].resource{path}"


Mistake = Callable[[Json], tuple[int, list[tuple[str, str]]]]


def dangling(bundle: Json, full_url: str) -> list[tuple[str, str]]:
    """reference-unresolved for every reference to ``full_url`` left in the bundle (as the gateway reports)."""
    found: list[tuple[str, str]] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if node.get("reference") == full_url:
                found.append(("reference-unresolved", f"{path}.reference"))
            for key, value in node.items():
                if isinstance(value, (dict, list)) and key != "contained":
                    walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, f"{path}[{index}]")

    for index, entry in enumerate(bundle["entry"]):
        walk(entry["resource"], f"Bundle.entry[{index}].resource")
    return found


def missing_patient(b: Json) -> tuple[int, list[tuple[str, str]]]:
    removed = b["entry"].pop(index_of(b, "Patient"))
    # Without its Patient entry, every reference to the patient's fullUrl dangles too.
    return 422, [("referral-patient-missing", "Bundle.entry"), *dangling(b, removed["fullUrl"])]


def bad_ins_key(b: Json) -> tuple[int, list[tuple[str, str]]]:
    patient = res(b, "Patient")
    position = next(i for i, x in enumerate(patient["identifier"]) if x["system"] == "urn:oid:1.2.250.1.213.1.4.8")
    value = patient["identifier"][position]["value"]
    patient["identifier"][position]["value"] = value[:13] + f"{(int(value[13:]) % 96) + 1:02d}"
    return 422, [("ins-key-invalid", at(b, "Patient", f".identifier[{position}].value"))]


def unknown_status(b: Json) -> tuple[int, list[tuple[str, str]]]:
    res(b, "ServiceRequest")["status"] = "bogus"
    # Not a request-status code (R4's required binding), and not a status a referral is posted with (our rule).
    return 422, [
        ("binding-required", at(b, "ServiceRequest", ".status")),
        ("servicerequest-status-invalid", at(b, "ServiceRequest", ".status")),
    ]


def dangling_reference(b: Json) -> tuple[int, list[tuple[str, str]]]:
    res(b, "ServiceRequest")["requester"] = {"reference": "urn:uuid:00000000-0000-4000-8000-00000000dead"}
    return 422, [("reference-unresolved", at(b, "ServiceRequest", ".requester.reference"))]


def wrong_mission(b: Json) -> tuple[int, list[tuple[str, str]]]:
    res(b, "ServiceRequest")["code"]["coding"][0]["code"] = "home-care"
    return 422, [("mission-invalid", at(b, "ServiceRequest", ".code.coding[0].code"))]


def two_service_requests(b: Json) -> tuple[int, list[tuple[str, str]]]:
    second = copy.deepcopy(b["entry"][index_of(b, "ServiceRequest")])
    second["fullUrl"] = "urn:uuid:00000000-0000-4000-8000-0000000000b2"
    second["resource"]["identifier"][0]["value"] += "-bis"
    b["entry"].append(second)
    return 422, [("referral-servicerequest-multiple", f"Bundle.entry[{len(b['entry']) - 1}]")]


def ins_without_birth_date(b: Json) -> tuple[int, list[tuple[str, str]]]:
    del res(b, "Patient")["birthDate"]
    # dac-patient-1 (the profile's invariant) fails on the Patient; the rule names the missing trait.
    return 422, [("invariant-failed", at(b, "Patient", "")), ("ins-traits-missing", at(b, "Patient", ".birthDate"))]


def bad_rpps_key(b: Json) -> tuple[int, list[tuple[str, str]]]:
    practitioner = res(b, "Practitioner")
    position = next(i for i, x in enumerate(practitioner["identifier"]) if x["system"] == "https://rpps.esante.gouv.fr")
    value = practitioner["identifier"][position]["value"]
    practitioner["identifier"][position]["value"] = value[:-1] + str((int(value[-1]) + 1) % 10)
    return 422, [("identifier-invalid", at(b, "Practitioner", f".identifier[{position}].value"))]


def bad_finess_key(b: Json) -> tuple[int, list[tuple[str, str]]]:
    organization = res(b, "Organization")
    position = next(
        i for i, x in enumerate(organization["identifier"]) if x["system"] == "https://finess.esante.gouv.fr"
    )
    value = organization["identifier"][position]["value"]
    organization["identifier"][position]["value"] = value[:-1] + str((int(value[-1]) + 1) % 10)
    return 422, [("identifier-invalid", at(b, "Organization", f".identifier[{position}].value"))]


def unknown_element(b: Json) -> tuple[int, list[tuple[str, str]]]:
    res(b, "ServiceRequest")["urgencyLevel"] = "high"
    return 422, [("element-unknown", at(b, "ServiceRequest", ".urgencyLevel"))]


def bad_date(b: Json) -> tuple[int, list[tuple[str, str]]]:
    res(b, "Patient")["birthDate"] = "1938-02-30T10:00"
    return 422, [("value-invalid", at(b, "Patient", ".birthDate"))]


def no_request_identifier(b: Json) -> tuple[int, list[tuple[str, str]]]:
    del res(b, "ServiceRequest")["identifier"]
    # dac-servicerequest: identifier 1..* (the profile), and the idempotency key intake needs (our rule).
    return 422, [
        ("element-required", at(b, "ServiceRequest", ".identifier")),
        ("servicerequest-identifier-missing", at(b, "ServiceRequest", ".identifier")),
    ]


def subject_not_the_patient(b: Json) -> tuple[int, list[tuple[str, str]]]:
    res(b, "ServiceRequest")["subject"] = {"reference": b["entry"][index_of(b, "PractitionerRole")]["fullUrl"]}
    return 422, [
        ("reference-target-invalid", at(b, "ServiceRequest", ".subject.reference")),
        ("servicerequest-subject-mismatch", at(b, "ServiceRequest", ".subject")),
    ]


def consent_of_another_patient(b: Json) -> tuple[int, list[tuple[str, str]]]:
    res(b, "Consent")["patient"] = {"reference": "Patient/someone-else"}
    return 422, [("referral-patient-mismatch", at(b, "Consent", ".patient.reference"))]


def bad_insee_code(b: Json) -> tuple[int, list[tuple[str, str]]]:
    address = res(b, "Patient")["address"][0]
    position = next(i for i, x in enumerate(address["extension"]) if x["url"].endswith("fr-core-address-insee-code"))
    address["extension"][position]["valueCoding"]["code"] = "5951"
    return 422, [("insee-code-invalid", at(b, "Patient", f".address[0].extension[{position}].valueCoding.code"))]


def duplicate_full_url(b: Json) -> tuple[int, list[tuple[str, str]]]:
    organization = index_of(b, "Organization")
    old = b["entry"][organization]["fullUrl"]
    b["entry"][organization]["fullUrl"] = b["entry"][index_of(b, "Practitioner")]["fullUrl"]
    later = max(organization, index_of(b, "Practitioner"))
    # bdl-7 (R4 Bundle invariant: fullUrl unique) says it too, on the Bundle.
    return 422, [
        ("invariant-failed", "Bundle"),
        ("entry-fullurl-duplicate", f"Bundle.entry[{later}].fullUrl"),
        *dangling(b, old),
    ]


def observation_in_referral(b: Json) -> tuple[int, list[tuple[str, str]]]:
    b["entry"].append(
        {
            "fullUrl": "urn:uuid:00000000-0000-4000-8000-0000000000c3",
            "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "Poids"}},
            "request": {"method": "POST", "url": "Observation"},
        }
    )
    return 422, [("resource-type-not-allowed", f"Bundle.entry[{len(b['entry']) - 1}].resource")]


# Profile checks of the engine (profiles/), one kind each.


def participant_without_member(b: Json) -> tuple[int, list[tuple[str, str]]]:
    del res(b, "CareTeam")["participant"][0]["member"]  # dac-careteam: participant.member 1..1
    return 422, [("element-required", at(b, "CareTeam", ".participant[0].member"))]


def intent_plan(b: Json) -> tuple[int, list[tuple[str, str]]]:
    res(b, "ServiceRequest")["intent"] = "plan"  # dac-servicerequest: intent fixed to order
    return 422, [("fixed-value-mismatch", at(b, "ServiceRequest", ".intent"))]


def unknown_provision_type(b: Json) -> tuple[int, list[tuple[str, str]]]:
    res(b, "Consent")["provision"]["type"] = "maybe"  # required binding consent-provision-type
    return 422, [("binding-required", at(b, "Consent", ".provision.type"))]


def two_ins_nir(b: Json) -> tuple[int, list[tuple[str, str]]]:
    patient = res(b, "Patient")
    nir = next(x for x in patient["identifier"] if x["system"] == "urn:oid:1.2.250.1.213.1.4.8")
    patient["identifier"].append(copy.deepcopy(nir))  # dac-patient: slice INS-NIR is 0..1
    return 422, [("slice-cardinality", at(b, "Patient", ".identifier"))]


def gp_link_as_string(b: Json) -> tuple[int, list[tuple[str, str]]]:
    extensions = res(b, "ServiceRequest")["extension"]
    position = next(i for i, x in enumerate(extensions) if x["url"].endswith("/dac-gp-link"))
    extensions[position]["valueString"] = extensions[position].pop("valueCode")  # dac-gp-link: valueCode only
    return 422, [("type-invalid", at(b, "ServiceRequest", f".extension[{position}].valueString"))]


def gp_validation_without_date(b: Json) -> tuple[int, list[tuple[str, str]]]:
    extensions = res(b, "ServiceRequest")["extension"]
    position = next(i for i, x in enumerate(extensions) if x["url"].endswith("/dac-gp-validation"))
    extension = extensions[position]
    extension["extension"] = [x for x in extension["extension"] if x["url"] != "date"]  # slice date is 1..1
    return 422, [("slice-cardinality", at(b, "ServiceRequest", f".extension[{position}].extension"))]


def consent_without_the_law(b: Json) -> tuple[int, list[tuple[str, str]]]:
    res(b, "Consent")["policyRule"] = {"text": "Information du patient"}  # dac-consent-1: cites L1110-12
    return 422, [("invariant-failed", at(b, "Consent", ""))]


def subject_a_practitioner(b: Json) -> tuple[int, list[tuple[str, str]]]:
    res(b, "ServiceRequest")["subject"] = {"reference": b["entry"][index_of(b, "Practitioner")]["fullUrl"]}
    return 422, [
        ("reference-target-invalid", at(b, "ServiceRequest", ".subject.reference")),
        ("servicerequest-subject-mismatch", at(b, "ServiceRequest", ".subject")),
    ]


#: Valid FHIR that POST /fhir refuses (it takes a transaction): $validate and the command line find no fault.
ENDPOINT_ONLY = {"collection-bundle"}


def collection_bundle(b: Json) -> tuple[int, list[tuple[str, str]]]:
    b["type"] = "collection"
    for entry in b["entry"]:
        del entry["request"]
    return 400, [("bundle-type-unsupported", "Bundle.type")]


MISTAKES: dict[str, tuple[str, Mistake]] = {
    "missing-patient": ("referral-gp.json", missing_patient),
    "bad-ins-key": ("referral-hospital-nurse.json", bad_ins_key),
    "unknown-status": ("referral-gp.json", unknown_status),
    "dangling-reference": ("referral-gp.json", dangling_reference),
    "wrong-mission-code": ("referral-hospital-nurse.json", wrong_mission),
    "two-service-requests": ("referral-gp.json", two_service_requests),
    "ins-without-birth-date": ("referral-corsica.json", ins_without_birth_date),
    "bad-rpps-key": ("referral-hospital-nurse.json", bad_rpps_key),
    "bad-finess-key": ("referral-hospital-nurse.json", bad_finess_key),
    "unknown-element": ("referral-overseas.json", unknown_element),
    "bad-birth-date": ("referral-no-gp.json", bad_date),
    "no-request-identifier": ("referral-gp.json", no_request_identifier),
    "subject-not-the-patient": ("referral-hospital-nurse.json", subject_not_the_patient),
    "consent-of-another-patient": ("referral-hospital-nurse.json", consent_of_another_patient),
    "bad-insee-code": ("referral-hospital-nurse.json", bad_insee_code),
    "duplicate-full-url": ("referral-gp.json", duplicate_full_url),
    "observation-in-referral": ("referral-no-gp.json", observation_in_referral),
    "collection-bundle": ("referral-gp.json", collection_bundle),
    "careteam-participant-without-member": ("referral-social-worker.json", participant_without_member),
    "intent-plan": ("referral-gp.json", intent_plan),
    "unknown-provision-type": ("referral-hospital-nurse.json", unknown_provision_type),
    "two-ins-nir": ("referral-hospital-nurse.json", two_ins_nir),
    "gp-link-as-string": ("referral-hospital-nurse.json", gp_link_as_string),
    "gp-validation-without-date": ("referral-gp-validated.json", gp_validation_without_date),
    "consent-without-the-law": ("referral-hospital-nurse.json", consent_without_the_law),
    "subject-a-practitioner": ("referral-hospital-nurse.json", subject_a_practitioner),
}


def main() -> None:
    expected: dict[str, Any] = {}
    for name, (source, mistake) in MISTAKES.items():
        bundle = copy.deepcopy(example(source))
        status, issues = mistake(bundle)
        (HERE / f"{name}.json").write_text(json.dumps(bundle, ensure_ascii=False, indent=2) + "\n")
        expected[f"{name}.json"] = {
            "from": source,
            "status": status,
            "issues": [{"code": code, "expression": expression} for code, expression in issues],
            "validate": [] if name in ENDPOINT_ONLY else None,  # what $validate finds, when it differs
        }
    (HERE / "expected.json").write_text(json.dumps(expected, ensure_ascii=False, indent=2) + "\n")
    print(f"wrote {len(MISTAKES)} invalid referrals and expected.json")


if __name__ == "__main__":
    main()
