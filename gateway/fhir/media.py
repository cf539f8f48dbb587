"""Content negotiation: which FHIR format a request body is in, and which one the answer should be in.

FHIR R4 §3.1.0.1.10 (http.html#mime-type): ``application/fhir+json`` and ``application/fhir+xml``, the plain
``application/json`` / ``application/xml`` accepted too, and the ``_format`` parameter overriding ``Accept``. What
we cannot write — Turtle, HTML, another FHIR version (``fhirVersion``, http.html#version-parameter) — is a 406
(http.html: "the appropriate response when the Accept header requests a format that the server does not
support"), never JSON in its place; an ``Accept`` that also takes ``*/*`` or ``application/*`` (a browser's) or
any of ours is answered in it, unless it refuses that one (``q=0``, RFC 9110 §12.4.2). ``_pretty=true`` indents
the answer (JSON and XML alike).
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
#: Media ranges of an Accept header that any of ours satisfies, the more specific first (RFC 9110 §12.5.1).
_WILDCARDS = ("application/*", "*/*")
#: The media types an answer is sent as, in the order a wildcard takes them when the client prefers none: FHIR's own
#: first (R4 http.html#mime-type), the plain ones for a client that refused those.
_ANSWERS = (FHIR_JSON, FHIR_XML, "application/json", "application/xml")


_QUALITY = re.compile(r"\d+(\.\d*)?|\.\d+", re.ASCII)


def _quality(text: str) -> float | None:
    """A range's q, read leniently: RFC 9110 §12.4.2 writes 0 to 1 with at most three decimals, but clients also
    send ``1.0000`` or ``.5`` — read as the number they mean, held to 1. Not a plain number (-1, nan, inf, 1e-1,
    0_5, x): no weight, the range disregarded."""
    number = text.strip()
    if _QUALITY.fullmatch(number) is None:
        return None
    return min(float(number), 1.0)


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


def bare_media_type(content_type: str | None) -> str:
    """A Content-Type's (or media range's) type alone, lower case: ``application/fhir+json; charset=utf-8`` is
    ``application/fhir+json``; none is ``""``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def request_format(content_type: str | None) -> FhirFormat:
    """The format of a request body, from its Content-Type; anything else is a 415."""
    fmt = _MEDIA_TYPES.get(bare_media_type(content_type))
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


def _negotiate(accept: str) -> str | None:
    """The type of ``_ANSWERS`` an ``Accept`` header takes with the highest q, None when it takes none of them.

    RFC 9110 §12.5.1: a type's weight is that of the most specific range that names it — its own (or a spelling of
    ours that is answered in it: text/json, application/json+fhir …), else ``application/*``, else ``*/*`` — so
    ``application/fhir+json;q=0, */*`` refuses FHIR JSON however welcome the rest is (§12.4.2: q=0 is "not
    acceptable"), and is answered in FHIR XML. At equal q a type named before a wildcard, then the range listed
    first, then ``_ANSWERS`` order decide. A range whose q is no number, or that names another FHIR version, is
    disregarded (RFC 9110 lets a server disregard what it cannot honour): it neither asks for nor refuses a type."""
    ranges: dict[str, tuple[float, int]] = {}  # media range: its q and position, as first listed
    for position, part in enumerate(accept.split(",")):
        media_type, params = _parameters(part)
        quality = _quality(params.get("q", "1"))
        if media_type and quality is not None and _r4(params):
            ranges.setdefault(media_type, (quality, position))
    chosen: tuple[tuple[float, int, int, int], str] | None = None
    for preference, answer in enumerate(_ANSWERS):
        weight = _weight(answer, ranges)
        if weight is not None and weight[0] > 0:
            quality, rank, position = weight
            key = (-quality, rank, position, preference)
            if chosen is None or key < chosen[0]:
                chosen = key, answer
    return None if chosen is None else chosen[1]


def _weight(answer: str, ranges: dict[str, tuple[float, int]]) -> tuple[float, int, int] | None:
    """The q of ``answer`` from the most specific range naming it, with that rank (0 named, 1 ``application/*``,
    2 ``*/*``) and position; None when no range names it."""
    if answer in ranges:
        return ranges[answer][0], 0, ranges[answer][1]
    # Another spelling answered in it (text/json: FHIR JSON) asks for it; refused (q=0), it refuses only itself.
    taken = [
        ranges[m]
        for m, fmt in _MEDIA_TYPES.items()
        if m in ranges and ranges[m][0] > 0 and _answer_in(m, fmt).media_type == answer
    ]
    if taken:
        quality, position = max(taken, key=lambda r: (r[0], -r[1]))
        return quality, 0, position
    for rank, wildcard in enumerate(_WILDCARDS, start=1):
        if wildcard in ranges:
            return ranges[wildcard][0], rank, ranges[wildcard][1]
    return None


def _not_acceptable(asked: str, what: str) -> NotAcceptable:
    return NotAcceptable.single(
        IssueCode.FORMAT_NOT_ACCEPTABLE,
        f"{what} {asked!r} asks for a format this server cannot write; it answers in FHIR R4 (fhirVersion 4.0) "
        "JSON (application/fhir+json, application/json, _format=json) or XML (application/fhir+xml, "
        "application/xml, _format=xml)",
    )


def response_format(accept: str | None, format_parameter: str | None, pretty: str | None = None) -> ResponseFormat:
    """``_format`` first, then the type of ours ``Accept`` weighs highest (``_negotiate``); JSON when neither says.
    406 when what is asked is none of ours, or all of ours are refused (q=0). ``pretty``: ``_pretty``."""
    answer = DEFAULT_RESPONSE
    if format_parameter and format_parameter.strip():
        media_type, params = _parameters(format_parameter)
        fmt = _FORMAT_PARAMETER.get(media_type)
        if fmt is None or not _r4(params):
            raise _not_acceptable(format_parameter, "_format")
        answer = _answer_in(media_type, fmt)
    elif accept and accept.strip():
        negotiated = _negotiate(accept)
        if negotiated is None:
            raise _not_acceptable(accept, "Accept")
        answer = _answer_in(negotiated, _MEDIA_TYPES[negotiated])
    return replace(answer, pretty=True) if (pretty or "").strip().lower() == "true" else answer
