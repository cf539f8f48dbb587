"""The bounds on a parsed body (gateway.fhir.limits): checked without recursion, before anything walks it."""

from __future__ import annotations

import pytest

from gateway.errors import GatewayError, IssueCode
from gateway.fhir.codec import parse_resource
from gateway.fhir.limits import MAX_BUNDLE_ENTRIES, MAX_DEPTH, MAX_STRING_LENGTH, check_limits
from gateway.fhir.media import FhirFormat
from gateway.fhir.xml import MAX_XML_DEPTH


def _nested_json(levels: int) -> bytes:
    """A Patient whose extension nests ``levels`` times (each level is an array and an object)."""
    return (
        b'{"resourceType":"Patient","extension":'
        + b'[{"url":"http://example.org/x","extension":' * levels
        + b"[]"
        + b"}]" * levels
        + b"}"
    )


def _code(error: pytest.ExceptionInfo[GatewayError]) -> tuple[int, str]:
    return error.value.status_code, str(error.value.issues[0].code)


def test_a_referral_sized_nesting_passes() -> None:
    check_limits(parse_resource(_nested_json(20), FhirFormat.JSON))


@pytest.mark.parametrize("levels", [MAX_DEPTH // 2 + 1, 400, 510])
def test_deep_json_is_a_400_not_a_recursion_error(levels: int) -> None:
    with pytest.raises(GatewayError) as error:
        parse_resource(_nested_json(levels), FhirFormat.JSON)
    assert _code(error) == (400, IssueCode.NESTING_TOO_DEEP)


def test_json_deeper_than_orjson_reads_is_a_400() -> None:
    with pytest.raises(GatewayError) as error:
        parse_resource(b'{"resourceType":"Patient","x":' + b"[" * 2000 + b"]" * 2000 + b"}", FhirFormat.JSON)
    assert error.value.status_code == 400


def test_deep_xml_is_a_400() -> None:
    levels = MAX_XML_DEPTH + 5
    body = (
        b'<Patient xmlns="http://hl7.org/fhir">'
        + b'<extension url="http://example.org/x">' * levels
        + b"</extension>" * levels
        + b"</Patient>"
    )
    with pytest.raises(GatewayError) as error:
        parse_resource(body, FhirFormat.XML)
    assert _code(error) == (400, IssueCode.NESTING_TOO_DEEP)


def test_too_many_bundle_entries_is_a_413() -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{}] * (MAX_BUNDLE_ENTRIES + 1)}
    with pytest.raises(GatewayError) as error:
        check_limits(bundle)
    assert _code(error) == (413, IssueCode.BUNDLE_TOO_MANY_ENTRIES)
    check_limits({**bundle, "entry": [{}] * MAX_BUNDLE_ENTRIES})


def test_too_many_xml_bundle_entries_is_a_413() -> None:
    body = (
        b'<Bundle xmlns="http://hl7.org/fhir"><type value="collection"/>'
        + b"<entry/>" * (MAX_BUNDLE_ENTRIES + 1)
        + b"</Bundle>"
    )
    with pytest.raises(GatewayError) as error:
        parse_resource(body, FhirFormat.XML)
    assert _code(error) == (413, IssueCode.BUNDLE_TOO_MANY_ENTRIES)


def test_a_string_over_fhirs_limit_is_a_422_naming_it() -> None:
    patient = {"resourceType": "Patient", "name": [{"family": "x" * (MAX_STRING_LENGTH + 1)}]}
    with pytest.raises(GatewayError) as error:
        check_limits(patient)
    assert _code(error) == (422, IssueCode.VALUE_TOO_LONG)
    assert error.value.issues[0].expression == "name[0].family"


def test_an_object_sent_as_a_json_string_is_refused() -> None:
    # Regression (found by tests/intake/test_intake_properties.py): fhir.resources parses a string holding JSON
    # where an object is expected, so it passed validation and crashed the rules that read the raw resource.
    from gateway.fhir.models import parse_model

    with pytest.raises(GatewayError) as error:
        parse_model({"resourceType": "Patient", "name": ['{"family": "X"}']})
    assert _code(error) == (422, IssueCode.VALUE_INVALID)
    assert error.value.issues[0].expression == "Patient.name[0]"
    parse_model({"resourceType": "Patient", "name": [{"family": "{not an object}", "text": "[1]"}]})


def test_a_library_failure_on_a_wrong_shape_is_a_422() -> None:
    # Regression: an integer where fhir.resources expects a url made it raise AttributeError (a 500).
    from gateway.fhir.models import parse_model

    with pytest.raises(GatewayError) as error:
        parse_model({"resourceType": "Patient", "extension": [{"url": 5}]})
    assert error.value.status_code == 422
