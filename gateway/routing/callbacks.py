"""Where the gateway may call a client back (DESIGN §11): a message's ``MessageHeader.source.endpoint`` (updates
back) — and a Subscription's ``channel.endpoint`` — only where the client registered it.

One rule, here, for every callback: an http(s) URL is taken when authentication is off (development); with it on,
it must be ``https`` and equal to, or under, one of the client's registered ``endpoints`` — same scheme, host and
port, its path equal or continuing it after a ``/``. Anything else that is not an http(s) URL (``urn:oid:…``,
``urn:uuid:…``) names the sender without asking to be called: no callback.

URLs are compared as httpx (which sends the updates) reads them — host lower-cased and IDNA-encoded, default ports
dropped, ``.`` and ``..`` segments resolved — and, beyond that, a URL carrying credentials, a query or a fragment,
a percent-encoded ``/`` or ``\\``, or a percent-encoded dot segment is never under a registered one: each is a way
to make a URL read as one place and be sent to another.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from urllib.parse import unquote

import httpx

from gateway.errors import BusinessRuleViolation, IssueCode

#: Longer than any endpoint is stored (``outbox.endpoint``, ``referral_origins.endpoint``).
MAX_ENDPOINT_LENGTH = 1000


def _segments(url: httpx.URL) -> list[str] | None:
    """The path's segments, percent-decoded; None when one would read differently decoded than as sent."""
    segments = []
    for raw in url.raw_path.decode("ascii").split("/")[1:]:
        segment = unquote(raw)
        if segment in (".", "..") or "/" in segment or "\\" in segment:
            return None
        segments.append(segment)
    if segments and segments[-1] == "":  # a trailing slash: the same base
        segments.pop()
    return segments


def _parsed(url: str) -> httpx.URL | None:
    """``url`` as httpx sends to it, if it is an http(s) URL without credentials, query or fragment."""
    if len(url) > MAX_ENDPOINT_LENGTH:
        return None
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError):
        return None
    if parsed.scheme not in ("http", "https") or not parsed.host or parsed.userinfo or parsed.query:
        return None
    if parsed.fragment or "#" in url or "?" in url:
        return None
    return parsed


def is_http_url(value: str) -> bool:
    """``value`` asks to be called (an http(s) URL, well-formed or not), rather than naming a sender (``urn:…``)."""
    return value[:8].lower().startswith(("http://", "https://"))


def is_loopback(host: str) -> bool:
    """``host`` is this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def registered_endpoint(url: str, endpoints: Sequence[str]) -> bool:
    """``url`` is an https URL equal to, or under, one of ``endpoints`` (a client's registration). Plain http only
    on a loopback host (two gateways on one machine: tests, development), where no network carries it; the
    registration must then name that very http origin too."""
    candidate = _parsed(url)
    if candidate is None:
        return False
    if candidate.scheme != "https" and not is_loopback(candidate.host):
        return False
    path = _segments(candidate)
    if path is None:
        return False
    for endpoint in endpoints:
        registered = _parsed(endpoint)
        base = _segments(registered) if registered is not None else None
        if registered is None or base is None:
            continue
        same_origin = (registered.scheme, registered.host, registered.port) == (
            candidate.scheme,
            candidate.host,
            candidate.port,
        )
        if same_origin and path[: len(base)] == base:
            return True
    return False


def callback_endpoint(value: object, endpoints: Sequence[str] | None, expression: str) -> str | None:
    """Where to call the client back, from what it gave at ``expression``: the URL, or None for no callback.
    ``endpoints``: the client's registered endpoints, None when authentication is off (any http(s) URL). An
    http(s) URL that may not be called is a 422 ``endpoint-not-registered`` naming the element."""
    if not isinstance(value, str) or not is_http_url(value):
        return None  # urn:oid:…, urn:uuid:…: the sender names itself, it asks for no updates
    if endpoints is None:
        return value if _parsed(value) is not None else None
    if not registered_endpoint(value, endpoints):
        raise BusinessRuleViolation.single(
            IssueCode.ENDPOINT_NOT_REGISTERED,
            "this callback endpoint is not one registered for this client: it must be an https URL equal to, or "
            "under, one of the client's registered endpoints (same host and port), without credentials or query",
            expression,
        )
    return value
