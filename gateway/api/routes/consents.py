"""``POST /fhir/Consent``: what a patient said, recorded on its own (an opposition revokes open referrals)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header
from starlette.responses import Response

from gateway.api.deps import (
    AnswerDep,
    BaseUrlDep,
    ClientDep,
    DatabaseDep,
    PreferReturnDep,
    ResourceBodyDep,
    RoutingDep,
    ViewerDep,
)
from gateway.api.responses import written
from gateway.api.routes.resources import resource_headers
from gateway.auth.scopes import Permission
from gateway.intake.handlers import process_consent

router = APIRouter(prefix="/fhir/Consent", tags=["workflow"])


@router.post(
    "",
    summary="Record a Consent (an opposition revokes the patient's open referrals); If-None-Exist: only if none "
    "matches",
    status_code=201,
)
async def create_consent(
    client: ClientDep,
    viewer: ViewerDep,
    consent: ResourceBodyDep,
    database: DatabaseDep,
    routing: RoutingDep,
    answer: AnswerDep,
    base_url: BaseUrlDep,
    preference: PreferReturnDep,
    if_none_exist: Annotated[str | None, Header(alias="If-None-Exist")] = None,
) -> Response:
    client.require("Consent", Permission.CREATE)
    stored, created = await process_consent(
        database, routing, consent, viewer, client.sender_id, if_none_exist, own_base=base_url
    )
    version = f"{stored.reference}/_history/{stored.version_id}"
    if not created:  # a conditional create's match (R4 http.html#ccreate): 200, the post ignored
        return written(stored.content, answer, 200, resource_headers(stored), preference, version, "matched")
    headers = resource_headers(stored) | {"Location": f"{base_url}/{version}"}
    return written(stored.content, answer, 201, headers, preference, version)
