"""Bytes ⇄ FHIR resource (R4 JSON as a dict), in the negotiated format."""

from __future__ import annotations

import orjson

from gateway.errors import InvalidRequest, IssueCode
from gateway.fhir.limits import check_limits
from gateway.fhir.media import FhirFormat
from gateway.fhir.models import check_resource_types
from gateway.fhir.types import Resource
from gateway.fhir.xml import resource_to_xml, xml_to_resource


def parse_resource(body: bytes, fmt: FhirFormat) -> Resource:
    """A request body as a FHIR resource; 400 when it is not one (resource types checked, nothing more)."""
    if not body.strip():
        raise InvalidRequest.single(IssueCode.BODY_UNPARSABLE, "the request body is empty", None, "structure")
    if b"\\u0000" in body or b"\x00" in body:
        # PostgreSQL text cannot hold NUL; SQLite can: refused for both, so both backends behave the same.
        raise InvalidRequest.single(IssueCode.VALUE_TOO_LONG, "the body holds a NUL character", None, "value")
    if fmt is FhirFormat.XML:
        return xml_to_resource(body)  # bounded there, before fhir.resources reads the tree
    try:
        resource = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest.single(
            IssueCode.BODY_UNPARSABLE, f"JSON is not well-formed: {exc}", None, "structure"
        ) from exc
    if not isinstance(resource, dict):
        raise InvalidRequest.single(IssueCode.BODY_UNPARSABLE, "a FHIR JSON body must be an object", None, "structure")
    check_limits(resource)  # before anything recursive walks it
    check_resource_types(resource)
    return resource


def serialize_resource(resource: Resource, fmt: FhirFormat, *, pretty: bool = False) -> bytes:
    """``pretty``: indented, for people (``_pretty=true``); the content is the same."""
    if fmt is FhirFormat.XML:
        return resource_to_xml(resource, pretty=pretty)
    return orjson.dumps(resource, option=orjson.OPT_INDENT_2 if pretty else 0)
