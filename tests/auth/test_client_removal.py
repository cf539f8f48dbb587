"""A client removed from the clients file (``gateway clients remove``, taken by a running gateway) is cut off at
once: the access tokens it already holds stop working, not only its next token request — a compromised client's
removal must not leave it minutes of access."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from gateway import Settings, create_app
from gateway.auth.clients import load_clients
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
