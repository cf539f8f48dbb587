"""Property-based tests (hypothesis) over the parsers: whatever the bytes, a body parses into a resource or is
refused with a client error (a ``GatewayError`` of status 4xx) — never another exception."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.errors import GatewayError, NotAcceptable
from gateway.fhir.codec import parse_resource
from gateway.fhir.media import FhirFormat, request_format, response_format
from gateway.fhir.models import parse_model
from gateway.fhir.search import SEARCH_PARAMETERS, parse_search
from gateway.validation.validate import validate
from tests.support.fuzz import fuzz_settings

pytestmark = pytest.mark.fuzz
FUZZ = fuzz_settings(150)
RESOURCE_TYPES = ["Bundle", "Patient", "ServiceRequest", "Consent", "CareTeam", "Task", "Nope", ""]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=30,
)
# Objects shaped like FHIR: known element names, odd values.
element_names = st.sampled_from(
    ["resourceType", "id", "type", "entry", "resource", "request", "method", "url", "identifier", "system",
     "value", "reference", "subject", "status", "name", "family", "extension", "contained", "fullUrl", "meta"]
)  # fmt: skip
fhir_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.sampled_from(RESOURCE_TYPES),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(element_names, children, max_size=5),
    max_leaves=40,
)


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()  # not orjson: it cannot write integers beyond 64 bits, a client can


def _client_error_or_resource(call: Any) -> None:
    try:
        call()
    except GatewayError as error:
        assert 400 <= error.status_code < 500, error


@FUZZ
@given(st.binary(max_size=2000))
@example(b"\xef\xbb\xbf{}")
@example(b'{"resourceType":"Bundle","entry":[{"resource":' * 50 + b"}" * 50)
def test_any_bytes_as_json(body: bytes) -> None:
    _client_error_or_resource(lambda: parse_resource(body, FhirFormat.JSON))


@FUZZ
@given(st.sampled_from(RESOURCE_TYPES), st.dictionaries(element_names, fhir_like, max_size=6))
def test_fhir_shaped_json_through_parse_and_validate(resource_type: str, elements: dict[str, Any]) -> None:
    body = _dumps({"resourceType": resource_type, **elements})

    def parse_and_validate() -> None:
        resource = parse_resource(body, FhirFormat.JSON)
        validate(resource)
        parse_model(resource)

    _client_error_or_resource(parse_and_validate)


@FUZZ
@given(json_values)
def test_any_json_value(value: Any) -> None:
    _client_error_or_resource(lambda: validate(parse_resource(_dumps(value), FhirFormat.JSON)))


xml_names = st.sampled_from(["Bundle", "Patient", "entry", "resource", "type", "name", "family", "extension", "x"])


@st.composite
def xml_documents(draw: st.DrawFn) -> bytes:
    def element(depth: int) -> str:
        name = draw(xml_names)
        attributes = draw(st.sampled_from(["", ' value="v"', ' url="http://x"', ' value="&amp;&lt;"', " value='1'"]))
        children = "" if depth > 3 else "".join(element(depth + 1) for _ in range(draw(st.integers(0, 3))))
        text = draw(st.sampled_from(["", "text", "<![CDATA[x]]>", "<!-- c -->", "&#0;", "&unknown;"]))
        return f"<{name}{attributes}>{text}{children}</{name}>"

    namespace = draw(st.sampled_from(['xmlns="http://hl7.org/fhir"', 'xmlns="urn:other"', ""]))
    root = draw(st.sampled_from(["Bundle", "Patient", "Unknown"]))
    prolog = draw(st.sampled_from(["", '<?xml version="1.0" encoding="UTF-8"?>', '<?xml version="1.0"?>\n']))
    return f"{prolog}<{root} {namespace}>{element(0)}</{root}>".encode()


@FUZZ
@given(xml_documents())
def test_generated_xml(body: bytes) -> None:
    _client_error_or_resource(lambda: validate(parse_resource(body, FhirFormat.XML)))


@FUZZ
@given(st.binary(max_size=1000))
@example(b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><Patient xmlns="http://hl7.org/fhir">&a;</Patient>')
@example(
    b'<Patient xmlns="http://hl7.org/fhir" xmlns:xi="http://www.w3.org/2001/XInclude">'
    b'<xi:include href="/etc/passwd"/></Patient>'
)
def test_any_bytes_as_xml(body: bytes) -> None:
    _client_error_or_resource(lambda: parse_resource(body, FhirFormat.XML))


search_names = st.sampled_from(
    [
        *sorted({name for parameters in SEARCH_PARAMETERS.values() for name in parameters}),
        *("_id", "_lastUpdated", "_count", "_offset", "_sort", "_summary", "_total", "x", "status:missing"),
    ]
)
search_values = st.text(max_size=40) | st.sampled_from(
    ["ge2026-01-01", "lt2026-13-40", "eq2026", "99999999999999999999", "-1", "a|b", "|b", "a|", "Patient/1", ",", ""]
)


@FUZZ
@given(
    st.sampled_from([*SEARCH_PARAMETERS, "Nope"]),
    st.lists(st.tuples(search_names | st.text(max_size=15), search_values), max_size=8),
)
def test_search_parameters(resource_type: str, params: list[tuple[str, str]]) -> None:
    _client_error_or_resource(lambda: parse_search(resource_type, params, default_count=20, max_count=100))


@FUZZ
@given(st.text(max_size=80), st.text(max_size=80), st.text(max_size=20))
def test_content_negotiation(content_type: str, accept: str, format_parameter: str) -> None:
    _client_error_or_resource(lambda: request_format(content_type))
    try:
        response_format(accept, format_parameter)
    except NotAcceptable as refused:  # what it refuses is a 406, never anything else
        assert refused.status_code == 406
