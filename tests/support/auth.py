"""SMART Backend Services clients for tests: keys generated here, a clients file, signed assertions."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from gateway.auth.assertions import CLIENT_ASSERTION_TYPE

#: A secret long enough for HS256, for test gateways only.
TEST_SECRET = "test-secret-for-the-gateway-access-tokens-0123456789"
_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # once per session: slow to make
_EC_KEY = ec.generate_private_key(ec.SECP384R1())


@dataclass
class SmartClient:
    client_id: str
    role: str
    scopes: list[str]
    platform: str | None = None
    algorithm: str = "ES384"
    kid: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    identifier_systems: tuple[str, ...] = ()
    rpps: list[str] | None = None  # a practitioner's professionals
    endpoints: list[str] = field(default_factory=list)  # where it may be called back

    @property
    def private_key(self) -> Any:
        return _EC_KEY if self.algorithm == "ES384" else _RSA_KEY

    def public_jwk(self) -> dict[str, Any]:
        public = self.private_key.public_key()
        jwk = (
            ECAlgorithm.to_jwk(public, as_dict=True)
            if self.algorithm == "ES384"
            else RSAAlgorithm.to_jwk(public, as_dict=True)
        )
        return {**jwk, "kid": self.kid}

    def assertion(self, token_url: str, **overrides: Any) -> str:
        now = int(time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": token_url,
            "exp": now + 240,
            "iat": now,
            "jti": uuid.uuid4().hex,
        } | overrides
        return jwt.encode(claims, self.private_key, algorithm=self.algorithm, headers={"kid": self.kid})

    def token_form(self, token_url: str, scope: str | None = None, **overrides: Any) -> dict[str, str]:
        return {
            "grant_type": "client_credentials",
            "scope": scope if scope is not None else " ".join(self.scopes),
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": self.assertion(token_url, **overrides),
        }


def write_clients(directory: Path, clients: list[SmartClient]) -> Path:
    """A clients file registering these clients; the first one's keys as a JWKS file, the others inline."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = []
    for position, client in enumerate(clients):
        lines += ["[[clients]]", f'client_id = "{client.client_id}"', f'role = "{client.role}"']
        if client.platform:
            lines.append(f'platform = "{client.platform}"')
        if client.rpps is not None:
            lines.append(f"rpps = {json.dumps(client.rpps)}")
        lines.append(f"scopes = {json.dumps(client.scopes)}")
        if client.identifier_systems:
            lines.append(f"identifier_systems = {json.dumps(list(client.identifier_systems))}")
        if client.endpoints:
            lines.append(f"endpoints = {json.dumps(client.endpoints)}")
        jwks = {"keys": [client.public_jwk()]}
        if position == 0:
            (directory / f"{client.client_id}.jwks.json").write_text(json.dumps(jwks))
            lines.append(f'jwks_file = "{client.client_id}.jwks.json"')
        else:
            lines.append(f"jwks = {json.dumps(jwks)}".replace('": ', '" = ').replace('{"', '{ "'))
    path = directory / "clients.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_private_key(path: Path, algorithm: str = "ES384") -> Path:
    """The session's private key of that algorithm, as an unencrypted PEM file: the key a gateway signs its own
    assertions with (a ``smart-backend`` block's ``key_file``)."""
    from cryptography.hazmat.primitives import serialization

    key = _EC_KEY if algorithm == "ES384" else _RSA_KEY
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path
