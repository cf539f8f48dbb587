"""FastAPI dependencies, as ``Annotated`` aliases that routes declare.

They are ``async def`` although none of them waits on anything: FastAPI runs a plain ``def`` dependency in its
thread pool, a thread hop per dependency per request (~0.1 ms CPU each; an intake declares seven) for a
dictionary look-up or a cached token check — work that holds the GIL anyway."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from gateway.api.audit import interaction_of
from gateway.api.base_url import request_base_url, service_root
from gateway.api.responses import prefer_return
from gateway.audit.context import current_audit
from gateway.auth.clients import Role
from gateway.auth.scopes import Permission
from gateway.auth.token_endpoint import Authority
from gateway.auth.tokens import DEVELOPMENT_CLIENT, ApiClient, bearer_token
from gateway.config import Settings
from gateway.errors import IssueCode, Overloaded, TokenRequestRejected, Unauthenticated
from gateway.fhir.codec import parse_resource
from gateway.fhir.media import FhirFormat, ResponseFormat, request_format, response_format
from gateway.fhir.types import Resource
from gateway.referral.identity import professional_identifiers
from gateway.routing.config import RoutingTable
from gateway.store.database import Database
from gateway.store.visibility import EVERYTHING, Viewer
from gateway.workflow.provenance import Actor, Identifier


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


async def _routing(request: Request) -> RoutingTable:
    routing: RoutingTable = request.app.state.routing
    return routing


async def _answer(request: Request) -> ResponseFormat:
    return response_format(
        request.headers.get("accept"), request.query_params.get("_format"), request.query_params.get("_pretty")
    )


async def _base_url(request: Request) -> str:
    return request_base_url(request)


async def _authority(request: Request) -> Authority:
    authority: Authority | None = request.app.state.authority
    if authority is None:
        raise TokenRequestRejected.because(
            "invalid_request", IssueCode.TOKEN_REQUEST_INVALID, "authentication is off on this gateway (GATEWAY_AUTH)"
        )
    return authority


async def _token_url(request: Request, settings: Annotated[Settings, Depends(_settings)]) -> str:
    """The token endpoint's public URL: what client assertions must name as their ``aud``."""
    return settings.token_url or service_root(request) + "/auth/token"


async def _client(request: Request) -> ApiClient:
    """Who calls: from the Bearer access token (401 without a valid one); anyone, as an operator, when
    authentication is off. Named in the request's audit context, with the interaction, before any change."""
    authority: Authority | None = request.app.state.authority
    audit = current_audit()
    if audit is not None:
        audit.subtype = interaction_of(request.method, getattr(request.scope.get("route"), "path", None)) or ""
    client = (
        DEVELOPMENT_CLIENT
        if authority is None
        else authority.tokens.verify(bearer_token(request.headers.get("authorization")))
    )
    if authority is not None:
        # A token outlives nothing it was issued for: a client removed from the clients file (or registered
        # otherwise since: another role, platform or professionals) is cut off at once, not when its token expires.
        registered = authority.registry.get(client.client_id)
        if registered is None or (registered.role, registered.platform, registered.rpps) != (
            client.role,
            client.platform,
            client.rpps,
        ):
            raise Unauthenticated.single(
                IssueCode.ACCESS_TOKEN_INVALID,
                "the access token's client is no longer registered as it was; get a new one from /auth/token",
            )
        if not registered.still_holds(client.key_id, time.time()):
            raise Unauthenticated.single(
                IssueCode.ACCESS_TOKEN_INVALID,
                "the key this access token was got with is no longer registered; sign with the client's current key",
            )
    if audit is not None:
        audit.client_id = client.client_id
    return client


async def _viewer(
    client: Annotated[ApiClient, Depends(_client)], routing: Annotated[RoutingTable, Depends(_routing)]
) -> Viewer:
    """What the caller may see: everything (operators); what it sent (any other client); and for a platform's
    client, what was routed to its platform too — a peer gateway reads back the referrals it forwarded, a platform
    the Consent it posted; for a practitioner's, the Tasks of its professionals and their referrals."""
    if client.role is Role.OPERATOR:
        return EVERYTHING
    if client.role is Role.PRACTITIONER:
        return Viewer(sender=client.client_id, professionals=professional_identifiers(client.rpps))
    if client.role is Role.PLATFORM:
        platform = routing.platforms.get(client.platform or "")
        if platform is not None:  # else the routing file no longer names it: nothing is routed there
            organization = (platform.organization_system, platform.organization_value)
            return Viewer(sender=client.client_id, platform_organization=organization)
    return Viewer(sender=client.client_id)


def _actor(
    client: Annotated[ApiClient, Depends(_client)], routing: Annotated[RoutingTable, Depends(_routing)]
) -> Actor | None:
    """Who a decision's Provenance names as acting (None when authentication is off: what X-Provenance says)."""
    if not client.authenticated:
        return None
    if client.role is Role.PLATFORM:
        platform = routing.platforms.get(client.platform or "")
        if platform is not None:  # else nothing is routed to it: it acts only as the sender of what it posted
            return Actor(client.client_id, Identifier(platform.organization_system, platform.organization_value))
    if client.role is Role.PRACTITIONER:
        return Actor(client.client_id, professionals=professional_identifiers(client.rpps))
    return Actor(client.client_id, trusted=client.role is Role.OPERATOR)


async def _foreign_systems(request: Request, client: Annotated[ApiClient, Depends(_client)]) -> frozenset[str]:
    """The identifier systems other clients registered as their own (none with authentication off). A platform's
    client is not held to them: a peer gateway forwards referrals under their senders' identifiers."""
    authority: Authority | None = request.app.state.authority
    if authority is None or client.role is Role.PLATFORM:
        return frozenset()
    return authority.registry.identifier_systems_of_others(client.client_id)


async def _callbacks(request: Request, client: Annotated[ApiClient, Depends(_client)]) -> tuple[str, ...] | None:
    """Where the caller may be called back: its registered endpoints (none if it registered none); None when
    authentication is off — any http(s) URL (``gateway.routing.callbacks``)."""
    authority: Authority | None = request.app.state.authority
    if authority is None or not client.authenticated:
        return None
    registered = authority.registry.get(client.client_id)
    return registered.endpoints if registered is not None else ()


async def _prefer_return(request: Request) -> str:
    return prefer_return(request.headers.get("prefer"))


#: ``_body``'s type when the route learns it from the body ($validate): the permission on some type is checked.
ANY_TYPE = "*"


def _body(resource_type: str | None, permission: Permission) -> Callable[..., Awaitable[Resource]]:
    """The request body as a resource, once the caller is known to hold ``permission`` on ``resource_type`` (the
    ``{resource_type}`` of the path when None): a token without the scope gets its 403 before any byte is parsed.
    XML is read in a thread, within ``GATEWAY_PARSE_TIME_BUDGET`` (503 after): fhir.resources' reading of a large
    document is seconds of CPU that must not stall the event loop (JSON is read by orjson, in microseconds)."""

    async def body(
        request: Request,
        client: Annotated[ApiClient, Depends(_client)],
        settings: Annotated[Settings, Depends(_settings)],
    ) -> Resource:
        if resource_type is None:  # {type}/$validate: what a sender checks before creating it (a Bundle: a referral)
            typed = str(request.path_params.get("resource_type"))
            client.require("ServiceRequest" if typed == "Bundle" else typed, permission)
        elif resource_type != ANY_TYPE:
            client.require(resource_type, permission)
        elif not any(permission in scope.permissions for scope in client.scopes.scopes):
            client.require("ServiceRequest", permission)  # the 403 a body for any type would get
        fmt = request_format(request.headers.get("content-type"))
        content = await request.body()
        if fmt is not FhirFormat.XML:
            return parse_resource(content, fmt)
        try:
            return await asyncio.wait_for(asyncio.to_thread(parse_resource, content, fmt), settings.parse_time_budget)
        except TimeoutError as exc:
            raise Overloaded.single(
                IssueCode.BODY_TIME_BUDGET_EXCEEDED,
                f"the XML body was not read within {settings.parse_time_budget:g} s; nothing was stored",
            ) from exc

    return body


SettingsDep = Annotated[Settings, Depends(_settings)]
DatabaseDep = Annotated[Database, Depends(_database)]
RoutingDep = Annotated[RoutingTable, Depends(_routing)]
AnswerDep = Annotated[ResponseFormat, Depends(_answer)]
BaseUrlDep = Annotated[str, Depends(_base_url)]
#: Bodies by what they create or change: the scope is checked before the body is read.
ReferralBodyDep = Annotated[Resource, Depends(_body("ServiceRequest", Permission.CREATE))]
ConsentBodyDep = Annotated[Resource, Depends(_body("Consent", Permission.CREATE))]
ConsentUpdateBodyDep = Annotated[Resource, Depends(_body("Consent", Permission.UPDATE))]
TaskBodyDep = Annotated[Resource, Depends(_body("Task", Permission.UPDATE))]
SubscriptionBodyDep = Annotated[Resource, Depends(_body("Subscription", Permission.CREATE))]
SubscriptionUpdateBodyDep = Annotated[Resource, Depends(_body("Subscription", Permission.UPDATE))]
TypedValidationBodyDep = Annotated[Resource, Depends(_body(None, Permission.CREATE))]
ValidationBodyDep = Annotated[Resource, Depends(_body(ANY_TYPE, Permission.CREATE))]
AuthorityDep = Annotated[Authority, Depends(_authority)]
TokenUrlDep = Annotated[str, Depends(_token_url)]
ClientDep = Annotated[ApiClient, Depends(_client)]
ViewerDep = Annotated[Viewer, Depends(_viewer)]
ActorDep = Annotated[Actor | None, Depends(_actor)]
PreferReturnDep = Annotated[str, Depends(_prefer_return)]
ForeignSystemsDep = Annotated[frozenset[str], Depends(_foreign_systems)]
CallbacksDep = Annotated[tuple[str, ...] | None, Depends(_callbacks)]
