"""End-to-end fixtures: a real ``gateway serve`` process on loopback, with a database of its own.

``api_gateway`` (module scope) starts ``gateway serve`` on 127.0.0.1 on a free port, with a scratch database from
``tests.support.databases`` (a SQLite file, or a fresh PostgreSQL database migrated with ``gateway db upgrade``
first, depending on GATEWAY_DATABASE_URL), waits for ``GET /fhir/metadata`` to answer 200, and at the end stops
the process (terminate, then kill) and drops its database. Its stdout and stderr go to one file, which tests read
(log lines are JSON and carry no patient data).

The routing file is the repository's example, with every platform endpoint pointed at a loopback platform that
accepts every delivery: the delivery worker runs as in production, without leaving the machine.

Everything a gateway emits in these tests — each FHIR answer an httpx client receives, each message a loopback
platform receives — is checked after each test by two independent validators (``tests.support.fhir_validators``;
the session's ``fhir_validators`` fixture is in tests/conftest.py): an error fails the test with the validators'
messages and the URL that produced the body.
"""

from __future__ import annotations

import re
import shutil
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import EXAMPLE_ROUTING
from tests.e2e.referrals import Bundle, patient_data
from tests.support.fhir_validators import EMITTED, FhirValidators, recording_httpx
from tests.support.processes import GatewayProcess, Platform, running

#: Small enough that a 413 costs little; every example (≤ 16 KB) fits many times over.
MAX_BODY_BYTES = 300_000


def loopback_routing(directory: Path, endpoint: str) -> tuple[Path, dict[str, str]]:
    """The example routing file with every endpoint replaced by ``endpoint``; also the environment its
    bearer tokens are read from (dummy values)."""
    text = EXAMPLE_ROUTING.read_text(encoding="utf-8")
    parsed: dict[str, Any] = tomllib.loads(text)
    tokens = {
        str(platform["auth"]["token_env"]): "e2e-token"
        for platform in parsed["platforms"].values()
        if isinstance(platform.get("auth"), dict) and platform["auth"].get("token_env")
    }
    directory.mkdir(parents=True, exist_ok=True)
    routing = directory / "routing.toml"
    routing.write_text(re.sub(r'(?m)^endpoint\s*=\s*"[^"]*"', f'endpoint = "{endpoint}"', text), encoding="utf-8")
    shutil.copy(EXAMPLE_ROUTING.parent / str(parsed["territories"]), directory / str(parsed["territories"]))
    return routing, tokens


@pytest.fixture(scope="package", autouse=True)
def _recording_emitted(fhir_validators: FhirValidators | None) -> Iterator[None]:
    """While this suite runs, what its gateways emit goes to the validators as it comes."""
    if fhir_validators is None:
        yield
        return
    EMITTED.listener = fhir_validators.submit
    try:
        with recording_httpx():
            yield
    finally:
        EMITTED.listener = None


@pytest.fixture(autouse=True)
def _emitted_fhir_is_valid(fhir_validators: FhirValidators | None) -> Iterator[None]:
    """After each test: what the gateways emitted during it passes both validators (and ours where we shape it)."""
    yield
    if fhir_validators is None:
        return
    verdict = fhir_validators.collect()
    if verdict.failures:
        pytest.fail(
            f"{len(verdict.failures)} findings of the independent FHIR validators on what the gateway emitted:\n"
            + "\n".join(verdict.failures),
            pytrace=False,
        )


@dataclass
class ApiGateway:
    """A running gateway, and what the tests sent it that must never appear in its logs."""

    process: GatewayProcess
    platform: Platform
    max_body_bytes: int
    sensitive: set[str] = field(default_factory=set)

    @property
    def base(self) -> str:
        return self.process.base

    def remember(self, bundle: Bundle) -> None:
        self.sensitive |= patient_data(bundle)

    def log_lines(self) -> list[str]:
        return [line for line in self.process.log_path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def api_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiGateway]:
    directory = tmp_path_factory.mktemp("api-gateway")
    platform = Platform()
    routing, tokens = loopback_routing(directory, platform.endpoint)
    process = GatewayProcess(directory, routing, env={"GATEWAY_MAX_BODY_BYTES": str(MAX_BODY_BYTES), **tokens})
    with running(platform, process):
        yield ApiGateway(process, platform, MAX_BODY_BYTES)


@pytest.fixture(scope="module")
def api(api_gateway: ApiGateway) -> Iterator[httpx.Client]:
    """A client on the gateway's FHIR base (``/fhir``)."""
    with httpx.Client(base_url=api_gateway.base, timeout=30) as client:
        yield client
