"""FHIR Subscriptions (DESIGN §12, backport IG): a client's own — create, read, search, update (status), delete,
``$status`` and ``$events``. The handlers are ``gateway.notify.service``'s."""

from __future__ import annotations

from email.utils import format_datetime
from typing import Annotated

from fastapi import APIRouter, Header, Request
from starlette.responses import Response

from gateway.api.deps import (
    AnswerDep,
    BaseUrlDep,
    CallbacksDep,
    ClientDep,
    DatabaseDep,
    PreferReturnDep,
    SubscriptionBodyDep,
    SubscriptionUpdateBodyDep,
    ViewerDep,
)
from gateway.api.responses import FhirResponse, written
from gateway.auth.clients import Role
from gateway.auth.scopes import Permission
from gateway.errors import InvalidRequest, IssueCode
from gateway.notify import service
from gateway.routing.callbacks import callback_endpoint
from gateway.store.subscriptions import SubscriptionRecord

router = APIRouter(prefix="/fhir/Subscription", tags=["subscriptions"])
TYPE = "Subscription"
#: What a search may carry besides ``status``: the answer's shape.
_ANSWER_PARAMETERS = frozenset({"_format", "_pretty", "_count"})


def _owner(client: ClientDep, viewer: ViewerDep) -> service.Owner:
    return service.Owner(client.client_id, viewer, everything=client.role is Role.OPERATOR)


def _headers(record: SubscriptionRecord, base_url: str) -> dict[str, str]:
    return {
        "ETag": record.etag,
        "Last-Modified": format_datetime(record.last_updated, usegmt=True),
        "Content-Location": f"{base_url}/Subscription/{record.id}/_history/{record.version_id}",
    }


def _number(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()):  # isdigit alone takes '²', which int() refuses
        raise InvalidRequest.single(IssueCode.SEARCH_PARAMETER_INVALID, f"{name} is a whole number", name)
    return int(raw)


@router.post("", summary="Subscribe to a topic (backport-subscription); a handshake is sent", status_code=201)
async def create_subscription(
    client: ClientDep,
    viewer: ViewerDep,
    subscription: SubscriptionBodyDep,
    database: DatabaseDep,
    callbacks: CallbacksDep,
    answer: AnswerDep,
    base_url: BaseUrlDep,
    preference: PreferReturnDep,
) -> Response:
    record = await service.create(
        database,
        _owner(client, viewer),
        subscription,
        lambda value, expression: callback_endpoint(value, callbacks, expression),
        base_url,
    )
    version = f"Subscription/{record.id}/_history/{record.version_id}"
    headers = _headers(record, base_url) | {"Location": f"{base_url}/{version}"}
    return written(record.resource(), answer, 201, headers, preference, version)


@router.get("", summary="Search the caller's Subscriptions (status)")
async def search_subscriptions(
    request: Request,
    client: ClientDep,
    viewer: ViewerDep,
    database: DatabaseDep,
    answer: AnswerDep,
    base_url: BaseUrlDep,
) -> Response:
    client.require(TYPE, Permission.SEARCH)
    for name in request.query_params:
        if name != "status" and name not in _ANSWER_PARAMETERS:
            raise InvalidRequest.single(
                IssueCode.SEARCH_PARAMETER_UNKNOWN, f"Subscription is searched by status only, not {name}", name
            )
    found = await service.search(database, _owner(client, viewer), request.query_params.get("status"))
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(found),
        "link": [{"relation": "self", "url": str(request.url)}],
        "entry": [
            {"fullUrl": f"{base_url}/Subscription/{r.id}", "resource": r.resource(), "search": {"mode": "match"}}
            for r in found
        ],
    }
    return FhirResponse(bundle, answer)


@router.get("/{resource_id}", summary="Read one of the caller's Subscriptions")
async def read_subscription(
    resource_id: str, client: ClientDep, viewer: ViewerDep, database: DatabaseDep, answer: AnswerDep,
    base_url: BaseUrlDep,
) -> Response:  # fmt: skip
    client.require(TYPE, Permission.READ)
    record = await service.read(database, _owner(client, viewer), resource_id)
    return FhirResponse(record.resource(), answer, headers=_headers(record, base_url))


@router.put("/{resource_id}", summary="Change a Subscription's status (off; requested for a new handshake)")
async def update_subscription(
    resource_id: str,
    client: ClientDep,
    viewer: ViewerDep,
    subscription: SubscriptionUpdateBodyDep,
    database: DatabaseDep,
    answer: AnswerDep,
    base_url: BaseUrlDep,
    preference: PreferReturnDep,
    if_match: Annotated[str | None, Header(alias="If-Match")] = None,
) -> Response:
    record = await service.update(database, _owner(client, viewer), resource_id, subscription, if_match, base_url)
    version = f"Subscription/{record.id}/_history/{record.version_id}"
    return written(record.resource(), answer, 200, _headers(record, base_url), preference, version)


@router.delete("/{resource_id}", summary="End a Subscription", status_code=204)
async def delete_subscription(
    resource_id: str, client: ClientDep, viewer: ViewerDep, database: DatabaseDep
) -> Response:
    client.require(TYPE, Permission.DELETE)
    await service.delete(database, _owner(client, viewer), resource_id)
    return Response(status_code=204)


@router.get("/{resource_id}/$status", summary="The Subscription's status (backport $status)")
async def subscription_status(
    resource_id: str, client: ClientDep, viewer: ViewerDep, database: DatabaseDep, answer: AnswerDep,
    base_url: BaseUrlDep,
) -> Response:  # fmt: skip
    client.require(TYPE, Permission.READ)
    return FhirResponse(await service.status(database, _owner(client, viewer), resource_id, base_url), answer)


@router.get("/{resource_id}/$events", summary="The Subscription's events kept (7 days), by number")
async def subscription_events(
    request: Request, resource_id: str, client: ClientDep, viewer: ViewerDep, database: DatabaseDep,
    answer: AnswerDep, base_url: BaseUrlDep,
) -> Response:  # fmt: skip
    client.require(TYPE, Permission.READ)
    bundle = await service.events(
        database,
        _owner(client, viewer),
        resource_id,
        base_url,
        _number(request, "eventsSinceNumber"),
        _number(request, "eventsUntilNumber"),
        request.query_params.get("content"),
    )
    return FhirResponse(bundle, answer)
