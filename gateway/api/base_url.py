"""The public base URL of the FHIR API, as the client reached it: the one place that decides it.

Links, ``fullUrl``, ``Location``, ``Content-Location`` and the CapabilityStatement's ``implementation.url`` are all
absolute on it, so a client follows them to where it already talks (fhirpy refuses a next link on another host).
``GATEWAY_BASE_URL`` overrides everything; otherwise the request's own scheme and ``Host``, and — only when the peer
is a trusted proxy (``GATEWAY_TRUSTED_PROXIES``) — what it says the client used: RFC 7239 ``Forwarded`` (``proto``,
``host``) or ``X-Forwarded-Proto`` / ``-Host`` / ``-Port`` / ``-Prefix``. From anyone else those headers are
ignored: they would let a caller point the links we hand out at a host of its choosing.
"""

from __future__ import annotations

import ipaddress
import re

from starlette.requests import HTTPConnection

from gateway.config import Settings, proxy_networks

#: What a host (name, IPv4 or bracketed IPv6) with an optional port looks like; anything else is not used.
_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9._-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?$")
_PREFIX = re.compile(r"^(?:/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)*$")
_SCHEMES = frozenset({"http", "https"})
_DEFAULT_PORTS = {"http": "80", "https": "443"}
_PORT = re.compile(r"^[1-9]\d{0,4}$")
FHIR_PATH = "/fhir"


def _trusted(connection: HTTPConnection, settings: Settings) -> bool:
    peer = connection.client.host if connection.client else None
    if not peer:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in network for network in proxy_networks(settings.trusted_proxies))


def _first(value: str | None) -> str | None:
    """The first of a comma-separated list: the value the first proxy (the one the client reached) set."""
    if value is None:
        return None
    first = value.split(",", 1)[0].strip()
    return first or None


def _forwarded(value: str | None) -> dict[str, str]:
    """RFC 7239: the parameters of the first forwarded-element (``for=…;proto=https;host=example.org``)."""
    element = _first(value)
    pairs = (part.partition("=") for part in (element or "").split(";"))
    return {name.strip().lower(): raw.strip().strip('"') for name, _, raw in pairs if raw}


def _with_port(host: str, port: str, scheme: str) -> str:
    """``host`` (a name, IPv4 or bracketed IPv6, with or without a port) on ``port`` — a proxy on a non-default port
    that says so in ``X-Forwarded-Port`` only (nginx's ``$host`` has no port); none written when it is the scheme's."""
    name = host[: host.rindex("]") + 1] if host.startswith("[") and "]" in host else host.rsplit(":", 1)[0]
    return name if _DEFAULT_PORTS.get(scheme) == port else f"{name}:{port}"


def request_base_url(connection: HTTPConnection) -> str:
    """The FHIR base (``…/fhir``, no trailing slash) for this request."""
    settings: Settings = connection.app.state.settings
    if settings.base_url:
        return settings.base_url.rstrip("/")
    headers = connection.headers
    scheme = connection.url.scheme
    host = headers.get("host") or ""
    prefix = connection.scope.get("root_path", "")
    if _trusted(connection, settings):
        forwarded = _forwarded(headers.get("forwarded"))
        scheme = forwarded.get("proto") or _first(headers.get("x-forwarded-proto")) or scheme
        if "host" in forwarded:  # RFC 7239's host carries its port: nothing else says it
            host = forwarded["host"]
        else:
            host = _first(headers.get("x-forwarded-host")) or host
            port = _first(headers.get("x-forwarded-port"))
            if port is not None and _PORT.match(port) and int(port) <= 65535:
                host = _with_port(host, port, scheme.lower())
        prefix = _first(headers.get("x-forwarded-prefix")) or prefix
    scheme = scheme.lower() if scheme.lower() in _SCHEMES else connection.url.scheme
    if not _HOST.match(host):  # no Host (HTTP/1.0), or one no URL can hold: the address we were reached at
        server = connection.scope.get("server") or ("127.0.0.1", 80)
        host = f"[{server[0]}]:{server[1]}" if ":" in str(server[0]) else f"{server[0]}:{server[1]}"
    prefix = prefix.rstrip("/") if _PREFIX.match(prefix.rstrip("/")) else ""
    return f"{scheme}://{host}{prefix}{FHIR_PATH}"


def service_root(connection: HTTPConnection) -> str:
    """The root the API is served under (the base without ``/fhir``): where ``/auth/token`` is."""
    return request_base_url(connection).removesuffix(FHIR_PATH)
