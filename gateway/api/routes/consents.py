"""``POST /fhir/Consent``: what a patient said, recorded on its own (an opposition revokes open referrals, a later
permit lifts the patient's oppositions); ``PUT /fhir/Consent/{id}``: its poster or an operator ends or corrects
it."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Header, Request
from starlette.responses import Response

from gateway.api.deps import (
    AnswerDep,
    BaseUrlDep,
    ClientDep,
    ConsentBodyDep,
    ConsentUpdateBodyDep,
    DatabaseDep,
    PreferReturnDep,
    RoutingDep,
    ViewerDep,
)
from gateway.api.responses import written
from gateway.api.routes.resources import resource_headers
from gateway.api.routes.tasks import IfMatch, expected_version
from gateway.errors import InvalidRequest, IssueCode
from gateway.intake.handlers import process_consent, process_consent_update

router = APIRouter(prefix="/fhir/Consent", tags=["workflow"])
#: What a URL's query may carry that shapes the answer, not the condition.
_ANSWER_PARAMETERS = frozenset({"_format", "_pretty"})


def create_condition(request: Request, if_none_exist: str | None) -> tuple[str | None, tuple[str, str]]:
    """A create's condition, and where it came from: ``If-None-Exist``, or search parameters in the URL
    (``POST /fhir/Consent?identifier=…``, what fhirpy's ``create(identifier=…)`` and ``get_or_create`` send) —
    the same conditional create, never ignored. Both, saying different things: 400."""
    params = [(k, v) for k, v in request.query_params.multi_items() if k not in _ANSWER_PARAMETERS]
    if not params:
        return if_none_exist, ("http.If-None-Exist", "If-None-Exist")
    if if_none_exist is not None and sorted(parse_qsl(if_none_exist.lstrip("?"), keep_blank_values=True)) != sorted(
        params
    ):
        raise InvalidRequest.single(
            IssueCode.SEARCH_PARAMETER_INVALID,
            "If-None-Exist and the URL's search parameters are two different conditions: send one",
            "http.If-None-Exist",
        )
    return urlencode(params), ("http.url", "the URL's search parameters")


@router.post(
    "",
    summary="Record a Consent (an opposition revokes the patient's open referrals); If-None-Exist: only if none "
    "matches",
    status_code=201,
)
async def create_consent(
    request: Request,
    client: ClientDep,
    viewer: ViewerDep,
    consent: ConsentBodyDep,
    database: DatabaseDep,
    routing: RoutingDep,
    answer: AnswerDep,
    base_url: BaseUrlDep,
    preference: PreferReturnDep,
    if_none_exist: Annotated[str | None, Header(alias="If-None-Exist")] = None,
) -> Response:
    condition, source = create_condition(request, if_none_exist)
    outcome = await process_consent(
        database, routing, consent, viewer, client.sender_id, condition, source, own_base=base_url
    )
    stored = outcome.consent
    version = f"{stored.reference}/_history/{stored.version_id}"
    if not outcome.created:  # a conditional create's match (R4 http.html#ccreate): 200, the post ignored
        return written(stored.content, answer, 200, resource_headers(stored, base_url), preference, version, "matched")
    headers = resource_headers(stored, base_url) | {"Location": f"{base_url}/{version}"}
    return written(stored.content, answer, 201, headers, preference, version, notes=outcome.notes)


@router.put(
    "/{consent_id}",
    summary="End an opposition (status inactive) or correct a Consent: its poster or an operator, with If-Match",
)
async def update_consent(
    consent_id: str,
    client: ClientDep,
    viewer: ViewerDep,
    consent: ConsentUpdateBodyDep,
    database: DatabaseDep,
    routing: RoutingDep,
    answer: AnswerDep,
    base_url: BaseUrlDep,
    preference: PreferReturnDep,
    if_match: IfMatch = None,
) -> Response:
    expected = expected_version(if_match, "an update of a Consent", "Consent")
    outcome = await process_consent_update(
        database, routing, consent_id, consent, expected, client.role, viewer, client.sender_id, base_url
    )
    stored = outcome.consent
    version = f"{stored.reference}/_history/{stored.version_id}"
    headers = resource_headers(stored, base_url)
    return written(stored.content, answer, 200, headers, preference, version, notes=outcome.notes)
