"""The client-library suite: a real ``gateway serve`` driven through the FHIR clients integrators use — fhirpy
(sync and async), fhirclient (SMART on FHIR's Python client) and fhir-kit-client (Node) — unmodified.

Two gateways per module: authentication off, served with ``--host localhost`` and reached at 127.0.0.1 (links must
be on the address the client used, or fhirpy refuses to follow them), and authentication on, the clients sending
the Bearer token they got from the token endpoint. A library that is not installed skips its tests, except under
CI=true, where it fails them: CI installs them all (pyproject's test extra, tools/profiles/package.json).
"""

from __future__ import annotations

import importlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import loopback_routing
from tests.support.auth import TEST_SECRET, SmartClient, write_clients
from tests.support.processes import GatewayProcess, Platform, running
from tests.support.referrals import fresh
from tests.workflow.test_decisions_api import pta_2016_referral

pytestmark = pytest.mark.e2e
FHIR_JSON = {"content-type": "application/fhir+json"}
TOOLS = Path(__file__).resolve().parents[2] / "tools" / "profiles"
SENDER = SmartClient(
    "hospital",
    "sender",
    ["system/ServiceRequest.cr", "system/*.rs", "system/Consent.c", "system/Task.u"],
    # The source.endpoint of the example message it posts to $process-message: since the egress hardening a
    # callback must be under a registered endpoint (else a 422), which this suite's client had none of.
    endpoints=["https://logiciel-medecin.example.org/fhir"],
)


def library(name: str) -> ModuleType:
    """The client library, or a skip — a failure under CI, which installs them all."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is not installed, and CI runs the client suite: pip install -e '.[test]'")
        pytest.skip(f"{name} is not installed ({exc})")


def node_client_missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not on PATH"
    if not (TOOLS / "node_modules" / "fhir-kit-client" / "package.json").is_file():
        return "tools/profiles/node_modules lacks fhir-kit-client: run `npm ci --prefix tools/profiles`"
    return None


@dataclass
class Served:
    """A running gateway, as a client library sees it."""

    process: GatewayProcess
    authorization: str | None = None  # the Bearer header value when authentication is on

    @property
    def base(self) -> str:
        return self.process.base  # http://127.0.0.1:{port}/fhir

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": self.authorization} if self.authorization else {}

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = httpx.post(f"{self.base}/{path}", json=body, headers=FHIR_JSON | self.headers, timeout=30)
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    def referral(self, tag: str) -> str:
        """A referral posted (plain HTTP: what the libraries then work on); its ServiceRequest's reference."""
        answer = self.post("", fresh(tag=tag))
        return next(
            e["response"]["location"].split("/_history")[0]
            for e in answer["entry"]
            if e["response"]["location"].startswith("ServiceRequest/")
        )

    def gp_validation_task(self, tag: str) -> dict[str, Any]:
        """A referral waiting for the GP (the 2016 rule): its gp-validation Task, version 1."""
        answer = self.post("", pta_2016_referral(f"-{tag}"))
        reference = next(
            e["response"]["location"].split("/_history")[0]
            for e in answer["entry"]
            if e["response"]["location"].startswith("ServiceRequest/")
        )
        found = httpx.get(f"{self.base}/Task", params={"focus": reference}, headers=self.headers, timeout=30).json()
        (task,) = [
            e["resource"] for e in found["entry"] if e["resource"]["code"]["coding"][0]["code"] == "gp-validation"
        ]
        return dict(task)


@pytest.fixture(scope="package")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Authentication off; ``--host localhost``, reached at 127.0.0.1."""
    directory = tmp_path_factory.mktemp("clients-gateway")
    platform = Platform()
    routing, tokens = loopback_routing(directory, platform.endpoint)
    process = GatewayProcess(directory, routing, env=tokens, host="localhost")
    with running(platform, process):
        yield Served(process)


@pytest.fixture(scope="package")
def secure_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Authentication on; the clients send the sender's Bearer token."""
    directory = tmp_path_factory.mktemp("clients-secure-gateway")
    platform = Platform()
    routing, tokens = loopback_routing(directory, platform.endpoint)
    clients = write_clients(directory / "clients", [SENDER])
    env = tokens | {"GATEWAY_AUTH": "on", "GATEWAY_CLIENTS": str(clients), "GATEWAY_AUTH_SECRET": TEST_SECRET}
    process = GatewayProcess(directory, routing, env=env)
    with running(platform, process):
        token_url = f"http://127.0.0.1:{process.port}/auth/token"
        answer = httpx.post(token_url, data=SENDER.token_form(token_url), timeout=30)
        assert answer.status_code == 200, answer.text
        yield Served(process, f"Bearer {answer.json()['access_token']}")


@pytest.fixture(scope="package", params=["auth-off", "auth-on"])
def served(request: pytest.FixtureRequest) -> Served:
    """Each test that takes it runs against both gateways."""
    fixture = "gateway" if request.param == "auth-off" else "secure_gateway"
    result: Served = request.getfixturevalue(fixture)
    return result
