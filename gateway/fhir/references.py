"""Which references name a resource of this gateway: one rule for every element, relative or absolute.

A relative reference (``Patient/123``) and an absolute URL on this gateway's own FHIR base
(``https://gateway.example/fhir/Patient/123``) are the same reference; any other absolute URL is external — kept as
written, never resolved here nor loaded as a local id (``https://any.host/fhir/Consent/123`` is not our
``Consent/123``). Contained references (``#…``) and a bundle's ``urn:uuid:`` / ``urn:oid:`` ids are not stored
resources either.

"Our own base" is the one value the caller passes (today the configured ``GATEWAY_BASE_URL``, else the one the API
serves: ``gateway.api.deps``); a URL is on it when, as httpx reads both, scheme, host and port are the same and
its path continues the base's path after a ``/``.
"""

from __future__ import annotations

import httpx

_NOT_STORED = ("#", "urn:")


def _url(value: str) -> httpx.URL | None:
    try:
        url = httpx.URL(value)
    except (httpx.InvalidURL, ValueError):
        return None
    return url if url.scheme in ("http", "https") and url.host else None


def on_base(url: str, base_url: str) -> str | None:
    """What follows ``base_url`` in ``url`` (``Patient/123``, ``Patient/123/_history/2``) when ``url`` is on that
    base; else None."""
    parsed, base = _url(url), _url(base_url)
    if parsed is None or base is None or parsed.query or parsed.fragment:
        return None
    if (parsed.scheme, parsed.host, parsed.port) != (base.scheme, base.host, base.port):
        return None
    prefix = base.raw_path.decode("ascii").rstrip("/") + "/"
    path = parsed.raw_path.decode("ascii")
    return path[len(prefix) :] if path.startswith(prefix) and len(path) > len(prefix) else None


def is_absolute(reference: str) -> bool:
    return reference[:8].lower().startswith(("http://", "https://"))


def local_reference(reference: str, base_url: str | None) -> str | None:
    """The relative form of ``reference`` when it names a resource of this gateway (written relatively, or as an
    absolute URL on ``base_url``); None when it is contained, a bundle's ``urn:`` id, or external."""
    if reference.startswith(_NOT_STORED) or not reference:
        return None
    if is_absolute(reference):
        return on_base(reference, base_url) if base_url else None
    return reference
