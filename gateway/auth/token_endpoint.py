"""``POST /auth/token``: the client-credentials grant with a ``private_key_jwt`` assertion (SMART Backend
Services). Everything the route does besides reading the form and rendering the answer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import jwt
import structlog
from jwt import PyJWK

from gateway.auth.assertions import CLIENT_ASSERTION_TYPE, claimed_signer, verify_assertion
from gateway.auth.clients import ClientRegistry
from gateway.auth.jwks import KeysUnavailable, RemoteKeys
from gateway.auth.tokens import AccessTokens
from gateway.errors import IssueCode, TokenRequestRejected
from gateway.fhir.primitives import utc_now
from gateway.store.database import Database
from gateway.store.unit_of_work import DuplicateKey, UnitOfWork

log = structlog.get_logger("gateway.auth")


@dataclass(frozen=True, slots=True)
class Authority:
    """What authentication needs at run time, built once by ``create_app``."""

    registry: ClientRegistry
    tokens: AccessTokens
    token_url: str | None  # GATEWAY_TOKEN_URL; None: derived from the public base URL
    remote_keys: RemoteKeys = field(default_factory=RemoteKeys)  # of the clients registered by jwks_url

    def __post_init__(self) -> None:
        # The key sets kept follow the registrations: a client removed by a reload leaves none behind.
        self.remote_keys.retain(self.registry)
        self.registry.on_take(self.remote_keys.retain)


def _invalid_request(description: str) -> TokenRequestRejected:
    return TokenRequestRejected.because("invalid_request", IssueCode.TOKEN_REQUEST_INVALID, description)


async def _fetched_keys(authority: Authority, assertion: str) -> Mapping[str, PyJWK] | None:
    """The keys of the client the assertion names, when it is registered by ``jwks_url``; else None (its
    registration holds them, or it is no client: ``verify_assertion`` says so)."""
    claimed = claimed_signer(assertion)
    client = authority.registry.get(claimed[0]) if claimed is not None else None
    if claimed is None or client is None or client.jwks_url is None:
        return None
    try:
        return await authority.remote_keys.keys_of(client, claimed[1])
    except KeysUnavailable as exc:
        raise TokenRequestRejected.because(
            "invalid_client",
            IssueCode.CLIENT_AUTHENTICATION_FAILED,
            "the client's keys cannot be fetched from its registered jwks_url now; try again later",
        ) from exc


def claimed_client_id(form: Mapping[str, str]) -> str | None:
    """Who a token request says it comes from — its ``client_id``, else its assertion's ``iss`` — unverified: for
    the audit of a refusal only. At most 128 characters of it."""
    claimed = form.get("client_id")
    if not claimed and form.get("client_assertion"):
        try:
            claimed = jwt.decode(str(form["client_assertion"]), options={"verify_signature": False}).get("iss")
        except jwt.InvalidTokenError:
            claimed = None
    return claimed[:128] if isinstance(claimed, str) and claimed else None


async def issue_token(
    authority: Authority, database: Database, form: Mapping[str, str], token_url: str
) -> dict[str, str | int]:
    grant_type = form.get("grant_type")
    if not grant_type:
        raise _invalid_request("grant_type is required")
    if grant_type != "client_credentials":
        raise TokenRequestRejected.because(
            "unsupported_grant_type", IssueCode.TOKEN_REQUEST_INVALID, "only grant_type=client_credentials is supported"
        )
    if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
        raise TokenRequestRejected.because(
            "invalid_client",
            IssueCode.CLIENT_AUTHENTICATION_FAILED,
            f"clients authenticate with private_key_jwt: client_assertion_type={CLIENT_ASSERTION_TYPE}",
        )
    assertion = form.get("client_assertion")
    if not assertion:
        raise _invalid_request("client_assertion is required")
    requested = (form.get("scope") or "").split()
    if not requested:
        raise _invalid_request("scope is required (e.g. system/ServiceRequest.c)")
    try:
        verified = verify_assertion(
            assertion, authority.registry, token_url, keys=await _fetched_keys(authority, assertion)
        )
    except TokenRequestRejected as exc:
        log.warning("token_refused", reason=exc.issues[0].diagnostics)
        raise
    client = verified.client
    granted = client.scopes.grant(requested)
    if not granted:
        log.warning("token_refused", client_id=client.client_id, reason="no requested scope is registered")
        raise TokenRequestRejected.because(
            "invalid_scope",
            IssueCode.SCOPE_NOT_ALLOWED,
            f"none of the requested scopes is registered for this client; registered: {client.scopes}",
        )
    try:
        async with UnitOfWork(database) as uow:
            await uow.assertions.prune(utc_now())
            await uow.assertions.remember(client.client_id, verified.jti, verified.expires_at)
            await uow.commit()
    except DuplicateKey as exc:
        log.warning("token_refused", client_id=client.client_id, reason="assertion jti replayed")
        raise TokenRequestRejected.because(
            "invalid_client", IssueCode.CLIENT_AUTHENTICATION_FAILED, "client_assertion jti was already used"
        ) from exc
    log.info("token_issued", client_id=client.client_id, scope=" ".join(granted))
    return {
        "access_token": authority.tokens.issue(client, granted, key_id=verified.kid),
        "token_type": "bearer",
        "expires_in": authority.tokens.lifetime,
        "scope": " ".join(granted),
    }
