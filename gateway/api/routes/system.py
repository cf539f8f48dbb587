"""System-level endpoints: capabilities, and referral intake (transaction, message)."""

from __future__ import annotations

from fastapi import APIRouter

from gateway.api.capability import capability_statement
from gateway.api.deps import AnswerDep, BaseUrlDep, DatabaseDep, ResourceBodyDep, RoutingDep, SettingsDep
from gateway.api.responses import FhirResponse
from gateway.intake.handlers import process_message, process_transaction

router = APIRouter(prefix="/fhir", tags=["system"])

_FHIR_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/fhir+json": {"schema": {"type": "object"}},
            "application/fhir+xml": {"schema": {"type": "string"}},
        },
    }
}


@router.get("/metadata", summary="CapabilityStatement")
async def metadata(answer: AnswerDep, base_url: BaseUrlDep) -> FhirResponse:
    return FhirResponse(capability_statement(base_url), answer)


@router.post("", summary="Referral as a transaction Bundle", openapi_extra=_FHIR_BODY)
async def transaction(
    bundle: ResourceBodyDep, database: DatabaseDep, routing: RoutingDep, answer: AnswerDep, base_url: BaseUrlDep
) -> FhirResponse:
    return FhirResponse(await process_transaction(database, routing, bundle, base_url), answer)


@router.post("/$process-message", summary="Referral as a message Bundle", openapi_extra=_FHIR_BODY)
async def process_message_operation(
    bundle: ResourceBodyDep,
    database: DatabaseDep,
    routing: RoutingDep,
    settings: SettingsDep,
    answer: AnswerDep,
    base_url: BaseUrlDep,
) -> FhirResponse:
    return FhirResponse(await process_message(database, routing, bundle, base_url, settings.hop_limit), answer)
