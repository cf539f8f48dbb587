"""The examples seen by the independent validators (npm ``fhir``, ``@medplum/core`` with our profiles' snapshots).

Every valid example passes both against R4, and each resource of a type we profile passes @medplum/core against
that profile (``tools/profiles/validate-examples.mjs`` says the same in .ci/run). Every invalid example carries
one mistake (examples/invalid/expected.json), which the gateway's engine reports — tests/validation/
test_invalid_examples.py checks that. ``INDEPENDENT`` below records, per invalid example, which independent
validator catches the mistake too, and where none does, why: there the engine is the one that must, and is right.
The test asserts the validators find exactly that — so a change in what they catch changes this table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES
from tests.support.fhir_validators import FhirValidators, unavailable_reason

INVALID = EXAMPLES / "invalid"
NO_BINDINGS = "@medplum/core checks no bindings (DESIGN §9)"
NO_INVARIANTS = "npm fhir evaluates no FHIRPath invariants"
NO_REFERENCES = "neither validator resolves references between the entries of a Bundle"
NO_BUNDLE_PROFILE = "a transaction Bundle has no profile of ours (dac-referral-message is for messages)"


@dataclass(frozen=True)
class Independent:
    """What the independent validators make of one invalid example."""

    caught: dict[str, str]  # validator → what its finding names (a substring of it); empty: none catches it
    why_not: str  # why the other validators (or all) miss it: the engine must catch it (and does, as posted)


INDEPENDENT: dict[str, Independent] = {
    "missing-patient.json": Independent(
        {}, f"{NO_BUNDLE_PROFILE}, and {NO_REFERENCES}: 'one Patient' and the dangling references are the engine's"
    ),
    "bad-ins-key.json": Independent(
        {},
        "the INS key (97 − number mod 97) is arithmetic no invariant of ours says; dac-patient-3 checks the shape "
        "only (profiles/README.md)",
    ),
    "unknown-status.json": Independent(
        {"fhir": 'ServiceRequest.status: Code "bogus" not found in value set'},
        f"{NO_BINDINGS}; request-status is a required R4 binding, which npm fhir checks",
    ),
    "dangling-reference.json": Independent({}, NO_REFERENCES),
    "wrong-mission-code.json": Independent(
        {},
        f"the required binding of ServiceRequest.code to dac-mission: {NO_BINDINGS}, and npm fhir knows the R4 "
        "value sets only, not ours",
    ),
    "two-service-requests.json": Independent(
        {}, f"{NO_BUNDLE_PROFILE}; dac-message-2 counts ServiceRequests in a referral message only"
    ),
    "ins-without-birth-date.json": Independent(
        {"medplum vs dac-patient": "dac-patient-1"},
        "R4 has birthDate 0..1; the five INS traits are our invariant, which npm fhir does not evaluate",
    ),
    "bad-rpps-key.json": Independent({}, "the RPPS Luhn key is arithmetic; Practitioner has no profile of ours"),
    "bad-finess-key.json": Independent({}, "the FINESS Luhn key is arithmetic; Organization has no profile of ours"),
    "unknown-element.json": Independent(
        {
            "fhir": "ServiceRequest.urgencyLevel: Unexpected property",
            "medplum": "Bundle.entry[0].resource.urgencyLevel",
            "medplum vs dac-servicerequest": "ServiceRequest.urgencyLevel",
        },
        "",
    ),
    "bad-birth-date.json": Independent(
        {"medplum": "Bundle.entry[1].resource.birthDate: Invalid date format", "medplum vs dac-patient": "birthDate"},
        "npm fhir's date pattern lets '1938-02-30T10:00' through (it checks the shape loosely)",
    ),
    "no-request-identifier.json": Independent(
        {"medplum vs dac-servicerequest": "ServiceRequest.identifier: Missing required property"},
        "R4 has ServiceRequest.identifier 0..*; 1..* is our profile's, which npm fhir does not read",
    ),
    "subject-not-the-patient.json": Independent(
        {},
        "subject names the PractitionerRole entry by urn:uuid: @medplum/core cannot tell the type of a urn:uuid "
        "reference, npm fhir checks no reference targets",
    ),
    "consent-of-another-patient.json": Independent(
        {},
        "Patient/someone-else is a well-formed reference; that it is not the referral's Patient is a rule "
        "across entries",
    ),
    "bad-insee-code.json": Independent(
        {},
        "the INSEE code's shape is a business rule; dac-patient-4 asks only that a code (or a postal code) be there",
    ),
    "duplicate-full-url.json": Independent(
        {"medplum": "bdl-7"}, f"{NO_INVARIANTS} (bdl-7: fullUrl unique); the dangling reference: {NO_REFERENCES}"
    ),
    "observation-in-referral.json": Independent(
        {},
        "R4 allows any resource in a transaction; the types a referral may carry are in GraphDefinition/"
        "referral-request, which neither validator reads",
    ),
    "careteam-participant-without-member.json": Independent(
        {},
        "R4 has CareTeam.participant.member 0..1; dac-careteam's 1..1 is inside a backbone element, which "
        "@medplum/core checks against the base definition only (profiles/README.md)",
    ),
    "consent-without-the-law.json": Independent(
        {"medplum vs dac-consent": "dac-consent-1"}, f"{NO_INVARIANTS}, and dac-consent-1 is ours"
    ),
    "gp-link-as-string.json": Independent(
        {},
        "an extension's value may be any type in R4; @medplum/core does not check an extension against its "
        "definition (dac-gp-link: valueCode only), npm fhir knows no extension of ours",
    ),
    "gp-validation-without-date.json": Independent(
        {}, "the date 1..1 is dac-gp-validation's, and neither validator checks an extension against its definition"
    ),
    "intent-plan.json": Independent(
        {"medplum vs dac-servicerequest": "ServiceRequest.intent: Value did not match expected pattern"},
        "plan is an R4 request-intent code; the fixed order is our profile's, which npm fhir does not read",
    ),
    "subject-a-practitioner.json": Independent(
        {},
        "subject names the Practitioner entry by urn:uuid: @medplum/core cannot tell the type of a urn:uuid "
        "reference, npm fhir checks no reference targets",
    ),
    "two-ins-nir.json": Independent(
        {"medplum vs dac-patient": "slice 'INS-NIR': expected 0..1, but found 2"},
        "R4 allows any number of identifiers; the INS-NIR slice is our profile's",
    ),
    "unknown-provision-type.json": Independent(
        {"fhir": 'Consent.provision.type: Code "maybe" not found in value set'},
        f"{NO_BINDINGS}; consent-provision-type is a required R4 binding, which npm fhir checks",
    ),
    "collection-bundle.json": Independent(
        {}, "a collection Bundle is valid R4; only POST /fhir refuses it (it takes a transaction): not a content fault"
    ),
}


def valid_examples() -> list[str]:
    return sorted(path.name for path in EXAMPLES.glob("*.json") if path.name != "expected.json")  # the kit's


def invalid_examples() -> list[str]:
    return sorted(path.name for path in INVALID.glob("*.json") if path.name != "expected.json")


@pytest.fixture
def validators(fhir_validators: FhirValidators | None) -> FhirValidators:
    if fhir_validators is None:
        pytest.skip(f"independent FHIR validators not run: {unavailable_reason()}")
    return fhir_validators


def load(path: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads(path.read_text(encoding="utf-8"))
    return data


@pytest.mark.parametrize("name", valid_examples())
def test_valid_examples_pass_both_validators_and_our_profiles(validators: FhirValidators, name: str) -> None:
    assert validators.findings(load(EXAMPLES / name)) == {}


def test_the_table_covers_every_invalid_example() -> None:
    assert set(INDEPENDENT) == set(invalid_examples()) == set(load(INVALID / "expected.json"))
    for name, independent in INDEPENDENT.items():
        assert independent.caught or independent.why_not, f"{name}: say why no independent validator catches it"


@pytest.mark.parametrize("name", invalid_examples())
def test_what_the_independent_validators_find_in_each_invalid_example(validators: FhirValidators, name: str) -> None:
    found = validators.findings(load(INVALID / name))
    expected = INDEPENDENT[name].caught
    assert set(found) == set(expected), f"{name}: the validators found {found}"
    for validator, names in expected.items():
        assert any(names in finding for finding in found[validator]), f"{name} [{validator}]: {found[validator]}"
