"""Two gateways federating with authentication on at both ends (DESIGN §11): A forwards referrals to B as its
``peer-gateway`` with SMART Backend Services tokens from B's token endpoint; B sends the updates back to A with
tokens from A's. Each registers the other by ``jwks_url`` (the other's ``/.well-known/jwks.json``), and access
tokens live two seconds at both ends, so that each side renews its token several times during the test."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.routing.destinations import SENDER_CALLBACKS
from tests.support.auth import TEST_SECRET, SmartClient, write_clients, write_private_key
from tests.support.processes import GatewayProcess, Platform, running, wait_until, write_routing
from tests.support.referrals import fresh

pytestmark = pytest.mark.e2e
FHIR_JSON = {"content-type": "application/fhir+json"}
HOSPITAL = SmartClient("hospital", "sender", ["system/ServiceRequest.c", "system/*.rs"])
TOKEN_LIFETIME = 2  # seconds: renewed after 1.5 s (a quarter of its life before it expires)
REFERRALS = 8


def _smart_backend(token_url: str, client_id: str, key_file: str, kid: str, algorithm: str) -> str:
    return (
        f'{{ type = "smart-backend", token_url = "{token_url}", client_id = "{client_id}", key_file = "{key_file}", '
        f'kid = "{kid}", algorithm = "{algorithm}", scope = "system/ServiceRequest.c" }}'
    )


def _registration(client_id: str, role: str, scopes: list[str], jwks_url: str, extra: str = "") -> str:
    """A ``[[clients]]`` entry naming its keys by URL; ``extra``: more TOML lines (platform, auth)."""
    scope_list = ", ".join(f'"{scope}"' for scope in scopes)
    lines = ["[[clients]]", f'client_id = "{client_id}"', f'role = "{role}"', f"scopes = [{scope_list}]"]
    return "\n".join([*lines, f'jwks_url = "{jwks_url}"', extra]) + "\n"


def _events(gateway: GatewayProcess, event: str) -> list[dict[str, Any]]:
    """The gateway's log events of that name (its log lines are JSON)."""
    events = []
    for line in gateway.log_path.read_text().splitlines():
        try:
            logged = json.loads(line)
        except ValueError:
            continue
        if isinstance(logged, dict) and logged.get("event") == event:
            events.append(logged)
    return events


def _logged(gateway: GatewayProcess, event: str, client_id: str) -> int:
    return sum(1 for logged in _events(gateway, event) if logged.get("client_id") == client_id)


def _delivered(gateway: GatewayProcess, destination: str) -> int:
    """Deliveries to destinations starting with ``destination``, delivered (from the worker's log)."""
    return len(
        {
            logged.get("delivery_id")
            for logged in _events(gateway, "delivery")
            if str(logged.get("destination")).startswith(destination) and logged.get("verdict") == "delivered"
        }
    )


def test_two_gateways_with_auth_on_federate_renewing_their_tokens(tmp_path: Path) -> None:
    platform = Platform()  # B's own DAC platform
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    gateway_a = GatewayProcess(a_dir, a_dir / "routing.toml")
    gateway_b = GatewayProcess(b_dir, b_dir / "routing.toml")
    a_root, b_root = f"http://127.0.0.1:{gateway_a.port}", f"http://127.0.0.1:{gateway_b.port}"

    # A: forwards Bas-Rhin's referrals to B, authenticated at B's token endpoint with A's EC key.
    write_private_key(a_dir / "keys" / "a.pem", "ES384")
    a_auth = _smart_backend(f"{b_root}/auth/token", "gateway-a", "keys/a.pem", "a-1", "ES384")
    write_routing(
        a_dir,
        {
            "dac-75": {"endpoint": "http://127.0.0.1:9/fhir", "finess": "750000010"},
            "dac-67": {"endpoint": gateway_b.base, "kind": "peer-gateway", "finess": "670000041", "auth": a_auth},
        },
        {"75": "dac-75", "67": "dac-67"},
    )
    a_clients = write_clients(a_dir / "clients", [HOSPITAL])
    with a_clients.open("a") as clients:  # B reports back as the platform dac-67, with the keys it publishes
        b_jwks = f"{b_root}/.well-known/jwks.json"
        clients.write(
            _registration("gateway-b", "platform", ["system/ServiceRequest.c"], b_jwks, 'platform = "dac-67"')
        )

    # B: runs the referrals' workflow for its platform; sends updates back to A with its RSA key.
    write_private_key(b_dir / "keys" / "b.pem", "RS384")
    write_routing(b_dir, {"dac-67": {"endpoint": platform.endpoint, "finess": "670000041"}}, {"67": "dac-67"})
    b_auth = _smart_backend(f"{a_root}/auth/token", "gateway-b", "keys/b.pem", "b-1", "RS384")
    (b_dir / "clients.toml").write_text(
        _registration(
            "gateway-a",
            "sender",
            ["system/ServiceRequest.c"],
            f"{a_root}/.well-known/jwks.json",
            # Where A is called back (DESIGN §11's registered endpoints), and how B authenticates there.
            f'endpoints = ["{gateway_a.base}"]\nauth = {b_auth}',
        )
    )
    secured = {"GATEWAY_AUTH": "on", "GATEWAY_AUTH_SECRET": TEST_SECRET}
    lifetime = {"GATEWAY_ACCESS_TOKEN_LIFETIME": str(TOKEN_LIFETIME)}
    gateway_a.env = secured | lifetime | {"GATEWAY_CLIENTS": str(a_clients)}
    gateway_b.env = secured | lifetime | {"GATEWAY_CLIENTS": str(b_dir / "clients.toml")}

    with running(platform, gateway_b, gateway_a):
        # Each publishes its public key, and no private part.
        a_keys = httpx.get(f"{a_root}/.well-known/jwks.json").json()["keys"]
        b_keys = httpx.get(f"{b_root}/.well-known/jwks.json").json()["keys"]
        assert [(k["kid"], k["kty"]) for k in a_keys] == [("a-1", "EC")] and "d" not in a_keys[0]
        assert [(k["kid"], k["kty"]) for k in b_keys] == [("b-1", "RSA")] and "d" not in b_keys[0]

        token_url = f"{a_root}/auth/token"
        started = time.monotonic()
        for _ in range(REFERRALS):  # spread over three seconds or more: a token's lifetime and a half
            token = httpx.post(token_url, data=HOSPITAL.token_form(token_url)).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            posted = httpx.post(gateway_a.base, json=fresh(commune="67482"), headers=FHIR_JSON | headers, timeout=30)
            assert posted.status_code == 200, posted.text
            time.sleep(0.4)

        def settled() -> bool:
            return (
                _delivered(gateway_a, "dac-67") == REFERRALS  # forwarded to B
                and len(set(platform.message_ids())) == REFERRALS  # routed by B to its platform
                # B's updates back to A: its logs name a sender's callback by one label, never by its URL
                and _delivered(gateway_b, SENDER_CALLBACKS) == REFERRALS
            )

        wait_until(settled, 30, 0.2, "referrals A → B → platform, and B's updates back to A, all delivered")
        assert time.monotonic() - started < 45

        # Nothing dead on either side (what is not dead was delivered: counted above).
        for gateway in (gateway_a, gateway_b):
            assert [e for e in _events(gateway, "delivery") if e.get("verdict") == "dead"] == []
        # A's forwardings carried B's tokens, renewed as they expired (A asked B for several), none refused.
        assert _logged(gateway_b, "token_issued", "gateway-a") >= 2
        # B's updates back to A were authenticated as the platform dac-67 with A's tokens, renewed too.
        assert _logged(gateway_a, "token_issued", "gateway-b") >= 2
        assert _logged(gateway_a, "token_refused", "gateway-b") == 0
        assert _logged(gateway_b, "token_refused", "gateway-a") == 0
        # No token, nor any other JWT (an assertion), in either log.
        for gateway in (gateway_a, gateway_b):
            assert "eyJ" not in gateway.log_path.read_text()
