"""Content negotiation: which FHIR format a request body is in, and which one the answer should be in.

FHIR R4 §3.1.0.1.10 (http.html#mime-type): ``application/fhir+json`` and ``application/fhir+xml``, the plain
``application/json`` / ``application/xml`` accepted too, and the ``_format`` parameter overriding ``Accept``. What
we cannot write — Turtle, HTML, another FHIR version (``fhirVersion``, http.html#version-parameter) — is a 406
(http.html: "the appropriate response when the Accept header requests a format that the server does not
support"), never JSON in its place; an ``Accept`` that also takes ``*/*`` or ``application/*`` (a browser's) or
any of ours is answered in it. ``_pretty=true`` indents the answer (JSON and XML alike).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import StrEnum

from gateway.errors import IssueCode, NotAcceptable, UnsupportedMediaType


class FhirFormat(StrEnum):
    JSON = "json"
    XML = "xml"


FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"

_MEDIA_TYPES: dict[str, FhirFormat] = {
    FHIR_JSON: FhirFormat.JSON,
    "application/json": FhirFormat.JSON,
    "application/json+fhir": FhirFormat.JSON,  # DSTU2 spelling, still sent by older software
    "text/json": FhirFormat.JSON,
    FHIR_XML: FhirFormat.XML,
    "application/xml": FhirFormat.XML,
    "application/xml+fhir": FhirFormat.XML,
    "text/xml": FhirFormat.XML,
}
_FORMAT_PARAMETER: dict[str, FhirFormat] = {"json": FhirFormat.JSON, "xml": FhirFormat.XML, **_MEDIA_TYPES}
#: Media ranges of an Accept header that any of ours satisfies: answered in FHIR JSON.
_WILDCARDS = ("*/*", "application/*")
#: The ``fhirVersion`` MIME-type parameter values naming R4 (http.html#version-parameter: "4.0"; 4.0.1 read alike).
_R4 = re.compile(r"^4\.0(\.\d+)?$")


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    format: FhirFormat
    media_type: str
    pretty: bool = False

    @property
    def content_type(self) -> str:
        return f"{self.media_type}; charset=utf-8"


DEFAULT_RESPONSE = ResponseFormat(FhirFormat.JSON, FHIR_JSON)


def _bare(media_type: str) -> str:
    return media_type.split(";", 1)[0].strip().lower()


def request_format(content_type: str | None) -> FhirFormat:
    """The format of a request body, from its Content-Type; anything else is a 415."""
    fmt = _MEDIA_TYPES.get(_bare(content_type or ""))
    if fmt is None:
        raise UnsupportedMediaType.single(
            IssueCode.MEDIA_TYPE_UNSUPPORTED,
            f"Content-Type {content_type or '(none)'!r} is not supported; send application/fhir+json or "
            "application/fhir+xml",
        )
    return fmt


def _answer_in(media_type: str, fmt: FhirFormat) -> ResponseFormat:
    # Echo the plain JSON/XML media types a client asked for; otherwise answer with the FHIR ones.
    if media_type in ("application/json", "application/xml"):
        return ResponseFormat(fmt, media_type)
    return ResponseFormat(fmt, FHIR_JSON if fmt is FhirFormat.JSON else FHIR_XML)


def _parameters(media_range: str) -> tuple[str, dict[str, str]]:
    """A media range without its parameters (lower case), and its parameters by lower-case name."""
    media_type, *params = (p.strip() for p in media_range.split(";"))
    named = {}
    for param in params:
        name, _, value = param.partition("=")
        named[name.strip().lower()] = value.strip().strip('"')
    return media_type.lower(), named


def _r4(params: dict[str, str]) -> bool:
    return "fhirversion" not in params or bool(_R4.match(params["fhirversion"]))


def _not_acceptable(asked: str, what: str) -> NotAcceptable:
    return NotAcceptable.single(
        IssueCode.FORMAT_NOT_ACCEPTABLE,
        f"{what} {asked!r} asks for a format this server cannot write; it answers in FHIR R4 (fhirVersion 4.0) "
        "JSON (application/fhir+json, application/json, _format=json) or XML (application/fhir+xml, "
        "application/xml, _format=xml)",
    )


def response_format(accept: str | None, format_parameter: str | None, pretty: str | None = None) -> ResponseFormat:
    """``_format`` first, then the ``Accept`` entry with the highest q that we serve (a type of ours before a
    wildcard); JSON when neither says. 406 when what is asked is none of ours. ``pretty``: ``_pretty``."""
    answer = DEFAULT_RESPONSE
    if format_parameter and format_parameter.strip():
        media_type, params = _parameters(format_parameter)
        fmt = _FORMAT_PARAMETER.get(media_type)
        if fmt is None or not _r4(params):
            raise _not_acceptable(format_parameter, "_format")
        answer = _answer_in(media_type, fmt)
    elif accept and accept.strip():
        candidates: list[tuple[float, int, int, str]] = []
        for position, part in enumerate(accept.split(",")):
            if not part.strip():
                continue
            media_type, params = _parameters(part)
            try:
                quality = float(params.get("q", "1"))
            except ValueError:
                quality = 0.0
            if quality <= 0 or not _r4(params):
                continue
            if media_type in _MEDIA_TYPES:
                candidates.append((-quality, 0, position, media_type))
            elif media_type in _WILDCARDS:
                candidates.append((-quality, 1, position, FHIR_JSON))
        if not candidates:
            raise _not_acceptable(accept, "Accept")
        media_type = min(candidates)[3]
        answer = _answer_in(media_type, _MEDIA_TYPES[media_type])
    return replace(answer, pretty=True) if (pretty or "").strip().lower() == "true" else answer
