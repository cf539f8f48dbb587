"""Keys by URL, both ways: clients registered by ``jwks_url`` (fetched, kept, fetched again on an unknown ``kid``,
boundedly), and the gateway's own public keys at ``GET /.well-known/jwks.json``. The clients' servers are respx
mocks; the application is reached in-process (ASGI), which respx leaves alone."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import respx
from fastapi import FastAPI

from gateway import Settings, create_app
from gateway.auth.clients import AuthConfigError, ClientRegistry, RegisteredClient, Role, load_clients
from gateway.auth.jwks import KeysUnavailable, RemoteKeys
from gateway.auth.outbound import parse_smart_backend
from gateway.auth.reload import ClientsReloader
from gateway.auth.scopes import ScopeSet
from gateway.routing.config import PlatformAuth, RoutingTable
from gateway.store import Database
from tests.auth.conftest import TOKEN_URL
from tests.support.auth import TEST_SECRET, SmartClient, write_private_key

JWKS_URL = "https://peer.example.org/.well-known/jwks.json"
PEER = SmartClient("peer-gw", "sender", ["system/ServiceRequest.c"], kid="old")
ROTATED = SmartClient("peer-gw", "sender", ["system/ServiceRequest.c"], algorithm="RS384", kid="new")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _registered(url: str = JWKS_URL) -> RegisteredClient:
    return RegisteredClient("peer-gw", Role.SENDER, ScopeSet.parse(["system/ServiceRequest.c"]), {}, jwks_url=url)


def _jwks(*clients: SmartClient) -> httpx.Response:
    return httpx.Response(200, json={"keys": [client.public_jwk() for client in clients]})


@respx.mock
async def test_keys_are_fetched_once_then_again_for_an_unknown_kid_at_most_once_per_interval() -> None:
    route = respx.get(JWKS_URL).mock(side_effect=[_jwks(PEER), _jwks(PEER), _jwks(PEER, ROTATED)])
    clock = Clock()
    keys = RemoteKeys(refetch_interval=60, clock=clock)
    client = _registered()
    assert set(await keys.keys_of(client, "old")) == {"old"}
    assert set(await keys.keys_of(client, "old")) == {"old"} and route.call_count == 1
    clock.now += 61
    assert set(await keys.keys_of(client, "new")) == {"old"} and route.call_count == 2  # not published yet
    for _ in range(5):  # made-up kids: no more fetches within the interval
        assert set(await keys.keys_of(client, "made-up")) == {"old"}
    assert route.call_count == 2
    clock.now += 61
    assert set(await keys.keys_of(client, "new")) == {"old", "new"} and route.call_count == 3
    await keys.aclose()


@respx.mock
async def test_keys_kept_are_used_while_the_url_fails_and_none_kept_is_an_error() -> None:
    respx.get(JWKS_URL).mock(side_effect=[_jwks(PEER), httpx.Response(503)])
    clock = Clock()
    keys = RemoteKeys(refetch_interval=1, clock=clock)
    assert set(await keys.keys_of(_registered(), "old")) == {"old"}
    clock.now += 2
    assert set(await keys.keys_of(_registered(), "new")) == {"old"}
    respx.get("https://down.example.org/jwks").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(KeysUnavailable, match="unreachable"):
        await keys.keys_of(_registered("https://down.example.org/jwks"), "old")
    await keys.aclose()


@respx.mock
async def test_a_key_set_without_end_is_cut_at_the_limit_not_read_whole() -> None:
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"keys": ['
        while True:  # a server answering for ever: the gateway must stop reading, not run out of memory
            sent += 1
            yield b" " * 4096

    respx.get(JWKS_URL).mock(return_value=httpx.Response(200, content=endless()))
    keys = RemoteKeys()
    with pytest.raises(KeysUnavailable, match="more than 65536 bytes"):
        await keys.keys_of(_registered(), "old")
    assert sent <= 64 * 1024 // 4096 + 1
    await keys.aclose()


@respx.mock
async def test_a_published_private_key_is_not_taken() -> None:
    private = {**PEER.public_jwk(), "d": "c2VjcmV0"}
    respx.get(JWKS_URL).mock(return_value=httpx.Response(200, json={"keys": [private]}))
    with pytest.raises(KeysUnavailable, match="private key"):
        await RemoteKeys().keys_of(_registered(), "old")


@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        (JWKS_URL, True),
        ("http://127.0.0.1:8081/.well-known/jwks.json", True),
        ("http://localhost/jwks.json", True),
        ("http://peer.example.org/.well-known/jwks.json", False),
        ("file:///etc/jwks.json", False),
    ],
)
def test_a_jwks_url_is_https_or_loopback(tmp_path: Path, url: str, accepted: bool) -> None:
    path = tmp_path / "clients.toml"
    path.write_text(f'[[clients]]\nclient_id = "x"\nrole = "sender"\nscopes = []\njwks_url = "{url}"\n')
    if accepted:
        assert load_clients(path, frozenset()).clients["x"].jwks_url == url
    else:
        with pytest.raises(AuthConfigError, match="jwks_url must be"):
            load_clients(path, frozenset())


def test_a_registration_names_its_keys_one_way_and_its_auth_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "clients.toml"
    path.write_text(
        f'[[clients]]\nclient_id = "x"\nrole = "sender"\nscopes = []\njwks_url = "{JWKS_URL}"\njwks_file = "k"\n'
    )
    with pytest.raises(AuthConfigError, match="one of them"):
        load_clients(path, frozenset())
    path.write_text(
        f'[[clients]]\nclient_id = "x"\nrole = "sender"\nscopes = []\njwks_url = "{JWKS_URL}"\n'
        'auth = { type = "smart-backend", token_url = "https://x.example.org/auth/token", client_id = "gw", '
        'key_file = "missing.pem", kid = "k", scope = "system/ServiceRequest.c" }\n'
    )
    with pytest.raises(AuthConfigError, match=r"client 'x': key_file .*missing\.pem cannot be read"):
        load_clients(path, frozenset())
    write_private_key(tmp_path / "missing.pem")
    auth = load_clients(path, frozenset()).clients["x"].auth
    assert auth is not None and (auth.token_url, auth.client_id, auth.key.kid) == (
        "https://x.example.org/auth/token",
        "gw",
        "k",
    )


# --- through the token endpoint, and the published keys ----------------------------------------------------------


@pytest.fixture
def jwks_clients(tmp_path: Path) -> Path:
    write_private_key(tmp_path / "gw.pem", "RS384")
    path = tmp_path / "clients.toml"
    path.write_text(
        f'[[clients]]\nclient_id = "peer-gw"\nrole = "sender"\nscopes = ["system/ServiceRequest.c"]\n'
        f'jwks_url = "{JWKS_URL}"\n'
        'auth = { type = "smart-backend", token_url = "https://peer.example.org/auth/token", client_id = "gw-75", '
        'key_file = "gw.pem", kid = "for-updates", algorithm = "RS384", scope = "system/ServiceRequest.c" }\n'
    )
    return path


@pytest.fixture
async def jwks_app(
    database_url: str, database: Database, routing: RoutingTable, jwks_clients: Path, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    write_private_key(tmp_path / "keys" / "routing.pem")
    block = {"token_url": "https://dac75.example.org/auth/token", "client_id": "gw", "key_file": "keys/routing.pem"}
    smart = parse_smart_backend(block | {"kid": "for-dac75", "scope": "system/*.c"}, tmp_path)
    paris = dataclasses.replace(routing.platforms["dac-75"], auth=PlatformAuth("smart-backend", smart=smart))
    routing = dataclasses.replace(routing, platforms={**routing.platforms, "dac-75": paris})
    settings = Settings(database_url=database_url, auth="on", clients=jwks_clients, auth_secret=TEST_SECRET)
    app: FastAPI = create_app(settings, database, routing)
    # A client's key set is looked at again for an unknown kid without waiting (the bound is tested above).
    remote_keys = RemoteKeys(refetch_interval=0)
    app.state.authority = dataclasses.replace(app.state.authority, remote_keys=remote_keys)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test") as client:
        yield client
    await remote_keys.aclose()


@respx.mock
async def test_a_client_registered_by_jwks_url_gets_a_token_and_after_rotating_its_key_too(
    jwks_app: httpx.AsyncClient,
) -> None:
    route = respx.get(JWKS_URL).mock(side_effect=[_jwks(PEER), _jwks(PEER, ROTATED)])
    first = await jwks_app.post("/auth/token", data=PEER.token_form(TOKEN_URL))
    assert first.status_code == 200, first.text
    again = await jwks_app.post("/auth/token", data=PEER.token_form(TOKEN_URL))
    assert again.status_code == 200 and route.call_count == 1  # the keys are kept
    # The client rotates its key, publishing the new one: the unknown kid makes the gateway look again.
    rotated = await jwks_app.post("/auth/token", data=ROTATED.token_form(TOKEN_URL))
    assert rotated.status_code == 200, rotated.text
    assert route.call_count == 2


@respx.mock
async def test_a_client_whose_jwks_url_is_down_is_refused_without_a_500(jwks_app: httpx.AsyncClient) -> None:
    respx.get(JWKS_URL).mock(side_effect=httpx.ConnectError("refused"))
    answer = await jwks_app.post("/auth/token", data=PEER.token_form(TOKEN_URL))
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_client"
    assert "jwks_url" in answer.json()["error_description"]


async def test_the_gateway_publishes_the_public_keys_it_signs_with(jwks_app: httpx.AsyncClient) -> None:
    answer = await jwks_app.get("/.well-known/jwks.json")
    assert answer.status_code == 200
    keys = {key["kid"]: key for key in answer.json()["keys"]}
    assert set(keys) == {"for-dac75", "for-updates"}
    assert (keys["for-dac75"]["kty"], keys["for-dac75"]["alg"]) == ("EC", "ES384")
    assert (keys["for-updates"]["kty"], keys["for-updates"]["alg"]) == ("RSA", "RS384")
    assert not {"d", "p", "q", "dp", "dq", "qi"} & {name for key in keys.values() for name in key}
    assert "PRIVATE" not in answer.text and json.loads(answer.text) == answer.json()


async def test_without_any_smart_backend_block_the_key_set_is_empty(client: httpx.AsyncClient) -> None:
    assert (await client.get("/.well-known/jwks.json")).json() == {"keys": []}


def test_registry_lists_its_outbound_blocks(jwks_clients: Path) -> None:
    registry: ClientRegistry = load_clients(jwks_clients, frozenset())
    assert [auth.key.kid for auth in registry.outbound_auths()] == ["for-updates"]


def _rewrite(path: Path, text: str) -> str:
    """The clients file made ``text``; what it was."""
    before = path.read_text()
    path.write_text(text)
    return before


@respx.mock
async def test_a_removed_clients_fetched_keys_are_dropped_with_it(
    jwks_app: httpx.AsyncClient, jwks_clients: Path
) -> None:
    """A client registered by ``jwks_url`` and removed (``gateway clients remove``, taken by a reload) leaves no
    key set behind: its assertion is refused, and registered again at the same URL — whose server now publishes
    another key, the old one compromised — its old key is not taken from what was kept before the removal."""
    route = respx.get(JWKS_URL).mock(side_effect=[_jwks(PEER), _jwks(ROTATED)])
    authority = jwks_app._transport.app.state.authority  # type: ignore[attr-defined]
    assert (await jwks_app.post("/auth/token", data=PEER.token_form(TOKEN_URL))).status_code == 200
    assert authority.remote_keys.kept() == {"peer-gw"} and route.call_count == 1
    registered = _rewrite(jwks_clients, "clients = []\n")  # gateway clients remove peer-gw, then a reload
    reloader = ClientsReloader(jwks_clients, frozenset(), authority.registry)
    assert reloader.reload()
    assert authority.remote_keys.kept() == set()
    refused = await jwks_app.post("/auth/token", data=PEER.token_form(TOKEN_URL))
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_client"
    _rewrite(jwks_clients, registered)
    assert reloader.reload()
    old_key = await jwks_app.post("/auth/token", data=PEER.token_form(TOKEN_URL))
    assert old_key.status_code == 400 and old_key.json()["error"] == "invalid_client", old_key.text
    assert route.call_count == 2  # fetched again: what the URL publishes now
    assert (await jwks_app.post("/auth/token", data=ROTATED.token_form(TOKEN_URL))).status_code == 200


@respx.mock
async def test_key_sets_are_kept_only_for_registered_clients_at_their_registered_url() -> None:
    """The kept key sets are bounded by the registry: a client's moved ``jwks_url`` drops the set of the old one, and
    a fetch that ends after its client was removed keeps nothing."""
    other = "https://peer.example.org/keys/v2.json"
    respx.get(JWKS_URL).mock(return_value=_jwks(PEER))
    respx.get(other).mock(return_value=_jwks(ROTATED))
    registry = ClientRegistry({"peer-gw": _registered()})
    keys = RemoteKeys()
    keys.retain(registry)
    assert set(await keys.keys_of(_registered(), "old")) == {"old"} and keys.kept() == {"peer-gw"}
    registry.take(ClientRegistry({"peer-gw": _registered(other)}))
    keys.retain(registry)
    assert keys.kept() == set()
    assert set(await keys.keys_of(_registered(other), "new")) == {"new"} and keys.kept() == {"peer-gw"}
    keys.retain(ClientRegistry({}))
    assert set(await keys.keys_of(_registered(other), "new")) == {"new"}  # answered, not kept
    assert keys.kept() == set()
    await keys.aclose()
