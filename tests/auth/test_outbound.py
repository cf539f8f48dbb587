"""The gateway as a SMART Backend Services client: its smart-backend blocks, the assertions it signs, the access
tokens it keeps (httpx.MockTransport as the other side's token endpoint; a clock the tests move)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
from jwt import PyJWK

from gateway.auth.assertions import CLIENT_ASSERTION_TYPE
from gateway.auth.outbound import (
    OutboundAuthError,
    OutboundTokens,
    SmartBackendAuth,
    TokenUnavailable,
    jwks,
    parse_smart_backend,
)
from tests.support.auth import write_private_key

TOKEN_URL = "https://peer.example.org/auth/token"


def _block(**overrides: str) -> dict[str, str]:
    return {
        "type": "smart-backend",
        "token_url": TOKEN_URL,
        "client_id": "gw-75",
        "key_file": "keys/gw.pem",
        "kid": "gw-1",
        "algorithm": "ES384",
        "scope": "system/ServiceRequest.c",
    } | overrides


@pytest.fixture
def auth(tmp_path: Path) -> SmartBackendAuth:
    write_private_key(tmp_path / "keys" / "gw.pem")
    return parse_smart_backend(_block(), tmp_path)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TokenEndpoint:
    """The other side's token endpoint: checks the assertion with our public key, answers a numbered token."""

    def __init__(self, auth: SmartBackendAuth, expires_in: int = 300) -> None:
        self.public = PyJWK(dict(auth.key.public_jwk))
        self.expires_in = expires_in
        self.issued: list[str] = []
        self.failures: list[httpx.Response | Exception] = []
        self.delay = 0.0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.failures:
            failure = self.failures.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return failure
        form = {key: values[0] for key, values in parse_qs(request.content.decode()).items()}
        assert form["grant_type"] == "client_credentials" and form["scope"] == "system/ServiceRequest.c"
        assert form["client_assertion_type"] == CLIENT_ASSERTION_TYPE
        assert jwt.get_unverified_header(form["client_assertion"])["kid"] == "gw-1"
        claims = jwt.decode(form["client_assertion"], self.public.key, algorithms=["ES384"], audience=TOKEN_URL)
        assert claims["iss"] == claims["sub"] == "gw-75" and claims["jti"]
        self.issued.append(f"token-{len(self.issued) + 1}")
        return httpx.Response(200, json={"access_token": self.issued[-1], "expires_in": self.expires_in})


def _client(endpoint: TokenEndpoint) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(endpoint))


def test_a_block_reads_its_key_from_a_file_relative_to_its_config_or_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pem = write_private_key(tmp_path / "keys" / "gw.pem")
    from_file = parse_smart_backend(_block(), tmp_path)
    monkeypatch.setenv("GW_KEY", pem.read_text())
    from_env = parse_smart_backend({k: v for k, v in _block(key_env="GW_KEY").items() if k != "key_file"}, tmp_path)
    assert from_file.key.public_jwk == from_env.key.public_jwk
    assert from_file.key.public_jwk["kid"] == "gw-1" and from_file.key.public_jwk["alg"] == "ES384"
    # The private key is in no representation of the block.
    secret = str(from_file.key.private_key.private_numbers().private_value)
    assert secret not in repr(from_file) and "PRIVATE KEY" not in repr(from_file)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"key_file": "keys/missing.pem"}, "cannot be read"),
        ({"algorithm": "HS256"}, "algorithm must be one of RS384, ES384"),
        ({"algorithm": "RS384"}, "RS384 needs an RSA key"),
        ({"token_url": "ftp://peer/token"}, "http"),
        ({"kid": ""}, "needs kid"),
        ({"surprise": "x"}, "unknown key"),
        ({"key_env": "GW_KEY"}, "key_file or by key_env"),
    ],
)
def test_a_wrong_block_is_refused_naming_what(tmp_path: Path, change: dict[str, str], message: str) -> None:
    write_private_key(tmp_path / "keys" / "gw.pem")
    with pytest.raises(OutboundAuthError, match=message):
        parse_smart_backend(_block(**change), tmp_path)


def test_a_key_that_is_not_a_pem_is_refused_without_quoting_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GW_KEY", "not-a-key-but-a-secret-0123456789")
    block = {k: v for k, v in _block(key_env="GW_KEY").items() if k != "key_file"}
    with pytest.raises(OutboundAuthError) as raised:
        parse_smart_backend(block, tmp_path)
    assert "not-a-key-but-a-secret" not in str(raised.value) and "GW_KEY" in str(raised.value)


def test_the_published_key_set_holds_public_keys_once_each(auth: SmartBackendAuth) -> None:
    published = jwks([auth.key, auth.key])
    (key,) = published["keys"]
    assert "d" not in key and key["kty"] == "EC" and key["crv"] == "P-384" and key["use"] == "sig"
    assert PyJWK(key).key.public_numbers() == auth.key.private_key.public_key().public_numbers()


async def test_the_token_is_kept_and_renewed_shortly_before_it_expires(auth: SmartBackendAuth) -> None:
    endpoint, clock = TokenEndpoint(auth, expires_in=300), Clock()
    tokens = OutboundTokens(clock)
    async with _client(endpoint) as client:
        assert [await tokens.token(auth, client) for _ in range(3)] == ["token-1"] * 3
        clock.now += 300 - 31  # more than the refresh margin (30 s) before it expires: still this one
        assert await tokens.token(auth, client) == "token-1"
        clock.now += 2  # within the margin: a new one
        assert await tokens.token(auth, client) == "token-2"
    assert endpoint.issued == ["token-1", "token-2"]


async def test_a_short_lived_token_is_renewed_after_three_quarters_of_its_life(auth: SmartBackendAuth) -> None:
    endpoint, clock = TokenEndpoint(auth, expires_in=4), Clock()
    tokens = OutboundTokens(clock)
    async with _client(endpoint) as client:
        assert await tokens.token(auth, client) == "token-1"
        clock.now += 2.9
        assert await tokens.token(auth, client) == "token-1"
        clock.now += 0.2
        assert await tokens.token(auth, client) == "token-2"


async def test_concurrent_deliveries_share_one_fetch(auth: SmartBackendAuth) -> None:
    endpoint = TokenEndpoint(auth)
    endpoint.delay = 0.05
    tokens = OutboundTokens()
    async with _client(endpoint) as client:
        got = await asyncio.gather(*(tokens.token(auth, client) for _ in range(20)))
        assert set(got) == {"token-1"} and endpoint.issued == ["token-1"]
        # Twenty 401s to that token: one new token for all of them.
        renewed = await asyncio.gather(*(tokens.token(auth, client, refused="token-1") for _ in range(20)))
    assert set(renewed) == {"token-2"} and endpoint.issued == ["token-1", "token-2"]


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (httpx.ConnectError("refused"), "token endpoint unreachable (ConnectError)"),
        (httpx.Response(503), "token endpoint failing: HTTP 503"),
        (httpx.Response(429), "token endpoint failing: HTTP 429"),
        (httpx.Response(400, json={"error": "invalid_client"}), "token endpoint refused: HTTP 400 invalid_client"),
        (httpx.Response(200, json={"token_type": "bearer"}), "token endpoint answered without a usable access_token"),
    ],
)
async def test_a_failing_token_endpoint_gives_no_token_and_the_next_call_tries_again(
    auth: SmartBackendAuth, failure: httpx.Response | Exception, reason: str
) -> None:
    endpoint = TokenEndpoint(auth)
    endpoint.failures.append(failure)
    tokens = OutboundTokens()
    async with _client(endpoint) as client:
        with pytest.raises(TokenUnavailable) as raised:
            await tokens.token(auth, client)
        assert str(raised.value) == reason
        assert await tokens.token(auth, client) == "token-1"
