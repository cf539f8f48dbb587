"""``request_token``: a client's key file, the gateway's SMART configuration, a signed assertion, the token."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest

from gateway.auth.assertions import verify_assertion
from gateway.auth.client_tokens import TokenRequestFailed, request_token
from gateway.auth.clients import ClientRegistry, RegisteredClient, Role, public_keys
from gateway.auth.keypairs import KeyFileError, new_private_key, public_jwk, thumbprint, write_private_key
from gateway.auth.scopes import ScopeSet

TOKEN_URL = "https://gateway.example/auth/token"


def _registered(jwk: dict[str, str]) -> ClientRegistry:
    client = RegisteredClient(
        "hopital-nord", Role.SENDER, ScopeSet.parse(["system/*.rs"]), public_keys("hopital-nord", {"keys": [jwk]})
    )
    return ClientRegistry({"hopital-nord": client})


def _gateway(registry: ClientRegistry, seen: list[dict[str, list[str]]]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/.well-known/smart-configuration"):
            return httpx.Response(200, json={"token_endpoint": TOKEN_URL, "scopes_supported": ["system/*.rs"]})
        assert str(request.url) == TOKEN_URL
        form = parse_qs(request.content.decode())
        seen.append(form)
        verify_assertion(form["client_assertion"][0], registry, TOKEN_URL)  # raises if it does not verify
        return httpx.Response(200, json={"access_token": "the-token", "token_type": "bearer", "expires_in": 300})

    return httpx.MockTransport(handle)


def test_the_key_written_signs_an_assertion_the_registered_jwk_verifies(tmp_path: Path) -> None:
    key = new_private_key()
    jwk = public_jwk(key)
    assert "d" not in jwk and jwk["kty"] == "EC" and jwk["crv"] == "P-384" and jwk["alg"] == "ES384"
    assert jwk["kid"] == thumbprint(jwk) and len(jwk["kid"]) == 43  # SHA-256, base64url without padding
    write_private_key(tmp_path / "key.pem", key)
    assert stat.S_IMODE(os.stat(tmp_path / "key.pem").st_mode) == 0o600
    seen: list[dict[str, list[str]]] = []
    token = request_token(
        "https://gateway.example/fhir",
        "hopital-nord",
        tmp_path / "key.pem",
        [],
        transport=_gateway(_registered(jwk), seen),
    )
    assert token == "the-token"
    assert seen[0]["scope"] == ["system/*.rs"]  # none asked: those published
    assert seen[0]["grant_type"] == ["client_credentials"]


def test_rfc_7638_thumbprint_example() -> None:
    # RFC 7638 §3.1's RSA key and its thumbprint.
    jwk = {
        "kty": "RSA",
        "n": (
            "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjB"
            "ZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8"
            "KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_"
            "xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
        ),
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_a_key_file_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "key.pem").write_text("kept")
    with pytest.raises(KeyFileError, match="exists already"):
        write_private_key(tmp_path / "key.pem", new_private_key())
    assert (tmp_path / "key.pem").read_text() == "kept"


def test_a_refusal_says_the_oauth_error_in_one_line(tmp_path: Path) -> None:
    write_private_key(tmp_path / "key.pem", new_private_key())

    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={"token_endpoint": TOKEN_URL, "scopes_supported": []})
        return httpx.Response(400, json={"error": "invalid_client", "error_description": "kid names no key"})

    with pytest.raises(TokenRequestFailed, match=r"^token refused \(HTTP 400 invalid_client\): kid names no key$"):
        request_token(
            "https://gateway.example", "x", tmp_path / "key.pem", ["system/*.rs"], transport=httpx.MockTransport(handle)
        )


def test_an_unreachable_gateway_and_a_missing_key_are_told(tmp_path: Path) -> None:
    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    write_private_key(tmp_path / "key.pem", new_private_key())
    with pytest.raises(TokenRequestFailed, match="cannot be reached"):
        request_token("http://127.0.0.1:9", "x", tmp_path / "key.pem", [], transport=httpx.MockTransport(unreachable))
    with pytest.raises(TokenRequestFailed, match="cannot be read"):
        request_token("http://127.0.0.1:9", "x", tmp_path / "missing.pem", [])
    (tmp_path / "not.pem").write_text("not a key")
    with pytest.raises(TokenRequestFailed, match="not an unencrypted PEM private key"):
        request_token("http://127.0.0.1:9", "x", tmp_path / "not.pem", [])
