from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import InvalidRequest, InvalidResource
from gateway.fhir.codec import parse_resource, serialize_resource
from gateway.fhir.media import FhirFormat
from gateway.validation.engine import engine

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


_ABSENT = '<extension url="http://hl7.org/fhir/StructureDefinition/data-absent-reason"><valueCode value="unknown"/>'
_NOTE = {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}]}
_TIMING = f"""<ServiceRequest xmlns="http://hl7.org/fhir"><status value="active"/><intent value="order"/>
<subject><reference value="Patient/1"/></subject><occurrenceTiming>
<event>{_ABSENT}</extension></event><event value="2026-12-01T10:00:00.5Z"/>
<repeat><timeOfDay>{_ABSENT}</extension></timeOfDay><timeOfDay value="12:00:00"/><timeOfDay value="18:00:00"/></repeat>
</occurrenceTiming></ServiceRequest>""".encode()


def test_a_repeat_with_only_an_extension_keeps_its_place() -> None:
    """Regression: fhir.resources drops a repeated primitive that has only an extension from the values but not from
    the ``_`` list, and the dates put back as written were paired off by one: timeOfDay [absent, 12:00, 18:00] read
    as [12:00, 12:00], Timing.event's …00.5Z lost. Each list now has one entry per element, null where none."""
    timing = parse_resource(_TIMING, FhirFormat.XML)["occurrenceTiming"]
    assert timing["repeat"] == {"timeOfDay": [None, "12:00:00", "18:00:00"], "_timeOfDay": [_NOTE, None, None]}
    assert (timing["event"], timing["_event"]) == ([None, "2026-12-01T10:00:00.5Z"], [_NOTE, None])
    again = parse_resource(
        serialize_resource({"resourceType": "ServiceRequest", **_service_request(timing)}, FhirFormat.XML),
        FhirFormat.XML,
    )
    assert again["occurrenceTiming"] == timing
    # A null that its _ list accounts for is a value R4 JSON allows; one that nothing accounts for is not.
    found = engine().validate({"resourceType": "ServiceRequest", **_service_request(timing)})
    assert not [issue for issue in found if "occurrenceTiming" in str(issue.expression)]
    bare = {"repeat": {"timeOfDay": [None, "12:00:00"]}}
    found = engine().validate({"resourceType": "ServiceRequest", **_service_request(bare)})
    assert [issue.expression for issue in found if "occurrenceTiming" in str(issue.expression)] == [
        "ServiceRequest.occurrenceTiming.repeat.timeOfDay[0]"
    ]


def _service_request(timing: dict[str, object]) -> dict[str, object]:
    return {"status": "active", "intent": "order", "subject": {"reference": "Patient/1"}, "occurrenceTiming": timing}


def test_a_date_inside_an_extension_on_a_primitive_is_kept_as_written() -> None:
    body = b"""<Patient xmlns="http://hl7.org/fhir"><birthDate value="1941-06-14"><extension
    url="http://hl7.org/fhir/StructureDefinition/patient-birthTime"><valueDateTime value="1941-06-14T10:22:41.5+02:00"/>
    </extension></birthDate></Patient>"""
    patient = parse_resource(body, FhirFormat.XML)
    assert patient["_birthDate"]["extension"][0]["valueDateTime"] == "1941-06-14T10:22:41.5+02:00"
    assert b'value="1941-06-14T10:22:41.5+02:00"' in serialize_resource(patient, FhirFormat.XML)
