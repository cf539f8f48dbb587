"""Checking a client's assertion (``private_key_jwt``, RFC 7523 §3; SMART Backend Services).

``iss`` = ``sub`` = a registered client id; ``aud`` = our token endpoint's URL; ``exp`` not passed and at most
five minutes ahead; a ``jti`` (whose single use the caller then records, ``gateway.store.assertions``); a
signature by the key the header's ``kid`` names among the client's registered keys, with RS384 or ES384 only —
the algorithm allow-list is checked before anything else, so ``none`` and HS* (which would turn a public key into
an HMAC secret) never reach a verifier.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import jwt
from jwt import PyJWK

from gateway.auth.clients import ASSERTION_ALGORITHMS, ClientRegistry, RegisteredClient
from gateway.errors import IssueCode, TokenRequestRejected

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_LIFETIME_SECONDS = 300
#: Tolerated difference between the client's clock and ours.
LEEWAY_SECONDS = 10


@dataclass(frozen=True, slots=True)
class VerifiedAssertion:
    client: RegisteredClient
    jti: str
    expires_at: datetime
    kid: str  # the key it was signed with: the access token is bound to it (``AccessTokens.issue``)


def _refused(description: str) -> TokenRequestRejected:
    return TokenRequestRejected.because("invalid_client", IssueCode.CLIENT_AUTHENTICATION_FAILED, description)


def claimed_signer(assertion: str) -> tuple[str, str] | None:
    """The (client id, kid) an assertion claims to be signed by, unverified — to fetch the keys of a client
    registered by ``jwks_url`` before ``verify_assertion``; None when it does not say."""
    try:
        client_id = jwt.decode(assertion, options={"verify_signature": False}).get("iss")
        kid = jwt.get_unverified_header(assertion).get("kid")
    except jwt.InvalidTokenError:
        return None
    return (client_id, kid) if isinstance(client_id, str) and isinstance(kid, str) else None


def verify_assertion(
    assertion: str,
    registry: ClientRegistry,
    token_url: str,
    now: float | None = None,
    keys: Mapping[str, PyJWK] | None = None,
) -> VerifiedAssertion:
    """``keys``: the client's keys when they are not in its registration (fetched from its ``jwks_url``)."""
    now = time.time() if now is None else now
    try:
        header = jwt.get_unverified_header(assertion)
        unverified = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.InvalidTokenError as exc:
        raise _refused("client_assertion is not a JWT") from exc
    algorithm = header.get("alg")
    if algorithm not in ASSERTION_ALGORITHMS:
        raise _refused(f"client_assertion alg must be one of {', '.join(ASSERTION_ALGORITHMS)}")
    client_id = unverified.get("iss")
    client = registry.get(client_id) if isinstance(client_id, str) else None
    if client is None:
        raise _refused("client_assertion iss is not a registered client")
    kid = header.get("kid")
    key = (client.keys if keys is None else keys).get(kid) if isinstance(kid, str) else None
    if key is None:
        raise _refused("client_assertion kid names none of the client's registered keys")
    if client.key_expired(str(kid), now):  # a key rotated out, past its grace period
        raise _refused(f"key {kid!r} of this client has expired (rotated out): sign with its new key")
    if key.algorithm_name != algorithm:
        raise _refused(f"key {kid!r} signs with {key.algorithm_name}, not {algorithm}")
    try:
        claims = jwt.decode(
            assertion,
            key.key,
            algorithms=[algorithm],
            audience=token_url,
            issuer=client.client_id,
            leeway=LEEWAY_SECONDS,
            options={"require": ["iss", "sub", "aud", "exp", "jti"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise _refused("client_assertion has expired") from exc
    except jwt.InvalidAudienceError as exc:
        raise _refused(f"client_assertion aud must be the token endpoint, {token_url}") from exc
    except jwt.InvalidSignatureError as exc:
        raise _refused("client_assertion signature does not verify with the registered key") from exc
    except jwt.InvalidTokenError as exc:
        raise _refused(f"client_assertion refused: {exc}") from exc
    if claims["sub"] != client.client_id:
        raise _refused("client_assertion sub must equal iss (the client id)")
    if not isinstance(claims["exp"], int | float) or claims["exp"] > now + MAX_LIFETIME_SECONDS + LEEWAY_SECONDS:
        raise _refused(f"client_assertion exp must be at most {MAX_LIFETIME_SECONDS} seconds ahead")
    jti = claims["jti"]
    if not isinstance(jti, str) or not jti or len(jti) > 255:
        raise _refused("client_assertion jti must be a string of 1 to 255 characters")
    return VerifiedAssertion(client, jti, datetime.fromtimestamp(claims["exp"], UTC), str(kid))
