"""The gateway authenticating itself (SMART Backend Services, as a client): to platforms and peer gateways it
delivers to, and to the clients it sends updates back to (DESIGN §11).

A ``smart-backend`` block names the other side's token endpoint, the client id the gateway is registered under
there, and the private key it signs its client assertions with::

    auth = { type = "smart-backend", token_url = "https://peer.example.org/auth/token", client_id = "gw-75",
             key_file = "keys/gw.pem", kid = "gw-2026", algorithm = "ES384", scope = "system/ServiceRequest.c" }

The key comes from a PEM file (``key_file``, relative to the file that names it) or from an environment variable
holding the PEM (``key_env``). It is read once, at start-up; it is never logged, nor put in an exception's
message, a metric or the audit trail (``SigningKey``'s ``repr`` says only its ``kid``). Its public half is what
``GET /.well-known/jwks.json`` publishes, so that the other side can register the gateway by ``jwks_url``.

``OutboundTokens`` keeps one access token per block until shortly before it expires; deliveries sharing a block
share the token, and one fetch (a lock per block, so concurrent deliveries never stampede the token endpoint).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from gateway.auth.assertions import CLIENT_ASSERTION_TYPE, MAX_LIFETIME_SECONDS
from gateway.auth.clients import ASSERTION_ALGORITHMS

SMART_BACKEND = "smart-backend"
#: Lifetime of the assertions the gateway signs: well under what a token endpoint accepts (``MAX_LIFETIME_SECONDS``),
#: since each is used at once, and once.
ASSERTION_LIFETIME_SECONDS = MAX_LIFETIME_SECONDS // 5
#: A token is renewed this long before it expires (at most: a quarter of its life for short-lived tokens), so
#: that none reaches the other side expired after the time spent sending the message.
REFRESH_MARGIN_SECONDS = 30.0
#: When the token endpoint's answer has no ``expires_in`` (RFC 6749 only recommends it): SMART's usual lifetime.
DEFAULT_EXPIRES_IN = 300.0
#: A token endpoint's answer larger than this is not a token answer.
MAX_TOKEN_ANSWER_BYTES = 64 * 1024
_KEYS = {"type", "token_url", "client_id", "key_file", "key_env", "kid", "algorithm", "scope"}


class OutboundAuthError(ValueError):
    """A ``smart-backend`` block cannot be used (the message names the field, never the key's content)."""


class TokenUnavailable(Exception):
    """No access token now: the token endpoint is unreachable, failing or refusing. The delivery is retried
    with its usual backoff (a transient failure, never a dead letter by itself); the message carries no secret."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private key the gateway signs assertions with, and its public JWK."""

    kid: str
    algorithm: str  # ES384 | RS384
    private_key: Any = field(repr=False, compare=False)
    public_jwk: Mapping[str, str] = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class SmartBackendAuth:
    token_url: str
    client_id: str
    scope: str
    key: SigningKey


def _read_key(pem: bytes, algorithm: str, kid: str, where: str) -> SigningKey:
    try:
        private_key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        # cryptography's messages describe the PEM's structure, not its content; ours names only where it is.
        raise OutboundAuthError(f"{where} is not an unencrypted PEM private key") from exc
    if algorithm == "ES384" and isinstance(private_key, ec.EllipticCurvePrivateKey):
        if not isinstance(private_key.curve, ec.SECP384R1):
            raise OutboundAuthError(f"{where}: ES384 signs with an EC P-384 key, not {private_key.curve.name}")
        public = ECAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    elif algorithm == "RS384" and isinstance(private_key, rsa.RSAPrivateKey):
        public = RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    else:
        raise OutboundAuthError(f"{where}: {algorithm} needs an {'EC P-384' if algorithm == 'ES384' else 'RSA'} key")
    jwk = {**{k: str(v) for k, v in public.items()}, "kid": kid, "alg": algorithm, "use": "sig"}
    return SigningKey(kid, algorithm, private_key, jwk)


def parse_smart_backend(raw: Mapping[str, Any], directory: Path) -> SmartBackendAuth:
    """A ``smart-backend`` block; ``directory`` is that of the file naming it (``key_file`` is relative to it)."""
    unknown = set(raw) - _KEYS
    if unknown:
        raise OutboundAuthError(f"unknown key(s) {', '.join(sorted(unknown))} in a smart-backend auth")
    for name in ("token_url", "client_id", "kid", "scope"):
        if not isinstance(raw.get(name), str) or not raw[name].strip():
            raise OutboundAuthError(f"a smart-backend auth needs {name}")
    token_url = str(raw["token_url"])
    if not token_url.startswith(("https://", "http://")):
        raise OutboundAuthError("a smart-backend auth's token_url must be an http(s) URL")
    algorithm = raw.get("algorithm", "ES384")
    if algorithm not in ASSERTION_ALGORITHMS:
        raise OutboundAuthError(f"a smart-backend auth's algorithm must be one of {', '.join(ASSERTION_ALGORITHMS)}")
    if ("key_file" in raw) == ("key_env" in raw):
        raise OutboundAuthError("a smart-backend auth names its private key by key_file or by key_env (one of them)")
    if "key_file" in raw:
        path = directory / str(raw["key_file"])
        where = f"key_file {path}"
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise OutboundAuthError(f"{where} cannot be read ({exc.strerror})") from None
    else:
        where = f"key_env {raw['key_env']}"
        text = os.environ.get(str(raw["key_env"]))
        if not text:
            raise OutboundAuthError(f"{where}: the environment variable is not set")
        pem = text.encode()
    key = _read_key(pem, str(algorithm), str(raw["kid"]), where)
    return SmartBackendAuth(token_url, str(raw["client_id"]), str(raw["scope"]), key)


def jwks(keys: Iterable[SigningKey]) -> dict[str, list[dict[str, str]]]:
    """The public keys, once per ``kid`` (``GET /.well-known/jwks.json``): no private part ever."""
    published: dict[str, dict[str, str]] = {}
    for key in keys:
        published.setdefault(key.kid, dict(key.public_jwk))
    return {"keys": list(published.values())}


def sign_assertion(auth: SmartBackendAuth, now: float | None = None) -> str:
    """The client assertion (RFC 7523; SMART Backend Services): iss = sub = our client id there, aud = its token
    endpoint, a fresh ``jti``, signed by our key."""
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": auth.client_id,
        "sub": auth.client_id,
        "aud": auth.token_url,
        "iat": issued,
        "exp": issued + ASSERTION_LIFETIME_SECONDS,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, auth.key.private_key, algorithm=auth.key.algorithm, headers={"kid": auth.key.kid})


@dataclass(slots=True)
class _Cached:
    token: str
    renew_at: float  # monotonic clock


def _renew_at(obtained: float, expires_in: float) -> float:
    return obtained + expires_in - min(REFRESH_MARGIN_SECONDS, expires_in / 4)


def _oauth_error(response: httpx.Response) -> str:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return ""
    return f" {error}" if isinstance(error, str) and error.isascii() and len(error) <= 64 else ""


class OutboundTokens:
    """Access tokens for the ``smart-backend`` blocks, fetched with the client given, kept until shortly before
    they expire. ``clock``: a monotonic clock (tests move it)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cached: dict[SmartBackendAuth, _Cached] = {}
        self._locks: dict[SmartBackendAuth, asyncio.Lock] = {}

    async def token(self, auth: SmartBackendAuth, client: httpx.AsyncClient, *, refused: str | None = None) -> str:
        """A token for ``auth``: the cached one while it is fresh, else a new one. ``refused``: a token the other
        side has just answered 401 to — not given again; a new one is fetched, unless another delivery already
        replaced it (then that one is the answer: one fetch for all the 401s of one token)."""
        cached = self._cached.get(auth)
        if cached is not None and cached.token != refused and self._clock() < cached.renew_at:
            return cached.token
        lock = self._locks.setdefault(auth, asyncio.Lock())
        async with lock:  # the others wait for this fetch and take its token
            cached = self._cached.get(auth)
            if cached is not None and cached.token != refused and self._clock() < cached.renew_at:
                return cached.token
            self._cached.pop(auth, None)
            fetched = await self._fetch(auth, client)
            self._cached[auth] = fetched
            return fetched.token

    async def _fetch(self, auth: SmartBackendAuth, client: httpx.AsyncClient) -> _Cached:
        form = {
            "grant_type": "client_credentials",
            "scope": auth.scope,
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": sign_assertion(auth),
        }
        started = self._clock()
        try:
            response = await client.post(auth.token_url, data=form, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise TokenUnavailable(f"token endpoint unreachable ({type(exc).__name__})") from None
        if not response.is_success:
            what = "failing" if response.status_code >= 500 or response.status_code in (408, 429) else "refused"
            raise TokenUnavailable(f"token endpoint {what}: HTTP {response.status_code}{_oauth_error(response)}")
        try:
            answer = response.json() if len(response.content) <= MAX_TOKEN_ANSWER_BYTES else None
        except ValueError:
            answer = None
        token = answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token or not token.isascii() or any(c.isspace() for c in token):
            raise TokenUnavailable("token endpoint answered without a usable access_token")
        expires_in = answer.get("expires_in", DEFAULT_EXPIRES_IN) if isinstance(answer, dict) else DEFAULT_EXPIRES_IN
        if isinstance(expires_in, bool) or not isinstance(expires_in, int | float) or expires_in <= 0:
            expires_in = DEFAULT_EXPIRES_IN
        return _Cached(token, _renew_at(started, float(expires_in)))
