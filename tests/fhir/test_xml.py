from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import InvalidRequest, InvalidResource
from gateway.fhir.codec import parse_resource, serialize_resource
from gateway.fhir.media import FhirFormat

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<Patient xmlns="http://hl7.org/fhir"><id value="&lol2;"/></Patient>"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE p [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Patient xmlns="http://hl7.org/fhir"><id value="&xxe;"/></Patient>"""


@pytest.mark.parametrize("body", [BILLION_LAUGHS, EXTERNAL_ENTITY], ids=["billion-laughs", "external-entity"])
def test_doctype_and_entities_are_refused(body: bytes) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_resource(body, FhirFormat.XML)
    assert caught.value.issues[0].code == "xml-doctype-forbidden"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"<Patient xmlns='http://hl7.org/fhir'><gender value='male'/>", "body-unparsable"),
        (b"<Patient><gender value='male'/></Patient>", "xml-namespace-invalid"),
        (b"<Patient xmlns='urn:other'/>", "xml-namespace-invalid"),
        (b"<Spaceship xmlns='http://hl7.org/fhir'/>", "resource-type-unknown"),
        (b"   ", "body-unparsable"),
    ],
)
def test_malformed_xml_is_400(body: bytes, code: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_resource(body, FhirFormat.XML)
    assert caught.value.status_code == 400
    assert caught.value.issues[0].code == code


def test_unknown_element_reports_its_fhirpath() -> None:
    body = (
        b"<Bundle xmlns='http://hl7.org/fhir'><type value='transaction'/>"
        b"<entry><resource><Patient><gender value='female'/></Patient></resource></entry>"
        b"<entry><resource><Patient><colour value='blue'/></Patient></resource></entry></Bundle>"
    )
    with pytest.raises(InvalidResource) as caught:
        parse_resource(body, FhirFormat.XML)
    issue = caught.value.issues[0]
    assert issue.code == "element-unknown"
    assert issue.expression == "Bundle.entry[1].resource.colour"


def test_bad_primitive_in_xml_is_422_with_expression() -> None:
    body = b"<Patient xmlns='http://hl7.org/fhir'><birthDate value='1950-13-45'/></Patient>"
    with pytest.raises(InvalidResource) as caught:
        parse_resource(body, FhirFormat.XML)
    assert caught.value.issues[0].expression == "Patient.birthDate"


def test_example_xml_reads_as_the_json_example() -> None:
    import json

    from_xml = parse_resource((EXAMPLES / "referral-hospital-nurse.xml").read_bytes(), FhirFormat.XML)
    from_json = json.loads((EXAMPLES / "referral-hospital-nurse.json").read_text())
    assert from_xml == from_json


def test_xml_round_trip() -> None:
    patient = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1950-01-02"}
    xml = serialize_resource(patient, FhirFormat.XML)
    assert xml.startswith(b"<?xml") and b'<Patient xmlns="http://hl7.org/fhir">' in xml
    assert parse_resource(xml, FhirFormat.XML) == patient


def test_json_must_be_an_object_with_a_known_resource_type() -> None:
    for body, code in [
        (b"[1, 2]", "body-unparsable"),
        (b"{not json", "body-unparsable"),
        (b'{"resourceType": "Spaceship"}', "resource-type-unknown"),
        (b'{"gender": "male"}', "resource-type-unknown"),
        (b'{"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Nope"}}]}', "resource-type-unknown"),
    ]:
        with pytest.raises(InvalidRequest) as caught:
            parse_resource(body, FhirFormat.JSON)
        assert caught.value.issues[0].code == code, body
