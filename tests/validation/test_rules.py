"""The business rules reach the sender as 422s with the element's FHIRPath, all at once."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gateway.errors import UnprocessableEntity
from gateway.intake import read_referral
from tests.conftest import load_example


def _patient(bundle: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return next((i, e["resource"]) for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == "Patient")


def _codes(bundle: dict[str, Any]) -> list[tuple[str, str | None]]:
    with pytest.raises(UnprocessableEntity) as caught:
        read_referral(bundle, "transaction")
    return [(str(issue.code), issue.expression) for issue in caught.value.issues]


@pytest.fixture
def bundle() -> dict[str, Any]:
    return copy.deepcopy(load_example("referral-hospital-nurse.json"))


def test_every_example_passes_the_rules() -> None:
    from tests.conftest import EXAMPLES

    for path in EXAMPLES.glob("referral-*.json"):
        read_referral(load_example(path.name), "transaction")


def test_bad_ins_key(bundle: dict[str, Any]) -> None:
    index, patient = _patient(bundle)
    position = next(i for i, x in enumerate(patient["identifier"]) if x["system"] == "urn:oid:1.2.250.1.213.1.4.8")
    patient["identifier"][position]["value"] = patient["identifier"][position]["value"][:13] + "00"
    assert ("ins-key-invalid", f"Bundle.entry[{index}].resource.identifier[{position}].value") in _codes(bundle)


def test_bad_rpps_key(bundle: dict[str, Any]) -> None:
    index, practitioner = next(
        (i, e["resource"]) for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == "Practitioner"
    )
    position = next(i for i, x in enumerate(practitioner["identifier"]) if x["system"] == "https://rpps.esante.gouv.fr")
    value = practitioner["identifier"][position]["value"]
    practitioner["identifier"][position]["value"] = value[:-1] + str((int(value[-1]) + 1) % 10)
    assert ("identifier-invalid", f"Bundle.entry[{index}].resource.identifier[{position}].value") in _codes(bundle)


def test_ins_without_its_traits(bundle: dict[str, Any]) -> None:
    index, patient = _patient(bundle)
    del patient["birthDate"]
    patient["extension"] = [e for e in patient.get("extension", []) if not e["url"].endswith("patient-birthPlace")]
    codes = _codes(bundle)
    assert ("ins-traits-missing", f"Bundle.entry[{index}].resource.birthDate") in codes
    assert ("ins-traits-missing", f"Bundle.entry[{index}].resource.extension") in codes


def test_insee_code_shape(bundle: dict[str, Any]) -> None:
    index, patient = _patient(bundle)
    for position, extension in enumerate(patient["address"][0].get("extension", [])):
        if extension["url"].endswith("fr-core-address-insee-code"):
            extension["valueCoding"]["code"] = "5951"
            expected = f"Bundle.entry[{index}].resource.address[0].extension[{position}].valueCoding.code"
    assert ("insee-code-invalid", expected) in _codes(bundle)
