"""Clients' keys registered by ``jwks_url`` (SMART Backend Services): fetched when first needed, kept, and
fetched again when an assertion names a ``kid`` the kept set lacks — a client rotating its key publishes the new
one and uses it at once. Fetching again is bounded (at most once per ``refetch_interval`` per client), so
assertions with made-up ``kid``s cannot turn the token endpoint into a flood of requests to the client's server.
What is kept follows the registry (``retain``, at every reload of the clients file): a removed client's key set is
dropped with it — registered again, its keys are fetched afresh, never an old (perhaps compromised) key taken from
before the removal — and so is the set of a ``jwks_url`` the registration no longer names: at most one set per
client registered by ``jwks_url``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx
import structlog
from jwt import PyJWK

from gateway.auth.clients import AuthConfigError, ClientRegistry, RegisteredClient, public_keys

log = structlog.get_logger("gateway.auth")
#: A key set is kept this long, then fetched again at the next assertion (keys are rotated, and removed).
CACHE_SECONDS = 3600.0
#: The least time between two fetches of one client's key set (an unknown ``kid`` asks for one).
REFETCH_INTERVAL = 60.0
MAX_JWKS_BYTES = 64 * 1024
FETCH_TIMEOUT = 5.0


class KeysUnavailable(Exception):
    """The client's key set could not be fetched (and none is kept): the message says why, for the log."""


@dataclass(slots=True)
class _Fetched:
    keys: Mapping[str, PyJWK]
    at: float  # monotonic


class RemoteKeys:
    """The key sets of the clients registered by ``jwks_url``, fetched with ``client`` (made here by default:
    a short timeout, no redirects to follow elsewhere)."""

    def __init__(
        self,
        client: httpx.AsyncClient | None = None,
        *,
        refetch_interval: float = REFETCH_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._refetch_interval = refetch_interval
        self._clock = clock
        self._fetched: dict[tuple[str, str], _Fetched] = {}  # by client id and URL (a registration may change)
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._registered: frozenset[tuple[str, str]] | None = None  # what may be kept (``retain``); None: any

    def retain(self, registry: ClientRegistry) -> None:
        """Keep only the key sets of ``registry``'s clients registered by ``jwks_url``, at that URL: what a removed
        client, or a moved URL, left is dropped now; from now on only those are kept."""
        registered = frozenset(
            (client.client_id, client.jwks_url) for client in registry.clients.values() if client.jwks_url is not None
        )
        self._registered = registered
        for where in [where for where in self._fetched if where not in registered]:
            del self._fetched[where]
        for where in [where for where, lock in self._locks.items() if where not in registered and not lock.locked()]:
            del self._locks[where]

    def kept(self) -> set[str]:
        """The clients whose key set is kept."""
        return {client_id for client_id, _ in self._fetched}

    async def keys_of(self, client: RegisteredClient, kid: str | None) -> Mapping[str, PyJWK]:
        """The client's keys, fetched if none are kept, if they are old, or if ``kid`` is not among them (and the
        last fetch is older than the refetch interval)."""
        if client.jwks_url is None:
            return client.keys
        where = (client.client_id, client.jwks_url)
        fetched = self._fetched.get(where)
        if fetched is not None and not self._due(fetched, kid):
            return fetched.keys
        async with self._locks.setdefault(where, asyncio.Lock()):
            fetched = self._fetched.get(where)  # another assertion may have fetched meanwhile
            if fetched is not None and not self._due(fetched, kid):
                return fetched.keys
            try:
                keys = await self._fetch(client.client_id, client.jwks_url)
            except KeysUnavailable as exc:
                log.warning("jwks_fetch_failed", client_id=client.client_id, reason=str(exc))
                if fetched is None:
                    raise
                self._keep(where, fetched.keys)  # not again at once
                return fetched.keys
            self._keep(where, keys)
            return keys

    def _keep(self, where: tuple[str, str], keys: Mapping[str, PyJWK]) -> None:
        """Keep the set fetched — unless its client was removed (or its URL moved) while it was being fetched."""
        if self._registered is None or where in self._registered:
            self._fetched[where] = _Fetched(keys, self._clock())

    def _due(self, fetched: _Fetched, kid: str | None) -> bool:
        age = self._clock() - fetched.at
        if age >= CACHE_SECONDS:
            return True
        return kid not in fetched.keys and age >= self._refetch_interval

    async def _fetch(self, client_id: str, url: str) -> Mapping[str, PyJWK]:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=FETCH_TIMEOUT, headers={"User-Agent": "dac-gateway"})
        try:
            # Streamed and cut at the limit: a client's server answering without end (or a huge body) costs us
            # MAX_JWKS_BYTES of memory at most, never the whole body.
            async with self._client.stream("GET", url, headers={"Accept": "application/json"}) as response:
                if response.status_code != 200:
                    raise KeysUnavailable(f"jwks_url answered HTTP {response.status_code}")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        raise KeysUnavailable(f"jwks_url answered more than {MAX_JWKS_BYTES} bytes")
        except httpx.HTTPError as exc:
            raise KeysUnavailable(f"jwks_url unreachable ({type(exc).__name__})") from None
        try:
            return public_keys(client_id, json.loads(body))
        except (ValueError, AuthConfigError) as exc:  # AuthConfigError is a ValueError; its message names no key
            raise KeysUnavailable(f"jwks_url answered no usable key set: {exc}") from None

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
