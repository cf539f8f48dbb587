"""The registered API clients (``GATEWAY_CLIENTS``, TOML), read and checked once at start-up::

    [[clients]]
    client_id = "hopital-nord"
    role = "sender"                    # sender | platform | practitioner | operator
    scopes = ["system/ServiceRequest.c", "system/ServiceRequest.rs", "system/Task.rs"]
    jwks_file = "hopital-nord.jwks.json"   # relative to this file; or jwks = { keys = [ … ] } inline
    identifier_systems = ["https://hopital-nord.example/referrals"]   # optional: the identifier systems it owns

    [[clients]]
    client_id = "dac75-app"
    role = "platform"
    platform = "dac-75"                # a platform key of the routing file: it sees what was routed there
    scopes = ["system/*.rs", "system/Task.u"]
    jwks = { keys = [ { kty = "EC", crv = "P-384", kid = "k1", x = "…", y = "…" } ] }
    # (a key being rotated out carries ``expires = 2026-12-31T00:00:00Z``: accepted until then, DESIGN §11)
    endpoints = ["https://dac75.example.org/fhir"]   # where it may be called back (updates back, DESIGN §11)

    [[clients]]
    client_id = "cabinet-lilas"
    role = "practitioner"
    rpps = ["10100345676"]             # the professionals it acts for: it sees and decides the Tasks they own
    scopes = ["system/*.rs", "system/Task.u"]
    jwks_file = "cabinet-lilas.jwks.json"

    [[clients]]
    client_id = "gateway-67"           # a peer gateway: its keys where it publishes them, fetched (``jwks``)
    role = "platform"
    platform = "dac-67"
    scopes = ["system/ServiceRequest.c", "system/*.rs"]
    jwks_url = "https://gw67.example.org/.well-known/jwks.json"
    # How the gateway authenticates itself to this client for the updates it sends back (``outbound``):
    auth = { type = "smart-backend", token_url = "https://gw67.example.org/auth/token", client_id = "gw-75",
             key_file = "keys/gw.pem", kid = "gw-2026", scope = "system/ServiceRequest.c" }

Keys are parsed here, once (each request's assertion is checked against an already-decoded key). Only public
keys are accepted: a JWK carrying a private part (``d``) is refused, so a private key pasted by mistake stops
start-up instead of sitting in a config file. A key may carry ``expires`` (a date-time with its offset): after it,
assertions it signs are refused (``gateway clients rotate-key --grace``).

A running gateway reads the file again when it changes (``gateway.auth.reload``): the registry it built at start-up
then takes the new registrations (``ClientRegistry.take``), so that everything holding it sees them at once.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from jwt import PyJWK
from jwt.exceptions import PyJWKError

from gateway.auth.scopes import ScopeSet
from gateway.routing.callbacks import registered_endpoint

if TYPE_CHECKING:
    from gateway.auth.outbound import SmartBackendAuth

#: Signature algorithms a client assertion may use (SMART Backend Services): nothing else, never ``none``/HS*.
ASSERTION_ALGORITHMS = ("RS384", "ES384")


class AuthConfigError(ValueError):
    """Authentication cannot start: the clients file is missing, unparsable or wrong, or the secret is missing."""


class Role(StrEnum):
    SENDER = "sender"  # hospital or GP software (or a peer gateway posting to $process-message): sees what it sent
    PLATFORM = "platform"  # a DAC platform's software: sees what was routed to its platform
    OPERATOR = "operator"  # the gateway's operators: see everything, and the audit trail
    #: a physician's (a GP's) software, bound to RPPS numbers: sees and decides the Tasks its professionals own
    PRACTITIONER = "practitioner"


@dataclass(frozen=True, slots=True)
class RegisteredClient:
    client_id: str
    role: Role
    scopes: ScopeSet
    keys: Mapping[str, PyJWK]  # kid → public key
    platform: str | None = None
    #: The identifier systems this client owns: a ServiceRequest identifier or Bundle.identifier in one of them
    #: is refused from any other client (no squatting another's next identifier).
    identifier_systems: frozenset[str] = frozenset()
    rpps: tuple[str, ...] = ()  # a practitioner's professionals (RPPS numbers)
    jwks_url: str | None = None  # keys fetched from there (``gateway.auth.jwks``); ``keys`` is then empty
    auth: SmartBackendAuth | None = None  # how the gateway authenticates the updates it sends back to this client
    #: Where it may be called back (a message's MessageHeader.source.endpoint): https base URLs, or under them.
    endpoints: tuple[str, ...] = ()
    #: kid → when the key stops being accepted (a key rotated out with a grace period); keys without: no end.
    key_expiry: Mapping[str, datetime] = field(default_factory=dict)

    def key_expired(self, kid: str, now: float) -> bool:
        expiry = self.key_expiry.get(kid)
        return expiry is not None and now >= expiry.timestamp()

    def still_holds(self, kid: str | None, now: float) -> bool:
        """Whether an access token got with key ``kid`` may still be used: not once that key is removed
        (``clients remove-key``, a compromised key) or past its grace period. Keys fetched from a ``jwks_url`` are
        not known here: a key taken out there ends with the token's own lifetime. ``None``: a token that does not
        name its key."""
        if kid is None or self.jwks_url is not None:
            return True
        return kid in self.keys and not self.key_expired(kid, now)


class ClientRegistry:
    """The registered clients, by id. One registry is built at start-up and kept for the process's life: a reload
    of the clients file swaps its content (``take``), which the token endpoint, the API's checks and the delivery
    worker, all holding this object, see at their next look-up."""

    __slots__ = ("_on_take", "clients")

    def __init__(self, clients: Mapping[str, RegisteredClient]) -> None:
        self.clients = clients
        self._on_take: list[Callable[[ClientRegistry], None]] = []

    def on_take(self, listener: Callable[[ClientRegistry], None]) -> None:
        """``listener`` is called with this registry after each ``take`` (what is kept per client follows it)."""
        self._on_take.append(listener)

    def take(self, other: ClientRegistry) -> None:
        """From now on, ``other``'s registrations (one assignment: no look-up sees half of each)."""
        self.clients = other.clients
        for listener in self._on_take:
            listener(self)

    def get(self, client_id: str) -> RegisteredClient | None:
        return self.clients.get(client_id)

    def identifier_systems_of_others(self, client_id: str) -> frozenset[str]:
        """The identifier systems registered by clients other than ``client_id``."""
        return frozenset(
            system
            for other in self.clients.values()
            if other.client_id != client_id
            for system in other.identifier_systems
        )

    def outbound_auths(self) -> list[SmartBackendAuth]:
        """The registrations' ``smart-backend`` blocks (their keys are published, ``/.well-known/jwks.json``)."""
        return [client.auth for client in self.clients.values() if client.auth is not None]

    def scopes_supported(self) -> list[str]:
        return sorted({str(scope) for client in self.clients.values() for scope in client.scopes.scopes})


def _algorithm(jwk: dict[str, Any]) -> str:
    if jwk.get("kty") == "RSA":
        return "RS384"
    if jwk.get("kty") == "EC" and jwk.get("crv") == "P-384":
        return "ES384"
    raise AuthConfigError(f"key {jwk.get('kid')!r}: only RSA (RS384) and EC P-384 (ES384) keys are accepted")


def public_keys(client_id: str, jwks: Any) -> dict[str, PyJWK]:
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        raise AuthConfigError(f"client {client_id!r}: its JWKS needs a non-empty 'keys' list")
    keys: dict[str, PyJWK] = {}
    for jwk in jwks["keys"]:
        if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str) or not jwk["kid"]:
            raise AuthConfigError(f"client {client_id!r}: every key needs a 'kid'")
        jwk = {name: value for name, value in jwk.items() if name != "expires"}  # ours (key_expiry), not JOSE's
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


def key_expiry(client_id: str, jwks: Any) -> dict[str, datetime]:
    """The ``expires`` of the keys that have one: a TOML date-time, or an RFC 3339 string (a JSON key set)."""
    expiry: dict[str, datetime] = {}
    for jwk in jwks["keys"]:
        value = jwk.get("expires")
        if value is None:
            continue
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                value = None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise AuthConfigError(
                f"client {client_id!r}: key {jwk['kid']!r}: expires must be a date-time with its offset "
                "(2026-12-31T00:00:00Z)"
            )
        expiry[jwk["kid"]] = value
    return expiry


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
    rpps = _rpps(client_id, role, entry.get("rpps"))
    texts = entry.get("scopes")
    if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
        raise AuthConfigError(f"client {client_id!r}: scopes must be a list of strings")
    scopes = ScopeSet.parse(texts)
    if len(scopes.scopes) != len(texts):
        raise AuthConfigError(f"client {client_id!r}: scopes must be system/<Type>.<cruds|read|write|*>")
    if sum(name in entry for name in ("jwks", "jwks_file", "jwks_url")) != 1:
        raise AuthConfigError(
            f"client {client_id!r}: give its public keys as jwks, jwks_file or jwks_url (one of them)"
        )
    auth = _outbound_auth(client_id, entry.get("auth"), directory)
    endpoints = _endpoints(client_id, entry)
    systems = entry.get("identifier_systems", [])
    if not isinstance(systems, list) or not all(isinstance(system, str) and system for system in systems):
        raise AuthConfigError(f"client {client_id!r}: identifier_systems must be a list of system URIs")
    if "jwks_url" in entry:
        jwks_url = _jwks_url(client_id, entry["jwks_url"])
        return RegisteredClient(
            client_id, role, scopes, {}, platform, frozenset(systems), rpps, jwks_url, auth, endpoints
        )
    jwks = entry.get("jwks")
    if "jwks_file" in entry:
        path = directory / str(entry["jwks_file"])
        try:
            jwks = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise AuthConfigError(f"client {client_id!r}: {path} cannot be read as a JWKS: {exc}") from exc
    keys = public_keys(client_id, jwks)
    return RegisteredClient(
        client_id,
        role,
        scopes,
        keys,
        platform,
        frozenset(systems),
        rpps,
        None,
        auth,
        endpoints,
        key_expiry(client_id, jwks),
    )


def _rpps(client_id: str, role: Role, numbers: Any) -> tuple[str, ...]:
    """A practitioner's RPPS numbers: at least one, each 11 digits; no other role has any."""
    if role is not Role.PRACTITIONER:
        if numbers is not None:
            raise AuthConfigError(f"client {client_id!r}: only a practitioner client names rpps numbers")
        return ()
    if not isinstance(numbers, list) or not numbers or not all(isinstance(number, str) for number in numbers):
        raise AuthConfigError(f'client {client_id!r}: a practitioner needs rpps = ["<RPPS number>", …]')
    for number in numbers:
        if not (len(number) == 11 and number.isascii() and number.isdigit()):
            raise AuthConfigError(f"client {client_id!r}: rpps {number!r} is not an RPPS number (11 digits)")
    return tuple(dict.fromkeys(numbers))


#: Hosts a ``jwks_url`` may name over plain http: this machine only (tests, development). Anywhere else a key
#: set fetched without TLS could be swapped on the way, and with it who the client is.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def _jwks_url(client_id: str, url: Any) -> str:
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or not parts.hostname or parts.scheme not in ("https", "http"):
        raise AuthConfigError(f"client {client_id!r}: jwks_url must be an https URL")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        raise AuthConfigError(f"client {client_id!r}: jwks_url must be https (http only on loopback, for tests)")
    return str(url)


def _outbound_auth(client_id: str, raw: Any, directory: Path) -> SmartBackendAuth | None:
    # Imported here: the outbound side signs with this module's algorithms (a module-level import would be circular).
    from gateway.auth.outbound import SMART_BACKEND, OutboundAuthError, parse_smart_backend

    if raw is None or (isinstance(raw, dict) and raw.get("type") == "none"):
        return None
    if not isinstance(raw, dict) or raw.get("type") != SMART_BACKEND:
        raise AuthConfigError(f'client {client_id!r}: auth must be {{ type = "{SMART_BACKEND}", … }} or "none"')
    try:
        return parse_smart_backend(raw, directory)
    except OutboundAuthError as exc:
        raise AuthConfigError(f"client {client_id!r}: {exc}") from None


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
        if shared := sorted(client.identifier_systems & {s for c in clients.values() for s in c.identifier_systems}):
            raise AuthConfigError(f"{path}: identifier system {shared[0]!r} is registered for two clients")
        clients[client.client_id] = client
    return ClientRegistry(clients)
