"""Where an issue points in a document: FHIRPath in JSON and XML, XPath, HL7 v2 locations."""

from __future__ import annotations

import json

import pytest

from gateway.console.locate import document_format, fhirpath_steps, locate
from tests.conftest import EXAMPLES


def line_of(text: str, needle: str) -> int:
    return 1 + next(n for n, line in enumerate(text.splitlines()) if needle in line)


def test_every_expression_of_the_invalid_examples_lands_on_a_line_of_its_file() -> None:
    expected = json.loads((EXAMPLES / "invalid" / "expected.json").read_text())
    for name, outcome in expected.items():
        text = (EXAMPLES / "invalid" / name).read_text()
        for issue in outcome["issues"]:
            assert locate(text, issue["expression"]) is not None, (name, issue)


def test_json_paths_with_indexes_choice_types_and_extensions() -> None:
    text = (EXAMPLES / "referral-hospital-nurse.json").read_text()
    nir = json.loads(text)["entry"][1]["resource"]["identifier"][0]["value"]
    assert locate(text, "Bundle.entry[1].resource.identifier[0].value") == line_of(text, f'"{nir}"')
    link = "Bundle.entry[0].resource.extension('https://fhir.dac-gateway.org/StructureDefinition/dac-gp-link').value"
    assert locate(text, link) == line_of(text, '"valueCode"')
    # A step this reader does not evaluate stops at the deepest element found.
    identifiers = locate(text, "Bundle.entry[1].resource.identifier")
    assert identifiers is not None and identifiers < locate(text, "Bundle.entry[1].resource.identifier[0].value")  # type: ignore[operator]
    assert locate(text, "Bundle.entry[1].resource.identifier.where(system = 'x').value") == identifiers
    assert locate(text, "Bundle.entry[99].resource") == line_of(text, '"entry": [')


def test_xml_paths_and_xpath() -> None:
    text = (EXAMPLES / "referral-hospital-nurse.xml").read_text()
    nir = json.loads((EXAMPLES / "referral-hospital-nurse.json").read_text())["entry"][1]["resource"]["identifier"][0]
    assert locate(text, "Bundle.entry[1].resource.identifier[0].value") == line_of(text, nir["value"])
    assert locate(text, None, "/Bundle/entry[2]/resource/Patient/identifier[1]/value") == line_of(text, nir["value"])
    assert locate(text, None, "/f:Bundle/f:entry[2]/f:resource/f:Patient") == line_of(text, "<Patient")


def test_hl7v2_locations_name_the_segment_by_its_sequence() -> None:
    message = "MSH|^~\\&|APP|FAC\rPID|1||123\rNTE|1\rPID|2||456\r"
    assert document_format(message) == "hl7v2"
    assert locate(message, None, "PID^2^3^1^1") == 4
    assert locate(message, None, "PID^1^3") == 2
    assert locate(message, None, "ZZZ^1") is None


@pytest.mark.parametrize(
    ("expression", "steps"),
    [
        ("Bundle.entry[0].resource", ["Bundle", "entry[0]", "resource"]),
        ("a.extension('http://x.y/z').value", ["a", "extension('http://x.y/z')", "value"]),
        ("a.where(b.c = 'd.e').f", ["a", "where(b.c = 'd.e')", "f"]),
    ],
)
def test_fhirpath_steps(expression: str, steps: list[str]) -> None:
    assert fhirpath_steps(expression) == steps


def test_what_is_not_a_document_locates_nothing() -> None:
    locate('{ "entry": [ {', "Bundle.entry[0].resource")  # cut short: no exception
    assert locate("plain text", "Bundle.entry") is None
    assert locate("<unclosed", "Bundle.entry") is None
