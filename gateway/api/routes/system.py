"""System-level endpoints: capabilities, and referral intake (transaction, message)."""

from __future__ import annotations

from fastapi import APIRouter

from gateway.api.capability import capability_statement
from gateway.api.deps import AnswerDep, BaseUrlDep, DatabaseDep, ResourceBodyDep, RoutingDep, SettingsDep
from gateway.api.responses import FhirResponse
from gateway.errors import InvalidRequest, IssueCode
from gateway.fhir.outcome import operation_outcome
from gateway.fhir.types import Resource
from gateway.intake.handlers import process_message, process_transaction
from gateway.validation.validate import all_clear, validate

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


def _resource_to_validate(body: Resource, resource_type: str | None) -> Resource:
    """$validate takes the resource itself, or a Parameters whose ``resource`` part holds it."""
    if body.get("resourceType") == "Parameters":
        parameters = body.get("parameter")
        for parameter in parameters if isinstance(parameters, list) else []:
            if (
                isinstance(parameter, dict)
                and parameter.get("name") == "resource"
                and isinstance(parameter.get("resource"), dict)
            ):
                body = parameter["resource"]
                break
        else:
            raise InvalidRequest.single(
                IssueCode.ELEMENT_REQUIRED, "Parameters for $validate need a 'resource' part", "Parameters.parameter"
            )
    if resource_type is not None and body.get("resourceType") != resource_type:
        raise InvalidRequest.single(
            IssueCode.RESOURCE_TYPE_UNKNOWN, f"{resource_type}/$validate takes a {resource_type}", "resourceType"
        )
    return body


def _validation_answer(body: Resource, resource_type: str | None, answer: AnswerDep) -> FhirResponse:
    issues = validate(_resource_to_validate(body, resource_type)) or [all_clear()]
    return FhirResponse(operation_outcome(issues), answer)


@router.post(
    "/$validate", summary="Validate a resource or referral Bundle (nothing is stored)", openapi_extra=_FHIR_BODY
)
async def validate_any(body: ResourceBodyDep, answer: AnswerDep) -> FhirResponse:
    return _validation_answer(body, None, answer)


@router.post("/{resource_type}/$validate", summary="Validate a resource of this type", openapi_extra=_FHIR_BODY)
async def validate_typed(resource_type: str, body: ResourceBodyDep, answer: AnswerDep) -> FhirResponse:
    return _validation_answer(body, resource_type, answer)
