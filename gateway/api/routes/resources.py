"""Type- and instance-level reads: search, read, vread, history."""

from __future__ import annotations

import re
from email.utils import format_datetime
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.api.bundles import history as history_bundle
from gateway.api.bundles import searchset
from gateway.api.deps import AnswerDep, BaseUrlDep, ClientDep, DatabaseDep, SettingsDep, ViewerDep
from gateway.api.responses import FhirResponse
from gateway.audit.context import current_audit
from gateway.auth.scopes import Permission
from gateway.errors import IssueCode, UnsupportedMediaType
from gateway.fhir.media import ResponseFormat, bare_media_type, response_format
from gateway.fhir.search import parse_search
from gateway.store import queries
from gateway.store.repository import StoredResource
from gateway.validation.definitions import element_flags

router = APIRouter(prefix="/fhir", tags=["resources"])


def resource_headers(stored: StoredResource) -> dict[str, str]:
    return {
        "ETag": stored.etag,
        "Last-Modified": format_datetime(stored.last_updated, usegmt=True),
        "Content-Location": f"{stored.reference}/_history/{stored.version_id}",
    }


def _resource_response(request: Request, stored: StoredResource, answer: ResponseFormat) -> Response:
    headers = resource_headers(stored)
    if_none_match = request.headers.get("if-none-match")
    if if_none_match and stored.etag in [tag.strip() for tag in if_none_match.split(",")]:
        return Response(status_code=304, headers=headers)
    return FhirResponse(stored.content, answer, headers=headers)


async def _search(
    resource_type: str,
    params: list[tuple[str, str]],
    client: ClientDep,
    viewer: ViewerDep,
    database: DatabaseDep,
    settings: SettingsDep,
    answer: AnswerDep,
    base_url: BaseUrlDep,
    lenient: bool = False,
) -> FhirResponse:
    queries.require_served(resource_type)
    client.require(resource_type, Permission.SEARCH)
    if (audit := current_audit()) is not None:
        audit.query = urlencode(params)
    query = parse_search(
        resource_type,
        params,
        default_count=settings.default_page_size,
        max_count=settings.max_page_size,
        lenient=lenient,
    )
    result = await queries.search(database, query, viewer)
    return FhirResponse(searchset(base_url, query, result, element_flags), answer)


def _lenient(request: Request) -> bool:
    """``Prefer: handling=lenient`` (R4 search.html#errors): unknown parameters ignored, and said so; strict (a 400)
    otherwise."""
    # Preferences are comma-separated (RFC 7240); some clients write them with ";" as well.
    parts = (part for header in request.headers.getlist("prefer") for part in re.split(r"[,;]", header))
    preferences = (part.strip().lower() for part in parts)
    return any("".join(preference.split()) in ("handling=lenient", 'handling="lenient"') for preference in preferences)


@router.get("/{resource_type}", summary="Search")
async def search(
    resource_type: str,
    request: Request,
    client: ClientDep,
    viewer: ViewerDep,
    database: DatabaseDep,
    settings: SettingsDep,
    answer: AnswerDep,
    base_url: BaseUrlDep,
) -> FhirResponse:
    params = list(request.query_params.multi_items())
    return await _search(resource_type, params, client, viewer, database, settings, answer, base_url, _lenient(request))


_FORM = "application/x-www-form-urlencoded"


@router.post("/{resource_type}/_search", summary="Search (parameters in a form body)")
async def search_post(
    resource_type: str,
    request: Request,
    client: ClientDep,
    viewer: ViewerDep,
    database: DatabaseDep,
    settings: SettingsDep,
    answer: AnswerDep,
    base_url: BaseUrlDep,
) -> FhirResponse:
    content_type = bare_media_type(request.headers.get("content-type"))
    if content_type != _FORM and (await request.body()).strip():
        # Parameters in any other body (JSON, a FHIR Parameters…) would be dropped, and the search run without
        # them: more than was asked, other patients' data included.
        raise UnsupportedMediaType.single(
            IssueCode.MEDIA_TYPE_UNSUPPORTED,
            f"POST {resource_type}/_search takes its parameters in the URL or as a form body "
            f"(Content-Type: {_FORM}), not {content_type or 'a body without Content-Type'}",
        )
    form = await request.form()
    params = [*request.query_params.multi_items(), *((k, str(v)) for k, v in form.multi_items())]
    if "_format" in form or "_pretty" in form:  # in the body they mean what they mean in the URL (http.html#search)
        given = dict(params)  # the last of each, as in the URL
        answer = response_format(request.headers.get("accept"), given.get("_format"), given.get("_pretty"))
    return await _search(resource_type, params, client, viewer, database, settings, answer, base_url, _lenient(request))


@router.get("/{resource_type}/{resource_id}", summary="Read")
async def read(
    resource_type: str,
    resource_id: str,
    request: Request,
    client: ClientDep,
    viewer: ViewerDep,
    database: DatabaseDep,
    answer: AnswerDep,
) -> Response:
    queries.require_served(resource_type)
    client.require(resource_type, Permission.READ)
    return _resource_response(request, await queries.read(database, resource_type, resource_id, viewer), answer)


@router.get("/{resource_type}/{resource_id}/_history", summary="History of one resource")
async def history(
    resource_type: str,
    resource_id: str,
    client: ClientDep,
    viewer: ViewerDep,
    database: DatabaseDep,
    answer: AnswerDep,
    base_url: BaseUrlDep,
) -> FhirResponse:
    queries.require_served(resource_type)
    client.require(resource_type, Permission.READ)
    versions = await queries.history(database, resource_type, resource_id, viewer)
    return FhirResponse(history_bundle(base_url, versions), answer)


@router.get("/{resource_type}/{resource_id}/_history/{version_id}", summary="Read one version")
async def vread(
    resource_type: str,
    resource_id: str,
    version_id: str,
    request: Request,
    client: ClientDep,
    viewer: ViewerDep,
    database: DatabaseDep,
    answer: AnswerDep,
) -> Response:
    queries.require_served(resource_type)
    client.require(resource_type, Permission.READ)
    stored = await queries.read_version(database, resource_type, resource_id, version_id, viewer)
    return _resource_response(request, stored, answer)
