"""Responses carrying a FHIR resource, rendered in the negotiated format (they differ only in rendering), and the
answer of a create or update as the client's ``Prefer: return=`` asks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from starlette.responses import Response

from gateway.fhir.codec import serialize_resource
from gateway.fhir.media import ResponseFormat
from gateway.fhir.types import Resource


class FhirResponse(Response):
    def __init__(
        self,
        resource: Resource,
        answer: ResponseFormat,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            serialize_resource(resource, answer.format, pretty=answer.pretty),
            status_code,
            dict(headers or {}),
            answer.content_type,
        )


#: FHIR R4 http §3.1.0.1.6: what a create or update answers with — the resource (the default), nothing, or an
#: OperationOutcome.
RETURN_PREFERENCES = ("representation", "minimal", "OperationOutcome")


def preferred_return(prefer: str | None) -> str | None:
    """The ``return`` preference a ``Prefer`` header states, if it states one of FHIR's."""
    for token in (prefer or "").replace(";", ",").split(","):
        name, _, value = token.strip().partition("=")
        if name.strip().lower() == "return" and value.strip().strip('"') in RETURN_PREFERENCES:
            return value.strip().strip('"')
    return None


def prefer_return(prefer: str | None) -> str:
    """The ``return`` preference of a ``Prefer`` header (``representation`` when absent or not one of FHIR's)."""
    return preferred_return(prefer) or "representation"


def written(
    resource: Resource,
    answer: ResponseFormat,
    status_code: int,
    headers: Mapping[str, str],
    preference: str,
    reference: str,
    action: str = "written",
    notes: Sequence[str] = (),
) -> Response:
    """A create's or update's answer: ``reference`` (``Type/id/_history/n``) names what was written — or, as
    ``action`` says, what a conditional create matched instead; ``notes``: what the OperationOutcome tells
    besides (informational issues, after the first)."""
    if preference == "minimal":
        return Response(status_code=status_code, headers=dict(headers))
    if preference == "OperationOutcome":
        outcome = {
            "resourceType": "OperationOutcome",
            "issue": [
                {"severity": "information", "code": "informational", "diagnostics": text}
                for text in (f"{reference} {action}", *notes)
            ],
        }
        return FhirResponse(outcome, answer, status_code, headers)
    return FhirResponse(resource, answer, status_code, headers)
