"""Authentication end to end: a real ``gateway serve`` with authentication on, clients doing the SMART Backend
Services client-credentials dance with keys made in the test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ApiGateway
from tests.support.auth import TEST_SECRET, SmartClient, write_clients
from tests.support.databases import USES_POSTGRESQL
from tests.support.processes import GatewayProcess, Platform, running, wait_until, write_routing
from tests.support.referrals import fresh

pytestmark = pytest.mark.e2e
FHIR_JSON = {"content-type": "application/fhir+json"}
SENDER = SmartClient("hospital", "sender", ["system/ServiceRequest.cr", "system/*.rs"])
PARIS_APP = SmartClient("dac75-app", "platform", ["system/*.rs", "system/Task.u"], "dac-75", algorithm="RS384")
LILLE_APP = SmartClient("dac59-app", "platform", ["system/*.rs", "system/Task.u"], "dac-59")
OPERATOR = SmartClient("ops", "operator", ["system/AuditEvent.rs"])


@dataclass
class SecureGateway:
    process: GatewayProcess

    @property
    def token_url(self) -> str:
        return f"http://127.0.0.1:{self.process.port}/auth/token"

    def headers(self, client: SmartClient) -> dict[str, str]:
        answer = httpx.post(self.token_url, data=client.token_form(self.token_url), timeout=30)
        assert answer.status_code == 200, answer.text
        return {"Authorization": f"Bearer {answer.json()['access_token']}"}


@pytest.fixture(scope="module")
def secure_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureGateway]:
    directory = tmp_path_factory.mktemp("secure-gateway")
    platform = Platform()
    routing = write_routing(
        directory,
        {
            "dac-75": {"endpoint": platform.endpoint, "finess": "750000010"},
            "dac-59": {"endpoint": platform.endpoint, "finess": "590000022"},
        },
        {"75": "dac-75", "59": "dac-59"},
    )
    clients = write_clients(directory / "clients", [SENDER, PARIS_APP, LILLE_APP, OPERATOR])
    env = {"GATEWAY_AUTH": "on", "GATEWAY_CLIENTS": str(clients), "GATEWAY_AUTH_SECRET": TEST_SECRET}
    process = GatewayProcess(directory, routing, env=env)
    with running(platform, process):
        yield SecureGateway(process)


def test_client_credentials_then_post_read_back_and_only_the_platform_routed_to_sees_it(
    secure_gateway: SecureGateway,
) -> None:
    base = secure_gateway.process.base
    assert httpx.post(base, json=fresh(commune="75056"), headers=FHIR_JSON).status_code == 401
    sender = secure_gateway.headers(SENDER)
    posted = httpx.post(base, json=fresh(commune="75056"), headers=FHIR_JSON | sender, timeout=30)
    assert posted.status_code == 200, posted.text
    location = next(e["response"]["location"] for e in posted.json()["entry"] if "/ServiceRequest/" in e["fullUrl"])
    service_request = location.split("/_history")[0]
    read = httpx.get(f"{base}/{service_request}", headers=sender)
    assert read.status_code == 200 and read.json()["resourceType"] == "ServiceRequest"
    assert httpx.get(f"{base}/{service_request}", headers=secure_gateway.headers(PARIS_APP)).status_code == 200
    # Another platform's client: the referral does not exist for it, in a read as in a search.
    lille = secure_gateway.headers(LILLE_APP)
    assert httpx.get(f"{base}/{service_request}", headers=lille).status_code == 404
    assert httpx.get(f"{base}/ServiceRequest", headers=lille).json()["total"] == 0

    # The audit trail: the intake in its transaction, the refused read through the buffered writer.
    operator = secure_gateway.headers(OPERATOR)

    def audited(**params: str) -> int:
        answer = httpx.get(f"{base}/AuditEvent", params=params, headers=operator)
        assert answer.status_code == 200, answer.text
        return int(answer.json()["total"])

    assert audited(subtype="transaction", agent="hospital", entity=service_request) == 1
    wait_until(lambda: audited(subtype="read", agent="dac59-app", outcome="4") == 1, 10, what="buffered audit")


def test_the_smart_configuration_names_this_gateways_token_endpoint(secure_gateway: SecureGateway) -> None:
    document = httpx.get(f"http://127.0.0.1:{secure_gateway.process.port}/.well-known/smart-configuration").json()
    assert document["token_endpoint"] == secure_gateway.token_url


def test_a_gateway_without_clients_file_refuses_to_start(tmp_path: Path) -> None:
    routing = write_routing(tmp_path, {"dac-75": {"endpoint": "http://127.0.0.1:9/fhir", "finess": "750000010"}}, {})
    process = GatewayProcess(tmp_path, routing, env={"GATEWAY_AUTH": "on", "GATEWAY_AUTH_SECRET": TEST_SECRET})
    process.database_url = "sqlite:///" + str(tmp_path / "db.sqlite")
    started = process.cli("serve", "--port", str(process.port))
    assert started.returncode == 2
    assert "GATEWAY_CLIENTS" in started.stderr


def test_auth_off_is_announced_in_the_log(api_gateway: ApiGateway) -> None:
    warnings = [line for line in api_gateway.log_lines() if "authentication_off" in line]
    assert warnings and '"level": "warning"' in warnings[0]


@pytest.mark.skipif(not USES_POSTGRESQL, reason="several API processes share one PostgreSQL database")
def test_two_api_processes_share_tokens_and_the_replay_cache(tmp_path: Path) -> None:
    """A token issued by one process is accepted by the other; an assertion used once is refused by both."""
    routing = write_routing(tmp_path, {"dac-75": {"endpoint": "http://127.0.0.1:9/fhir", "finess": "750000010"}}, {})
    clients = write_clients(tmp_path / "clients", [SENDER])
    env = {"GATEWAY_AUTH": "on", "GATEWAY_CLIENTS": str(clients), "GATEWAY_AUTH_SECRET": TEST_SECRET}
    gateway = GatewayProcess(tmp_path, routing, env=env, workers=2)
    with running(gateway):
        token_url = f"http://127.0.0.1:{gateway.port}/auth/token"
        form = SENDER.token_form(token_url)
        # A new connection each time: the kernel spreads them over both processes.
        answers = [httpx.post(token_url, data=form, headers={"Connection": "close"}) for _ in range(8)]
        assert [a.status_code for a in answers] == [200] + [400] * 7
        headers = {"Authorization": f"Bearer {answers[0].json()['access_token']}", "Connection": "close"}
        assert {httpx.get(f"{gateway.base}/ServiceRequest", headers=headers).status_code for _ in range(10)} == {200}
