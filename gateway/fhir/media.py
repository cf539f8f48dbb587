"""Content negotiation: which FHIR format a request body is in, and which one the answer should be in.

FHIR R4 §3.1.0.1.10 (http.html#mime-type): ``application/fhir+json`` and ``application/fhir+xml``, the plain
``application/json`` / ``application/xml`` accepted too, and the ``_format`` parameter overriding ``Accept``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gateway.errors import IssueCode, UnsupportedMediaType


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


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    format: FhirFormat
    media_type: str

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


def response_format(accept: str | None, format_parameter: str | None) -> ResponseFormat:
    """``_format`` first, then the ``Accept`` entry with the highest q that we serve; JSON otherwise."""
    if format_parameter:
        wanted = format_parameter.strip().lower()
        fmt = _FORMAT_PARAMETER.get(_bare(wanted))
        if fmt is not None:
            return _answer_in(_bare(wanted), fmt)
    if accept:
        candidates: list[tuple[float, int, str]] = []
        for position, part in enumerate(accept.split(",")):
            media_type, *params = (p.strip() for p in part.split(";"))
            quality = 1.0
            for param in params:
                name, _, value = param.partition("=")
                if name.strip().lower() == "q":
                    try:
                        quality = float(value)
                    except ValueError:
                        quality = 0.0
            if media_type.lower() in _MEDIA_TYPES and quality > 0:
                candidates.append((-quality, position, media_type.lower()))
        if candidates:
            media_type = min(candidates)[2]
            return _answer_in(media_type, _MEDIA_TYPES[media_type])
    return DEFAULT_RESPONSE
