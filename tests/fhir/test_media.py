from __future__ import annotations

import pytest

from gateway.errors import UnsupportedMediaType
from gateway.fhir.media import FHIR_JSON, FHIR_XML, FhirFormat, request_format, response_format


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/fhir+json", FhirFormat.JSON),
        ("application/fhir+json; charset=utf-8", FhirFormat.JSON),
        ("application/json", FhirFormat.JSON),
        ("application/fhir+xml;charset=UTF-8", FhirFormat.XML),
        ("application/xml", FhirFormat.XML),
        ("APPLICATION/FHIR+XML", FhirFormat.XML),
    ],
)
def test_request_format(content_type: str, expected: FhirFormat) -> None:
    assert request_format(content_type) is expected


@pytest.mark.parametrize("content_type", [None, "", "text/plain", "multipart/form-data", "application/pdf"])
def test_unsupported_content_type_is_415(content_type: str | None) -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        request_format(content_type)
    assert caught.value.status_code == 415
    assert caught.value.issues[0].code == "media-type-unsupported"


@pytest.mark.parametrize(
    ("accept", "format_parameter", "media_type"),
    [
        (None, None, FHIR_JSON),
        ("*/*", None, FHIR_JSON),
        ("application/fhir+xml", None, FHIR_XML),
        ("application/xml", None, "application/xml"),
        ("application/json", None, "application/json"),
        ("application/fhir+json;q=0.5, application/fhir+xml", None, FHIR_XML),
        ("application/fhir+xml;q=0.2, application/fhir+json;q=0.9", None, FHIR_JSON),
        ("text/html", None, FHIR_JSON),
        ("application/fhir+json", "xml", FHIR_XML),
        ("application/fhir+xml", "json", FHIR_JSON),
        (None, "application/fhir+xml", FHIR_XML),
        (None, "bogus", FHIR_JSON),
    ],
)
def test_response_format(accept: str | None, format_parameter: str | None, media_type: str) -> None:
    assert response_format(accept, format_parameter).media_type == media_type
