"""System-level endpoints: capabilities, and referral intake (transaction, message)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request

from gateway.api.bundles import transaction_as_preferred
from gateway.api.capability import capability_statement
from gateway.api.deps import (
    AnswerDep,
    BaseUrlDep,
    CallbacksDep,
    ClientDep,
    DatabaseDep,
    ForeignSystemsDep,
    ReferralBodyDep,
    RoutingDep,
    SettingsDep,
    TokenUrlDep,
    TypedValidationBodyDep,
    ValidationBodyDep,
    ViewerDep,
)
from gateway.api.responses import FhirResponse, preferred_return
from gateway.auth.clients import Role
from gateway.auth.scopes import Permission
from gateway.auth.smart import rest_security
from gateway.errors import InvalidRequest, IssueCode
from gateway.fhir.outcome import operation_outcome
from gateway.fhir.types import Resource
from gateway.intake.handlers import OPPOSITION, message_event, process_message, process_transaction
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
async def metadata(request: Request, answer: AnswerDep, base_url: BaseUrlDep, token_url: TokenUrlDep) -> FhirResponse:
    security = rest_security(token_url) if request.app.state.authority is not None else None
    return FhirResponse(capability_statement(request.app, base_url, security), answer)


#: What a transaction's URL may carry: how the answer is written. Anything else is a condition no transaction has.
_ANSWER_PARAMETERS = frozenset({"_format", "_pretty"})


def _no_condition(request: Request) -> None:
    """``POST /fhir?identifier=…``: a client that meant a conditional create, or a search, sent to the base. Its
    query would be dropped and the Bundle written all the same (DESIGN §16: a URL's parameters are never
    ignored): a 400 naming them, before anything is written."""
    names = sorted({name for name in request.query_params if name not in _ANSWER_PARAMETERS})
    if names:
        raise InvalidRequest.single(
            IssueCode.SEARCH_PARAMETER_INVALID,
            f"a transaction takes no search parameters in its URL ({', '.join(n[:64] for n in names[:10])}): a "
            "conditional create is an entry's request.ifNoneExist, or If-None-Exist on POST [base]/[type]",
            "http.url",
        )


@router.post("", summary="Referral as a transaction Bundle", openapi_extra=_FHIR_BODY)
async def transaction(
    request: Request,
    client: ClientDep,
    viewer: ViewerDep,
    bundle: ReferralBodyDep,
    database: DatabaseDep,
    routing: RoutingDep,
    answer: AnswerDep,
    base_url: BaseUrlDep,
    foreign_systems: ForeignSystemsDep,
    prefer: Annotated[str | None, Header(alias="Prefer")] = None,
) -> FhirResponse:
    _no_condition(request)
    outcome = await process_transaction(database, routing, bundle, base_url, client.sender_id, viewer, foreign_systems)
    return FhirResponse(await transaction_as_preferred(outcome, preferred_return(prefer), database, viewer), answer)


@router.post("/$process-message", summary="Referral as a message Bundle", openapi_extra=_FHIR_BODY)
async def process_message_operation(
    client: ClientDep,
    viewer: ViewerDep,
    bundle: ReferralBodyDep,
    database: DatabaseDep,
    routing: RoutingDep,
    settings: SettingsDep,
    answer: AnswerDep,
    base_url: BaseUrlDep,
    foreign_systems: ForeignSystemsDep,
    callbacks: CallbacksDep,
) -> FhirResponse:
    if message_event(bundle) == OPPOSITION:
        # It stores a Consent, as POST /fhir/Consent does: the same scope (the body's check was ServiceRequest.c).
        client.require("Consent", Permission.CREATE)
    platform = client.platform if client.role is Role.PLATFORM else None
    outcome = await process_message(
        database,
        routing,
        bundle,
        base_url,
        settings.hop_limit,
        client.sender_id,
        viewer,
        platform,
        foreign_systems,
        callbacks,
    )
    return FhirResponse(outcome, answer)


def _resource_to_validate(body: Resource, resource_type: str | None) -> tuple[Resource, str | None]:
    """$validate takes the resource itself, or a Parameters whose ``resource`` part holds it (and whose
    ``profile`` part, if any, names the profile)."""
    profile = None
    if body.get("resourceType") == "Parameters":
        parameters = body.get("parameter")
        parts = [p for p in (parameters if isinstance(parameters, list) else []) if isinstance(p, dict)]
        for part in parts:
            if part.get("name") == "profile":
                value = part.get("valueCanonical", part.get("valueUri"))
                profile = value if isinstance(value, str) else None
        resource = next(
            (p["resource"] for p in parts if p.get("name") == "resource" and isinstance(p.get("resource"), dict)),
            None,
        )
        if resource is None:
            raise InvalidRequest.single(
                IssueCode.ELEMENT_REQUIRED, "Parameters for $validate need a 'resource' part", "Parameters.parameter"
            )
        body = resource
    if resource_type is not None and body.get("resourceType") != resource_type:
        raise InvalidRequest.single(
            IssueCode.RESOURCE_TYPE_UNKNOWN, f"{resource_type}/$validate takes a {resource_type}", "resourceType"
        )
    return body, profile


def _validation_answer(
    body: Resource, resource_type: str | None, profile: str | None, answer: AnswerDep
) -> FhirResponse:
    resource, in_parameters = _resource_to_validate(body, resource_type)
    issues = validate(resource, profile or in_parameters) or [all_clear()]
    return FhirResponse(operation_outcome(issues), answer)


@router.post(
    "/$validate", summary="Validate a resource or referral Bundle (nothing is stored)", openapi_extra=_FHIR_BODY
)
async def validate_any(
    client: ClientDep, body: ValidationBodyDep, answer: AnswerDep, profile: str | None = None
) -> FhirResponse:
    # Validating is what a sender does before creating: the create scope of what would be created.
    validated = str(body.get("resourceType"))
    client.require("ServiceRequest" if validated in ("Bundle", "Parameters") else validated, Permission.CREATE)
    return _validation_answer(body, None, profile, answer)


@router.post("/{resource_type}/$validate", summary="Validate a resource of this type", openapi_extra=_FHIR_BODY)
async def validate_typed(
    resource_type: str, body: TypedValidationBodyDep, answer: AnswerDep, profile: str | None = None
) -> FhirResponse:
    """``profile``: the canonical URL of a profile we know (ours or an R4 base); any other is a 400."""
    return _validation_answer(body, resource_type, profile, answer)
