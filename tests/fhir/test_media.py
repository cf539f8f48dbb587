from __future__ import annotations

import pytest

from gateway.errors import NotAcceptable, UnsupportedMediaType
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
        ("application/fhir+json", "xml", FHIR_XML),
        ("application/fhir+xml", "json", FHIR_JSON),
        (None, "application/fhir+xml", FHIR_XML),
        # A browser: HTML first, but XML and anything else too — answered in what it takes of ours.
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", None, "application/xml"),
        ("text/html, */*;q=0.1", None, FHIR_JSON),
        ("text/html, application/*", None, FHIR_JSON),
        ("application/fhir+json; fhirVersion=4.0", None, FHIR_JSON),
        ("application/fhir+xml; fhirVersion=4.0.1", None, FHIR_XML),
        ("application/fhir+json; fhirVersion=3.0, application/fhir+xml; fhirVersion=4.0", None, FHIR_XML),
        ("*/*, application/fhir+xml", None, FHIR_XML),  # a type of ours before a wildcard of equal q
        ("", None, FHIR_JSON),
        ("text/html", "json", FHIR_JSON),  # _format overrides Accept
    ],
)
def test_response_format(accept: str | None, format_parameter: str | None, media_type: str) -> None:
    assert response_format(accept, format_parameter).media_type == media_type


@pytest.mark.parametrize(
    ("accept", "format_parameter"),
    [
        ("text/html", None),
        ("application/fhir+turtle", None),
        ("application/fhir+json; fhirVersion=3.0", None),
        ("application/fhir+json;q=0", None),
        ("application/fhir+json", "turtle"),
        ("application/fhir+json", "ttl"),
        (None, "html"),
        (None, "text/html"),
        (None, "application/fhir+json; fhirVersion=1.0"),
        (None, "bogus"),
    ],
)
def test_a_format_we_cannot_write_is_406(accept: str | None, format_parameter: str | None) -> None:
    """R4 http.html#mime-type: 406 when what is asked is not supported — never JSON in its place."""
    with pytest.raises(NotAcceptable) as caught:
        response_format(accept, format_parameter)
    assert caught.value.status_code == 406
    assert caught.value.issues[0].code == "format-not-acceptable"


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        # RFC 9110 §12.4.2: q=0 is "not acceptable". A wildcard takes the next of ours the client has not refused.
        ("application/fhir+json;q=0, */*", FHIR_XML),
        ("application/fhir+json;q=0, application/*", FHIR_XML),
        ("application/fhir+json;q=0, application/fhir+xml;q=0, */*", "application/json"),
        ("application/fhir+json;q=0.0, application/fhir+xml;q=0, application/json;q=0, */*", "application/xml"),
        ("*/*;q=0, application/fhir+xml", FHIR_XML),
        ("application/*;q=0, */*, application/json;q=0.5", "application/json"),
        ("text/json;q=0, */*", FHIR_JSON),  # refusing a spelling of ours refuses only that spelling
        # §12.5.1: the most specific range weighs a type, so a wildcard does not lift a low q of its own.
        ("application/fhir+json;q=0.1, */*", FHIR_XML),
        ("*/*;q=0.9, application/*;q=0.2, application/fhir+xml;q=0.5", FHIR_XML),
        # A q that is no finite number is disregarded: it neither asks nor refuses; others are held to [0, 1].
        ("application/fhir+xml;q=nan, application/fhir+json;q=0.5", FHIR_JSON),
        ("application/fhir+xml;q=inf, application/fhir+json;q=0.5", FHIR_JSON),
        ("application/fhir+xml;q=2, application/fhir+json;q=0.5", FHIR_XML),  # held to 1
        ("application/fhir+xml;q=1.0000", FHIR_XML),  # more decimals than the RFC writes: still a weight
        ("application/fhir+json;q=.5", FHIR_JSON),
        ("application/fhir+xml;q=-1, application/fhir+json;q=0.5", FHIR_JSON),  # no qvalue: disregarded, no refusal
        ("application/fhir+xml;q=1e-1, application/fhir+json;q=0.5", FHIR_JSON),
        ("application/fhir+xml;q=0_5, application/fhir+json;q=0.5", FHIR_JSON),
        ('application/fhir+xml;q="0.9\x1c", application/fhir+json;q=0.5', FHIR_XML),  # float() refused the raw text
        ("application/fhir+xml;q=-1, */*", FHIR_JSON),
        ("application/fhir+json;q=x, application/fhir+xml;q=0.001", FHIR_XML),
        ("application/fhir+xml;q=1.000, application/fhir+json;q=0.999", FHIR_XML),
    ],
)
def test_q_values(accept: str, media_type: str) -> None:
    """Regression: application/fhir+json;q=0, */* was answered in FHIR JSON, the type refused, and q=nan or q=inf
    was taken as a weight (inf outranking every other)."""
    assert response_format(accept, None).media_type == media_type


@pytest.mark.parametrize(
    "accept",
    [
        "application/fhir+json;q=0, application/fhir+xml;q=0, application/json;q=0, application/xml;q=0, */*",
        "application/*;q=0, text/html",
        "*/*;q=0",
        "application/fhir+json;q=nan",
        "application/fhir+json;q=inf",
    ],
)
def test_all_of_ours_refused_is_406(accept: str) -> None:
    with pytest.raises(NotAcceptable):
        response_format(accept, None)


def test_pretty() -> None:
    assert response_format(None, None, "true").pretty
    assert not response_format(None, None, "false").pretty and not response_format(None, None).pretty
