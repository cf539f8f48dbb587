"""The gateway's access tokens, and the API client a verified token stands for.

An access token is a JWT the gateway signs with HS256 under ``GATEWAY_AUTH_SECRET``. The gateway is both the
only issuer and the only audience, so a shared symmetric key is enough, and it is what makes tokens cheap: every
``gateway serve`` process sharing the secret verifies any token locally — one HMAC, tens of microseconds, no
database round trip, no session table — and the token carries what authorisation needs (client, role, platform or
RPPS numbers, scopes). The cost is that a token cannot be revoked before it expires; lifetimes are therefore short
(``GATEWAY_ACCESS_TOKEN_LIFETIME``, 5 minutes by default), and removing a client from the clients file stops it
getting new ones. Clients' own assertions are asymmetric (RS384 / ES384, ``gateway.auth.assertions``): only
they hold their private keys.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import jwt

from gateway.auth.clients import RegisteredClient, Role
from gateway.auth.scopes import Permission, ScopeSet
from gateway.errors import Forbidden, IssueCode, Unauthenticated

ISSUER = "urn:dac-gateway:auth"
AUDIENCE = "urn:dac-gateway:fhir"
ALGORITHM = "HS256"
#: Clock differences tolerated between the gateway's processes (they may run on several hosts).
LEEWAY_SECONDS = 10
#: Tokens already verified, kept until they expire: a client sends the same token for minutes, and the cache
#: spares each request the HMAC, the JSON and the scope parsing. Bounded: cleared when full.
VERIFIED_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class ApiClient:
    """Who is calling: the client a verified access token was issued to, with what it was granted."""

    client_id: str
    role: Role
    scopes: ScopeSet
    platform: str | None = None
    authenticated: bool = True  # False: the stand-in caller when authentication is off
    rpps: tuple[str, ...] = ()  # a practitioner's professionals
    #: The ``kid`` of the client key whose assertion got this token: the token lives no longer than that key.
    key_id: str | None = None

    @property
    def sender_id(self) -> str | None:
        """What intake records as the referral's sender (nobody when authentication is off)."""
        return self.client_id if self.authenticated else None

    def require(self, resource_type: str, permission: Permission) -> None:
        """403 unless a granted scope covers ``permission`` on ``resource_type``."""
        if not self.scopes.allows(resource_type, permission):
            raise Forbidden.single(
                IssueCode.SCOPE_INSUFFICIENT,
                f"this access token has no scope for '{permission.value}' on {resource_type} "
                f"(e.g. system/{resource_type}.{permission.value})",
            )


#: The caller when authentication is off (development): an operator allowed everything — the audit trail too,
#: which a wildcard scope does not reach (``NAMED_ONLY``).
DEVELOPMENT_CLIENT = ApiClient(
    "development",
    Role.OPERATOR,
    ScopeSet.parse(["system/*.cruds", "system/AuditEvent.rs"]),
    authenticated=False,
)


class AccessTokens:
    def __init__(self, secret: str, lifetime: int) -> None:
        self._secret = secret
        self.lifetime = lifetime
        self._verified: dict[str, tuple[float, ApiClient]] = {}

    def issue(
        self, client: RegisteredClient, scopes: list[str], now: float | None = None, key_id: str | None = None
    ) -> str:
        issued_at = int(time.time() if now is None else now)
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": client.client_id,
            "iat": issued_at,
            "exp": issued_at + self.lifetime,
            "jti": uuid.uuid4().hex,
            "scope": " ".join(scopes),
            "role": client.role.value,
        }
        if client.platform is not None:
            claims["platform"] = client.platform
        if client.rpps:
            claims["rpps"] = list(client.rpps)
        if key_id is not None:
            claims["client_kid"] = key_id
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> ApiClient:
        cached = self._verified.get(token)
        if cached is not None and time.time() < cached[0] + LEEWAY_SECONDS:
            return cached[1]
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                leeway=LEEWAY_SECONDS,
                options={"require": ["iss", "aud", "sub", "exp", "scope", "role"]},
            )
            client = ApiClient(
                str(claims["sub"]),
                Role(claims["role"]),
                ScopeSet.parse(str(claims["scope"]).split()),
                str(claims["platform"]) if claims.get("platform") is not None else None,
                rpps=tuple(str(number) for number in claims.get("rpps") or ()),
                key_id=str(claims["client_kid"]) if claims.get("client_kid") is not None else None,
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated.single(
                IssueCode.ACCESS_TOKEN_INVALID, "the access token has expired; get a new one from /auth/token"
            ) from exc
        except (jwt.InvalidTokenError, ValueError) as exc:
            raise Unauthenticated.single(
                IssueCode.ACCESS_TOKEN_INVALID, "the access token is not one this gateway issued"
            ) from exc
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = (float(claims["exp"]), client)
        return client


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer …`` header; 401 when there is none."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated.single(
            IssueCode.ACCESS_TOKEN_MISSING,
            "this API needs an access token: Authorization: Bearer <token> (SMART Backend Services, POST /auth/token)",
        )
    return token.strip()
