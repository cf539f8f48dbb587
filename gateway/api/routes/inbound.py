"""Referrals in HL7 v2 and CDA (DESIGN §13): not FHIR interactions, so outside ``/fhir`` and the
CapabilityStatement. The same sender token and scope as ``POST /fhir`` (ServiceRequest create)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from gateway.api.deps import (
    AnswerDep,
    BaseUrlDep,
    ClientDep,
    DatabaseDep,
    ForeignSystemsDep,
    RoutingDep,
    SettingsDep,
    ViewerDep,
)
from gateway.api.responses import FhirResponse
from gateway.auth.scopes import Permission
from gateway.errors import IssueCode, UnsupportedMediaType
from gateway.fhir.media import bare_media_type
from gateway.inbound.service import IntakeContext, take_in_cda, take_in_hl7v2

router = APIRouter(tags=["inbound"])

HL7V2_MEDIA_TYPES = frozenset({"x-application/hl7-v2+er7", "application/hl7-v2"})
CDA_MEDIA_TYPES = frozenset({"application/hl7-cda+xml", "application/xml", "text/xml"})


def _require_media(request: Request, accepted: frozenset[str], preferred: str) -> None:
    if bare_media_type(request.headers.get("content-type")) not in accepted:
        raise UnsupportedMediaType.single(
            IssueCode.MEDIA_TYPE_UNSUPPORTED,
            f"Content-Type {request.headers.get('content-type') or '(none)'!r} is not supported here; send {preferred}",
        )


@router.post(
    "/hl7v2",
    summary="Referral as an HL7 v2.5 message (REF^I12, or ORU^R01 / MDM^T02 carrying a CDA); answers its ACK",
    openapi_extra={
        "requestBody": {"required": True, "content": {"x-application/hl7-v2+er7": {"schema": {"type": "string"}}}}
    },
)
async def hl7v2(
    request: Request,
    client: ClientDep,
    viewer: ViewerDep,
    database: DatabaseDep,
    routing: RoutingDep,
    settings: SettingsDep,
    base_url: BaseUrlDep,
    foreign_systems: ForeignSystemsDep,
) -> Response:
    client.require("ServiceRequest", Permission.CREATE)
    _require_media(request, HL7V2_MEDIA_TYPES, "x-application/hl7-v2+er7")
    context = IntakeContext(
        database,
        routing,
        base_url,
        client.sender_id,
        viewer,
        foreign_systems,
        settings.parse_time_budget,
        settings.hl7v2_processing_id,
    )
    answer = await take_in_hl7v2(await request.body(), context)
    return Response(answer.ack, answer.status, media_type=answer.content_type)


@router.post(
    "/cda",
    summary="Referral as a CDA R2 lettre de liaison; answers a transaction-response Bundle",
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/hl7-cda+xml": {"schema": {"type": "string"}}}}
    },
)
async def cda(
    request: Request,
    client: ClientDep,
    viewer: ViewerDep,
    database: DatabaseDep,
    routing: RoutingDep,
    settings: SettingsDep,
    answer: AnswerDep,
    base_url: BaseUrlDep,
    foreign_systems: ForeignSystemsDep,
) -> FhirResponse:
    client.require("ServiceRequest", Permission.CREATE)
    _require_media(request, CDA_MEDIA_TYPES, "application/hl7-cda+xml")
    context = IntakeContext(
        database, routing, base_url, client.sender_id, viewer, foreign_systems, settings.parse_time_budget
    )
    return FhirResponse(await take_in_cda(await request.body(), context), answer)
