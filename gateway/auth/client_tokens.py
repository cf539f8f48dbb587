"""A registered client getting its access token (SMART Backend Services, the client's side): what
``gateway token`` and ``gateway kit run --client-id --key`` do.

The gateway's SMART configuration (``{base}/.well-known/smart-configuration``) names its token endpoint — the
``aud`` the assertion must carry, which may be a public URL (``GATEWAY_TOKEN_URL``) rather than the one called. The
assertion is signed with the client's private key (``gateway.auth.keypairs``: its ``kid`` is the key's thumbprint,
as ``gateway clients add`` registered it), posted with the client-credentials grant, and the answer's access token
returned. Without scopes asked for, those the gateway publishes are asked for: it grants those registered for the
client among them.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from gateway.auth.assertions import CLIENT_ASSERTION_TYPE
from gateway.auth.keypairs import KeyFileError, read_signing_key
from gateway.auth.outbound import SmartBackendAuth, sign_assertion

#: Seconds to wait for the gateway's answers.
TIMEOUT = 10.0
_MAX_ANSWER_BYTES = 64 * 1024

__all__ = ["TokenRequestFailed", "request_token", "token_endpoint"]


class TokenRequestFailed(Exception):
    """No access token: the key cannot be used, the gateway is unreachable, or it refused (one line saying which,
    with the token endpoint's ``error`` and ``error_description``; never the key or an assertion)."""


def _json(response: httpx.Response, what: str) -> dict[str, object]:
    try:
        answer = response.json() if len(response.content) <= _MAX_ANSWER_BYTES else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise TokenRequestFailed(f"{what} answered HTTP {response.status_code} without a JSON object")
    return answer


def token_endpoint(base_url: str, client: httpx.Client) -> tuple[str, list[str]]:
    """The token endpoint and the scopes the gateway at ``base_url`` (its root or its FHIR base) publishes."""
    url = base_url.rstrip("/") + "/.well-known/smart-configuration"
    try:
        response = client.get(url, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise TokenRequestFailed(f"{url} cannot be reached ({type(exc).__name__}): is the gateway running?") from None
    if response.status_code != 200:
        raise TokenRequestFailed(f"{url} answered HTTP {response.status_code}: is {base_url} a DAC gateway?")
    configuration = _json(response, url)
    endpoint = configuration.get("token_endpoint")
    if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
        raise TokenRequestFailed(f"{url} names no token_endpoint")
    scopes = configuration.get("scopes_supported")
    published = [scope for scope in scopes if isinstance(scope, str)] if isinstance(scopes, list) else []
    return endpoint, published


def request_token(
    base_url: str,
    client_id: str,
    key_file: Path,
    scopes: list[str],
    *,
    kid: str | None = None,
    transport: httpx.BaseTransport | None = None,
) -> str:
    """An access token for ``client_id`` from the gateway at ``base_url``, asking for ``scopes`` (none: all those
    it publishes, of which it grants the client's). ``kid``: the registered key id, when it is not the key's
    thumbprint. Raises ``TokenRequestFailed``."""
    try:
        key = read_signing_key(key_file, kid)
    except KeyFileError as exc:
        raise TokenRequestFailed(str(exc)) from None
    with httpx.Client(timeout=TIMEOUT, transport=transport, headers={"User-Agent": "dac-gateway"}) as client:
        endpoint, published = token_endpoint(base_url, client)
        asked = scopes or published
        if not asked:
            raise TokenRequestFailed("the gateway publishes no scope: ask for one (--scope system/…)")
        auth = SmartBackendAuth(endpoint, client_id, " ".join(asked), key)
        form = {
            "grant_type": "client_credentials",
            "scope": auth.scope,
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": sign_assertion(auth),
        }
        try:
            response = client.post(endpoint, data=form, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise TokenRequestFailed(f"{endpoint} cannot be reached ({type(exc).__name__})") from None
        answer = _json(response, endpoint)
    if response.status_code != 200:
        error, description = answer.get("error"), answer.get("error_description")
        raise TokenRequestFailed(
            f"token refused (HTTP {response.status_code} {error}): {description}"
            if isinstance(error, str)
            else f"{endpoint} answered HTTP {response.status_code}"
        )
    token = answer.get("access_token")
    if not isinstance(token, str) or not token:
        raise TokenRequestFailed(f"{endpoint} answered without an access_token")
    return token
