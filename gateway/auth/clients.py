"""The registered API clients (``GATEWAY_CLIENTS``, TOML), read and checked once at start-up::

    [[clients]]
    client_id = "hopital-nord"
    role = "sender"                    # sender | platform | operator
    scopes = ["system/ServiceRequest.c", "system/ServiceRequest.rs", "system/Task.rs"]
    jwks_file = "hopital-nord.jwks.json"   # relative to this file; or jwks = { keys = [ … ] } inline

    [[clients]]
    client_id = "dac75-app"
    role = "platform"
    platform = "dac-75"                # a platform key of the routing file: it sees what was routed there
    scopes = ["system/*.rs", "system/Task.u"]
    jwks = { keys = [ { kty = "EC", crv = "P-384", kid = "k1", x = "…", y = "…" } ] }
    endpoints = ["https://dac75.example.org/fhir"]   # where it may be called back (updates back, DESIGN §11)

Keys are parsed here, once (each request's assertion is checked against an already-decoded key). Only public
keys are accepted: a JWK carrying a private part (``d``) is refused, so a private key pasted by mistake stops
start-up instead of sitting in a config file.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from jwt import PyJWK
from jwt.exceptions import PyJWKError

from gateway.auth.scopes import ScopeSet
from gateway.routing.callbacks import registered_endpoint

#: Signature algorithms a client assertion may use (SMART Backend Services): nothing else, never ``none``/HS*.
ASSERTION_ALGORITHMS = ("RS384", "ES384")


class AuthConfigError(ValueError):
    """Authentication cannot start: the clients file is missing, unparsable or wrong, or the secret is missing."""


class Role(StrEnum):
    SENDER = "sender"  # hospital or GP software (or a peer gateway posting to $process-message): sees what it sent
    PLATFORM = "platform"  # a DAC platform's software: sees what was routed to its platform
    OPERATOR = "operator"  # the gateway's operators: see everything, and the audit trail


@dataclass(frozen=True, slots=True)
class RegisteredClient:
    client_id: str
    role: Role
    scopes: ScopeSet
    keys: Mapping[str, PyJWK]  # kid → public key
    platform: str | None = None
    #: Where it may be called back (a message's MessageHeader.source.endpoint): https base URLs, or under them.
    endpoints: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ClientRegistry:
    clients: Mapping[str, RegisteredClient]

    def get(self, client_id: str) -> RegisteredClient | None:
        return self.clients.get(client_id)

    def scopes_supported(self) -> list[str]:
        return sorted({str(scope) for client in self.clients.values() for scope in client.scopes.scopes})


def _algorithm(jwk: dict[str, Any]) -> str:
    if jwk.get("kty") == "RSA":
        return "RS384"
    if jwk.get("kty") == "EC" and jwk.get("crv") == "P-384":
        return "ES384"
    raise AuthConfigError(f"key {jwk.get('kid')!r}: only RSA (RS384) and EC P-384 (ES384) keys are accepted")


def _keys(client_id: str, jwks: Any) -> dict[str, PyJWK]:
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        raise AuthConfigError(f"client {client_id!r}: its JWKS needs a non-empty 'keys' list")
    keys: dict[str, PyJWK] = {}
    for jwk in jwks["keys"]:
        if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str) or not jwk["kid"]:
            raise AuthConfigError(f"client {client_id!r}: every key needs a 'kid'")
        if "d" in jwk:
            raise AuthConfigError(f"client {client_id!r}: key {jwk['kid']!r} is a private key; register public keys")
        algorithm = _algorithm(jwk)
        if jwk.get("alg", algorithm) != algorithm:
            raise AuthConfigError(f"client {client_id!r}: key {jwk['kid']!r} has alg {jwk['alg']!r}, not {algorithm}")
        try:
            keys[jwk["kid"]] = PyJWK(jwk, algorithm)
        except PyJWKError as exc:
            raise AuthConfigError(f"client {client_id!r}: key {jwk['kid']!r} cannot be read: {exc}") from exc
    return keys


def _client(entry: Any, directory: Path, platforms: frozenset[str]) -> RegisteredClient:
    if not isinstance(entry, dict) or not isinstance(entry.get("client_id"), str) or not entry["client_id"]:
        raise AuthConfigError("every [[clients]] entry needs a client_id")
    client_id = entry["client_id"]
    try:
        role = Role(str(entry.get("role")))
    except ValueError as exc:
        raise AuthConfigError(f"client {client_id!r}: role must be one of {', '.join(Role)}") from exc
    platform = entry.get("platform")
    if role is Role.PLATFORM and platform not in platforms:
        raise AuthConfigError(f"client {client_id!r}: platform {platform!r} is not a platform of the routing file")
    if role is not Role.PLATFORM and platform is not None:
        raise AuthConfigError(f"client {client_id!r}: only a platform client names a platform")
    texts = entry.get("scopes")
    if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
        raise AuthConfigError(f"client {client_id!r}: scopes must be a list of strings")
    scopes = ScopeSet.parse(texts)
    if len(scopes.scopes) != len(texts):
        raise AuthConfigError(f"client {client_id!r}: scopes must be system/<Type>.<cruds|read|write|*>")
    if ("jwks" in entry) == ("jwks_file" in entry):
        raise AuthConfigError(f"client {client_id!r}: give its public keys as jwks or as jwks_file (one of them)")
    jwks = entry.get("jwks")
    if "jwks_file" in entry:
        path = directory / str(entry["jwks_file"])
        try:
            jwks = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise AuthConfigError(f"client {client_id!r}: {path} cannot be read as a JWKS: {exc}") from exc
    return RegisteredClient(client_id, role, scopes, _keys(client_id, jwks), platform, _endpoints(client_id, entry))


def _endpoints(client_id: str, entry: dict[str, Any]) -> tuple[str, ...]:
    endpoints = entry.get("endpoints", [])
    if not isinstance(endpoints, list) or not all(isinstance(e, str) for e in endpoints):
        raise AuthConfigError(f"client {client_id!r}: endpoints must be a list of https URLs")
    for endpoint in endpoints:
        if not registered_endpoint(endpoint, [endpoint]):
            raise AuthConfigError(
                f"client {client_id!r}: endpoint {endpoint!r} is not an https URL without credentials, query, "
                "fragment or dot segments"
            )
    return tuple(endpoints)


def load_clients(path: Path, platforms: frozenset[str]) -> ClientRegistry:
    """The registry; ``platforms`` are the routing file's platform keys, which platform clients must name."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AuthConfigError(f"{path} cannot be read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise AuthConfigError(f"{path} is not valid TOML: {exc}") from exc
    entries = data.get("clients")
    if not isinstance(entries, list):
        raise AuthConfigError(f"{path}: no [[clients]] entries")
    clients: dict[str, RegisteredClient] = {}
    for entry in entries:
        client = _client(entry, path.parent, platforms)
        if client.client_id in clients:
            raise AuthConfigError(f"{path}: client {client.client_id!r} is registered twice")
        clients[client.client_id] = client
    return ClientRegistry(clients)
