"""A client removed from the clients file (``gateway clients remove``, taken by a running gateway) is cut off at
once: the access tokens it already holds stop working, not only its next token request — a compromised client's
removal must not leave it minutes of access."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from gateway import Settings, create_app
from gateway.auth.clients import ClientRegistry, load_clients
from gateway.routing.config import RoutingTable
from gateway.store import Database
from tests.support.auth import TEST_SECRET, SmartClient, write_clients

TOKEN_URL = "http://gateway.test/auth/token"
KEPT = SmartClient("kept", "operator", ["system/*.rs"])
REMOVED = SmartClient("removed", "sender", ["system/*.rs"])


@pytest.mark.parametrize("change", ["removed", "role changed"])
async def test_a_removed_clients_tokens_stop_working_at_once(
    tmp_path: Path, database_url: str, database: Database, routing: RoutingTable, change: str
) -> None:
    clients = write_clients(tmp_path, [KEPT, REMOVED])
    settings = Settings(database_url=database_url, auth="on", clients=clients, auth_secret=TEST_SECRET)
    app = create_app(settings, database, routing)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test") as http:
        tokens = {}
        for client in (KEPT, REMOVED):
            answer = await http.post("/auth/token", data=client.token_form(TOKEN_URL))
            assert answer.status_code == 200, answer.text
            tokens[client.client_id] = {"Authorization": f"Bearer {answer.json()['access_token']}"}
        assert (await http.get("/fhir/ServiceRequest", headers=tokens["removed"])).status_code == 200
        kept = [KEPT] if change == "removed" else [KEPT, SmartClient("removed", "platform", ["system/*.rs"], "dac-75")]
        write_clients(tmp_path / "next", kept)
        app.state.authority.registry.take(
            load_clients(tmp_path / "next" / "clients.toml", frozenset(routing.platforms))
        )
        refused = await http.get("/fhir/ServiceRequest", headers=tokens["removed"])
        assert refused.status_code == 401, refused.text
        assert (await http.get("/fhir/ServiceRequest", headers=tokens["kept"])).status_code == 200


@pytest.mark.parametrize("change", ["key removed", "grace period over"])
async def test_a_token_ends_with_the_key_it_was_got_with(
    tmp_path: Path, database_url: str, database: Database, routing: RoutingTable, change: str
) -> None:
    """A key taken out of a client's registration (``clients remove-key`` after a compromise, or the end of
    ``rotate-key --grace``) takes the access tokens got with it along, at once; tokens of the new key keep working."""
    old = SmartClient("rotating", "sender", ["system/*.rs"], kid="old-key")
    new = dataclasses.replace(old, kid="new-key")
    settings = Settings(
        database_url=database_url, auth="on", clients=write_clients(tmp_path, [KEPT, old]), auth_secret=TEST_SECRET
    )
    app = create_app(settings, database, routing)
    registry = app.state.authority.registry
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test") as http:
        answer = await http.post("/auth/token", data=old.token_form(TOKEN_URL))
        assert answer.status_code == 200, answer.text
        with_old = {"Authorization": f"Bearer {answer.json()['access_token']}"}
        assert (await http.get("/fhir/ServiceRequest", headers=with_old)).status_code == 200
        if change == "key removed":
            registry.take(load_clients(write_clients(tmp_path / "next", [KEPT, new]), frozenset(routing.platforms)))
        else:  # both keys registered, the old one's grace period over
            both = load_clients(write_clients(tmp_path / "next", [KEPT, new]), frozenset(routing.platforms))
            rotated = both.clients["rotating"]
            past = datetime.now(UTC) - timedelta(seconds=1)
            keys = {**rotated.keys, "old-key": rotated.keys["new-key"]}
            registry.take(
                ClientRegistry(
                    {**both.clients, "rotating": dataclasses.replace(rotated, keys=keys, key_expiry={"old-key": past})}
                )
            )
        refused = await http.get("/fhir/ServiceRequest", headers=with_old)
        assert refused.status_code == 401, refused.text
        assert "no longer registered" in refused.json()["issue"][0]["diagnostics"]
        answer = await http.post("/auth/token", data=new.token_form(TOKEN_URL))
        assert answer.status_code == 200, answer.text
        with_new = {"Authorization": f"Bearer {answer.json()['access_token']}"}
        assert (await http.get("/fhir/ServiceRequest", headers=with_new)).status_code == 200
