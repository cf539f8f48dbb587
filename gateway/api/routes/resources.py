"""Type- and instance-level reads: search, read, vread, history."""

from __future__ import annotations

import re
from datetime import UTC
from email.utils import format_datetime, parsedate_to_datetime
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
from gateway.fhir.history import parse_history
from gateway.fhir.media import ResponseFormat, bare_media_type, response_format
from gateway.fhir.search import parse_search
from gateway.store import queries
from gateway.store.repository import StoredResource
from gateway.validation.definitions import element_flags

router = APIRouter(prefix="/fhir", tags=["resources"])


def resource_headers(stored: StoredResource, base_url: str) -> dict[str, str]:
    return {
        "ETag": stored.etag,
        "Last-Modified": format_datetime(stored.last_updated, usegmt=True),
        "Content-Location": f"{base_url}/{stored.reference}/_history/{stored.version_id}",
    }


def _weak(tag: str) -> str:
    """An entity tag without its weakness: RFC 9110 §13.1.2 compares If-None-Match weakly."""
    tag = tag.strip()
    return tag[2:] if tag.startswith("W/") else tag


def not_modified(if_none_match: str | None, if_modified_since: str | None, stored: StoredResource) -> bool:
    """RFC 9110 §13.1.2 and §13.1.3: the client's copy is current — its entity tag (weak ``W/"n"``, strong
    ``"n"``, or ``*`` for any) or, without If-None-Match, a date not before the last change (to the second)."""
    if if_none_match is not None:
        tags = [tag.strip() for tag in if_none_match.split(",")]
        return "*" in tags or _weak(stored.etag) in {_weak(tag) for tag in tags}
    if if_modified_since is not None:
        try:
            since = parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError, IndexError):
            return False  # an invalid date is ignored (§13.1.3)
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        return stored.last_updated.replace(microsecond=0) <= since
    return False


def _resource_response(request: Request, stored: StoredResource, answer: ResponseFormat, base_url: str) -> Response:
    headers = resource_headers(stored, base_url)
    if not_modified(request.headers.get("if-none-match"), request.headers.get("if-modified-since"), stored):
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
    result = await queries.search(
        database, query, viewer, lambda included: client.scopes.allows(included, Permission.READ)
    )
    return FhirResponse(searchset(base_url, query, result, element_flags), answer)


def _lenient(request: Request) -> bool:
    """``Prefer: handling=lenient`` (R4 search.html#errors): unknown parameters ignored, and said so; strict (a 400)
    otherwise."""
    # Preferences are comma-separated (RFC 7240); some clients write them with ";" as well.
    parts = (part for header in request.headers.getlist("prefer") for part in re.split(r"[,;]", header))
    preferences = (part.strip().lower() for part in parts)
    return any("".join(preference.split()) in ("handling=lenient", 'handling="lenient"') for preference in preferences)


async def _history(
    request: Request,
    database: DatabaseDep,
    settings: SettingsDep,
    viewer: ViewerDep,
    answer: AnswerDep,
    base_url: BaseUrlDep,
    resource_type: str | None = None,
    resource_id: str | None = None,
    types: list[str] | None = None,
) -> FhirResponse:
    query = parse_history(list(request.query_params.multi_items()), settings.default_page_size, settings.max_page_size)
    total, versions = await queries.history(
        database, query, viewer, resource_type, resource_id, queries.SERVED_TYPES if types is None else types
    )
    path = "/".join(part for part in (resource_type, resource_id, "_history") if part)
    return FhirResponse(history_bundle(base_url, path, query, total, versions), answer)


@router.get("/_history", summary="History of every resource (what the caller may see)")
async def system_history(
    request: Request,
    client: ClientDep,
    viewer: ViewerDep,
    database: DatabaseDep,
    settings: SettingsDep,
    answer: AnswerDep,
    base_url: BaseUrlDep,
) -> FhirResponse:
    readable = [t for t in sorted(queries.SERVED_TYPES) if client.scopes.allows(t, Permission.READ)]
    if not readable:
        client.require("Task", Permission.READ)  # the 403 naming a scope
    return await _history(request, database, settings, viewer, answer, base_url, types=readable)


@router.get("/{resource_type}/_history", summary="History of a resource type")
async def type_history(
    resource_type: str,
    request: Request,
    client: ClientDep,
    viewer: ViewerDep,
    database: DatabaseDep,
    settings: SettingsDep,
    answer: AnswerDep,
    base_url: BaseUrlDep,
) -> FhirResponse:
    queries.require_served(resource_type)
    client.require(resource_type, Permission.READ)
    return await _history(request, database, settings, viewer, answer, base_url, resource_type)


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
    base_url: BaseUrlDep,
) -> Response:
    queries.require_served(resource_type)
    client.require(resource_type, Permission.READ)
    stored = await queries.read(database, resource_type, resource_id, viewer)
    return _resource_response(request, stored, answer, base_url)


@router.get("/{resource_type}/{resource_id}/_history", summary="History of one resource")
async def history(
    resource_type: str,
    resource_id: str,
    request: Request,
    client: ClientDep,
    viewer: ViewerDep,
    database: DatabaseDep,
    settings: SettingsDep,
    answer: AnswerDep,
    base_url: BaseUrlDep,
) -> FhirResponse:
    queries.require_served(resource_type)
    client.require(resource_type, Permission.READ)
    return await _history(request, database, settings, viewer, answer, base_url, resource_type, resource_id)


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
    base_url: BaseUrlDep,
) -> Response:
    queries.require_served(resource_type)
    client.require(resource_type, Permission.READ)
    stored = await queries.read_version(database, resource_type, resource_id, version_id, viewer)
    return _resource_response(request, stored, answer, base_url)
