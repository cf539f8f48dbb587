"""Changing the clients file (``GATEWAY_CLIENTS``) from the command line: ``gateway clients add | list | remove |
rotate-key | remove-key`` (DESIGN §11, "Onboarding from the command line"). An edge beside ``gateway.cli``: its
checks are the rooms' own (the RPPS key from validation, the callback rule from routing, the file as auth reads it).

The file is edited as a TOML document (tomlkit): what the operator wrote — other clients, comments, order — stays
as it was; only the entry concerned changes. A client made here holds its public keys in the file itself, one
``[[clients.jwks.keys]]`` table per key. A key being rotated out carries ``expires`` (a TOML date-time): the
gateway accepts it until then (``gateway.auth.clients``), and ``remove-key`` ends it at once.

Every change is checked before it is written: the options one by one (a one-line ``RegistrationError`` naming
what is wrong), then the whole new file as the gateway reads it (``load_clients``). The file is replaced
atomically (written beside it, then renamed), so a running gateway watching it never reads half of it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import AoT, Table
from tomlkit.toml_document import TOMLDocument

from gateway.auth.clients import AuthConfigError, Role, load_clients
from gateway.auth.scopes import Scope
from gateway.routing.callbacks import registered_endpoint
from gateway.validation.identifiers import rpps_problem

#: What each role is registered for when ``--scope`` is not given (DESIGN §11): the scopes its work needs.
DEFAULT_SCOPES: dict[Role, tuple[str, ...]] = {
    Role.SENDER: ("system/ServiceRequest.c", "system/Consent.c", "system/Task.u", "system/*.rs"),
    Role.PLATFORM: ("system/*.rs", "system/Task.u", "system/Consent.c"),
    Role.PRACTITIONER: ("system/*.rs", "system/Task.u"),
    Role.OPERATOR: ("system/*.rs", "system/Task.u", "system/AuditEvent.rs"),
}
#: A client id as the command line takes it: also the default name of its key file.
_CLIENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HEADER = (
    "Registered API clients of the DAC gateway (GATEWAY_CLIENTS), DESIGN §11.\n"
    "Changed by `gateway clients add|remove|rotate-key|remove-key`; a running gateway takes changes without restart."
)


class RegistrationError(ValueError):
    """A registration cannot be made as asked: one line saying what is wrong."""


@dataclass(frozen=True, slots=True)
class NewClient:
    client_id: str
    role: Role
    scopes: tuple[str, ...]
    platform: str | None = None
    rpps: tuple[str, ...] = ()
    endpoints: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class KeyInfo:
    kid: str
    expires: datetime | None


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """One registration, as ``gateway clients list`` shows it."""

    client_id: str
    role: str
    platform: str | None
    rpps: tuple[str, ...]
    scopes: tuple[str, ...]
    endpoints: tuple[str, ...]
    keys: tuple[KeyInfo, ...]  # held in the file; none when they are named by jwks_file or jwks_url
    keys_from: str | None  # "jwks_file …" / "jwks_url …" when the keys are elsewhere


def new_client(
    client_id: str,
    role: str,
    platforms: Sequence[str],
    *,
    platform: str | None = None,
    rpps: Sequence[str] = (),
    scopes: Sequence[str] = (),
    endpoints: Sequence[str] = (),
) -> NewClient:
    """The registration the options ask for, each checked; ``platforms``: the routing file's platform keys."""
    if not _CLIENT_ID.match(client_id):
        raise RegistrationError(
            f"client id {client_id!r}: 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    try:
        chosen = Role(role)
    except ValueError:
        raise RegistrationError(f"--role {role!r}: one of {', '.join(Role)}") from None
    known = ", ".join(sorted(platforms)) or "none"
    if chosen is Role.PLATFORM and platform is None:
        raise RegistrationError(f"a platform client needs --platform KEY (the routing file's platforms: {known})")
    if chosen is not Role.PLATFORM and platform is not None:
        raise RegistrationError(f"--platform is for --role platform only (this client is a {chosen})")
    if platform is not None and platform not in platforms:
        raise RegistrationError(f"--platform {platform!r} is not a platform of the routing file (it has: {known})")
    if chosen is Role.PRACTITIONER and not rpps:
        raise RegistrationError(
            "a practitioner client needs --rpps N (the RPPS number of each professional it acts for)"
        )
    if chosen is not Role.PRACTITIONER and rpps:
        raise RegistrationError(f"--rpps is for --role practitioner only (this client is a {chosen})")
    for number in rpps:
        if problem := rpps_problem(number):
            raise RegistrationError(f"--rpps {number!r}: {problem}")
    for scope in scopes:
        if Scope.parse(scope) is None:
            raise RegistrationError(
                f"--scope {scope!r} is not a SMART system scope (system/<Type>.<cruds|read|write|*>)"
            )
    for endpoint in endpoints:
        if not registered_endpoint(endpoint, [endpoint]):
            raise RegistrationError(
                f"--endpoint {endpoint!r} is not an https URL without credentials, query or fragment "
                "(plain http only on this machine: localhost, 127.0.0.1, ::1)"
            )
    return NewClient(
        client_id,
        chosen,
        tuple(dict.fromkeys(scopes or DEFAULT_SCOPES[chosen])),
        platform,
        tuple(dict.fromkeys(rpps)),
        tuple(dict.fromkeys(endpoints)),
    )


@contextlib.contextmanager
def editing(path: Path) -> Iterator[None]:
    """Holds the clients file's lock while the block reads, changes and replaces it: ``gateway clients`` commands
    run at once take turns, so none writes back a version missing another's change (a lost update). The lock is a
    file beside it (``.NAME.lock``, 0600), not the clients file, which each change replaces."""
    directory = path.parent if str(path.parent) else Path(".")
    lock = directory / f".{path.name}.lock"
    try:
        descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise RegistrationError(f"{path} cannot be written ({exc.strerror})") from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def read_document(path: Path) -> TOMLDocument:
    """The clients file as a document; a new one (with a header comment) when the file does not exist yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        document = tomlkit.document()
        for line in _HEADER.splitlines():
            document.add(tomlkit.comment(line))
        return document
    except OSError as exc:
        raise RegistrationError(f"{path} cannot be read ({exc.strerror})") from None
    try:
        return tomlkit.parse(text)
    except TOMLKitError as exc:
        raise RegistrationError(f"{path} is not valid TOML: {exc}") from None


def _entries(document: TOMLDocument) -> list[Any]:
    entries = document.get("clients")
    return list(entries) if isinstance(entries, list) else []


def _entry(document: TOMLDocument, client_id: str, path: Path) -> Any:
    for entry in _entries(document):
        if isinstance(entry, dict) and entry.get("client_id") == client_id:
            return entry
    raise RegistrationError(f"no client {client_id!r} in {path}")


#: A public JWK's members as the file holds them, ``kid`` first.
_KEY_MEMBERS = ("kid", "kty", "crv", "alg", "use", "x", "y", "n", "e")


def _key_table(jwk: dict[str, str]) -> Table:
    table = tomlkit.table()
    for name in _KEY_MEMBERS:
        if name in jwk:
            table[name] = jwk[name]
    table.add(tomlkit.nl())  # a blank line after it: the next [[clients]] stands apart
    return table


def add_client(document: TOMLDocument, client: NewClient, jwk: dict[str, str], path: Path) -> None:
    if any(isinstance(e, dict) and e.get("client_id") == client.client_id for e in _entries(document)):
        raise RegistrationError(f"client {client.client_id!r} is already registered in {path}")
    entry = tomlkit.table()
    entry["client_id"] = client.client_id
    entry["role"] = client.role.value
    if client.platform is not None:
        entry["platform"] = client.platform
    if client.rpps:
        entry["rpps"] = list(client.rpps)
    entry["scopes"] = list(client.scopes)
    if client.endpoints:
        entry["endpoints"] = list(client.endpoints)
    keys = tomlkit.aot()
    keys.append(_key_table(jwk))
    jwks = tomlkit.table()
    jwks["keys"] = keys
    entry["jwks"] = jwks
    clients = document.get("clients")
    if isinstance(clients, list) and not isinstance(clients, AoT) and not clients:
        # ``clients = []``: what tomlkit writes once the last [[clients]] table is removed.
        document.remove("clients")
        clients = None
    if clients is None:
        clients = tomlkit.aot()
        document.add(tomlkit.nl())
        document["clients"] = clients
    elif not isinstance(clients, AoT):
        raise RegistrationError(f"{path}: 'clients' is not an array of [[clients]] tables")
    clients.append(entry)


def remove_client(document: TOMLDocument, client_id: str, path: Path) -> None:
    entry = _entry(document, client_id, path)
    clients = document["clients"]
    assert isinstance(clients, list)
    clients.remove(entry)


def _inline_keys(entry: Any, client_id: str) -> Any:
    """The client's key list held in the file (``jwks.keys``); an error when its keys are elsewhere."""
    for elsewhere in ("jwks_file", "jwks_url"):
        if elsewhere in entry:
            raise RegistrationError(
                f"client {client_id!r} names its keys by {elsewhere} ({entry[elsewhere]}): change them there"
            )
    keys = entry.get("jwks", {}).get("keys") if isinstance(entry.get("jwks"), dict) else None
    if not isinstance(keys, list):
        raise RegistrationError(f"client {client_id!r} has no jwks.keys list in the file")
    return keys


def rotate_key(
    document: TOMLDocument, client_id: str, jwk: dict[str, str], expires: datetime | None, path: Path
) -> list[str]:
    """Adds ``jwk`` to the client's keys; the keys it held end at ``expires`` (None: kept until ``remove-key``;
    one already ending sooner keeps its end). The kids of the keys it held."""
    keys = _inline_keys(_entry(document, client_id, path), client_id)
    old = [str(key.get("kid")) for key in keys]
    if expires is not None:
        for key in keys:
            current = key.get("expires")
            if not isinstance(current, datetime) or current > expires:
                key["expires"] = expires
    # A client written by hand may hold its keys as an inline array: the new key is added in the same form.
    keys.append(_key_table(jwk) if isinstance(keys, AoT) else {n: jwk[n] for n in _KEY_MEMBERS if n in jwk})
    return old


def remove_key(document: TOMLDocument, client_id: str, kid: str, path: Path) -> None:
    keys = _inline_keys(_entry(document, client_id, path), client_id)
    matching = [key for key in keys if key.get("kid") == kid]
    if not matching:
        raise RegistrationError(f"client {client_id!r} has no key {kid!r} (gateway clients list shows its keys)")
    if len(keys) == 1:
        raise RegistrationError(
            f"key {kid!r} is client {client_id!r}'s only key: rotate-key first, or remove the client"
        )
    keys.remove(matching[0])


def listing(document: TOMLDocument) -> list[ClientInfo]:
    shown = []
    for entry in _entries(document):
        if not isinstance(entry, dict):
            continue
        keys: tuple[KeyInfo, ...] = ()
        keys_from = next((f"{name} {entry[name]}" for name in ("jwks_file", "jwks_url") if name in entry), None)
        jwks = entry.get("jwks")
        if keys_from is None and isinstance(jwks, dict) and isinstance(jwks.get("keys"), list):
            keys = tuple(
                KeyInfo(str(key.get("kid")), key["expires"] if isinstance(key.get("expires"), datetime) else None)
                for key in jwks["keys"]
                if isinstance(key, dict)
            )
        shown.append(
            ClientInfo(
                str(entry.get("client_id")),
                str(entry.get("role")),
                str(entry["platform"]) if "platform" in entry else None,
                tuple(str(number) for number in entry.get("rpps", [])),
                tuple(str(scope) for scope in entry.get("scopes", [])),
                tuple(str(endpoint) for endpoint in entry.get("endpoints", [])),
                keys,
                keys_from,
            )
        )
    return shown


def write_document(path: Path, document: TOMLDocument, platforms: frozenset[str]) -> None:
    """Replaces the clients file with ``document`` once the gateway would take it (else RegistrationError, the
    file untouched). The new file keeps the old one's permissions (0600 for a new one: it says who may call)."""
    text = tomlkit.dumps(document)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o600
    try:
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise RegistrationError(f"{path} cannot be written ({exc.strerror})") from None
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, mode)
        try:
            load_clients(Path(temporary), platforms)
        except AuthConfigError as exc:
            raise RegistrationError(str(exc).replace(temporary, str(path))) from None
        os.replace(temporary, path)
    except OSError as exc:
        raise RegistrationError(f"{path} cannot be written ({exc.strerror})") from None
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
