"""Authentication endpoints: the token endpoint, the SMART configuration document and the gateway's public keys
(all open)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from gateway.api.deps import AuthorityDep, DatabaseDep, RoutingDep, TokenUrlDep
from gateway.audit.events import token_refused_event
from gateway.auth.outbound import jwks
from gateway.auth.smart import smart_configuration
from gateway.auth.token_endpoint import claimed_client_id, issue_token
from gateway.errors import TokenRequestRejected
from gateway.fhir.primitives import utc_now

router = APIRouter(tags=["auth"])
#: RFC 6749 §5.1: token answers are never cached.
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@router.post("/auth/token", summary="Access token (client_credentials, private_key_jwt)")
async def token(
    request: Request, authority: AuthorityDep, database: DatabaseDep, token_url: TokenUrlDep
) -> JSONResponse:
    form = await request.form()
    fields = {key: value for key, value in form.items() if isinstance(value, str)}
    try:
        return JSONResponse(await issue_token(authority, database, fields, token_url), headers=_NO_STORE)
    except TokenRequestRejected as exc:
        # Audited: who it claimed to be, from where, why (the code, not the words, which may quote the request).
        reason = f"{exc.oauth_error}: {exc.issues[0].code}"
        address = request.client.host if request.client else None
        request.app.state.audit.add(token_refused_event(claimed_client_id(fields), address, reason, utc_now()))
        raise


@router.get("/.well-known/smart-configuration", summary="SMART configuration")
@router.get("/fhir/.well-known/smart-configuration", summary="SMART configuration (under the FHIR base)")
async def configuration(request: Request, token_url: TokenUrlDep) -> JSONResponse:
    authority = getattr(request.app.state, "authority", None)
    scopes = authority.registry.scopes_supported() if authority is not None else []
    return JSONResponse(smart_configuration(token_url, scopes))


@router.get("/.well-known/jwks.json", summary="The public keys the gateway signs its client assertions with")
async def public_keys(request: Request, routing: RoutingDep) -> JSONResponse:
    """For the platforms and peers the gateway authenticates to (routing destinations' and client registrations'
    ``smart-backend`` blocks): they register the gateway by this URL (``jwks_url``). Public parts only."""
    authority = getattr(request.app.state, "authority", None)
    auths = [*routing.outbound_auths(), *(authority.registry.outbound_auths() if authority is not None else [])]
    return JSONResponse(jwks(auth.key for auth in auths), headers={"Cache-Control": "max-age=300"})
