"""Responses carrying a FHIR resource, rendered in the negotiated format (they differ only in rendering)."""

from __future__ import annotations

from collections.abc import Mapping

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
            serialize_resource(resource, answer.format), status_code, dict(headers or {}), answer.content_type
        )
