"""The conformance kit against real ``gateway serve`` processes: every example passes, twice in a row against the
same server (the examples that share identifiers are idempotent replays), with a JUnit report; and a wrong
expectation fails it, exit status 1, each failing line naming its example."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import loopback_routing
from tests.support.auth import TEST_SECRET, SmartClient, write_clients, write_private_key
from tests.support.processes import GATEWAY, GatewayProcess, Platform, running

pytestmark = pytest.mark.e2e
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXPECTED = json.loads((EXAMPLES / "expected.json").read_text())


def kit(base: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GATEWAY, "kit", "run", "--base", base, "--examples", str(EXAMPLES), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    directory = tmp_path_factory.mktemp("kit-gateway")
    platform = Platform()
    routing, tokens = loopback_routing(directory, platform.endpoint)
    process = GatewayProcess(directory, routing, env=tokens)
    with running(platform, process):
        yield process


def test_every_example_has_its_expectation_and_every_expectation_its_example() -> None:
    from gateway.kit import discover

    assert sorted(example.name for example in discover(EXAMPLES)) == sorted(EXPECTED)
    invalid = json.loads((EXAMPLES / "invalid" / "expected.json").read_text())
    for name, outcome in invalid.items():  # the two records of the invalid examples agree
        recorded = EXPECTED[f"invalid/{name}"]
        assert recorded["status"] == outcome["status"], name
        wanted = sorted(json.dumps({"code": i["code"], "expression": i["expression"]}) for i in outcome["issues"])
        assert sorted(json.dumps(i, sort_keys=True) for i in recorded["issues"]) == wanted, name


def test_the_kit_passes_twice_in_a_row_against_the_same_server(gateway: GatewayProcess, tmp_path: Path) -> None:
    for run in (1, 2):
        report = tmp_path / f"kit-{run}.xml"
        done = kit(gateway.base, "--junit", str(report))
        lines = done.stdout.splitlines()
        assert done.returncode == 0, done.stdout + done.stderr
        assert lines[-1] == f"{len(EXPECTED)} passed, 0 failed"
        assert [line.split()[1] for line in lines[:-1]] == list(EXPECTED)  # one line per example, in its order
        suite = ET.parse(report).getroot()
        assert suite.get("tests") == str(len(EXPECTED)) and suite.get("failures") == "0"


def test_a_wrong_expectation_fails_the_kit_naming_its_example(gateway: GatewayProcess, tmp_path: Path) -> None:
    """As against a server that routed elsewhere: the expectation of referral-gp.json names another platform."""
    folder = tmp_path / "examples"
    (folder / "invalid").mkdir(parents=True)
    chosen = ["referral-gp.json", "referral-no-gp.json", "invalid/bad-ins-key.json"]
    for name in chosen:
        shutil.copy(EXAMPLES / name, folder / name)
    expected = {name: EXPECTED[name] for name in chosen}
    expected["referral-gp.json"] = expected["referral-gp.json"] | {
        "platform": {"system": "https://finess.esante.gouv.fr", "value": "130000005"}
    }
    expected["invalid/bad-ins-key.json"] = {"status": 422, "issues": [{"code": "rpps-key-invalid", "expression": "x"}]}
    (folder / "expected.json").write_text(json.dumps(expected))
    report = tmp_path / "kit.xml"
    done = subprocess.run(
        [*GATEWAY, "kit", "run", "--base", gateway.base, "--examples", str(folder), "--junit", str(report)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("FAIL  referral-gp.json — platform") and "130000005" in lines[0]
    assert lines[1] == "ok    referral-no-gp.json"
    assert lines[2].startswith("FAIL  invalid/bad-ins-key.json — issues") and "ins-key-invalid" in lines[2]
    assert lines[-1] == "1 passed, 2 failed"
    cases = {case.get("name"): case for case in ET.parse(report).getroot()}
    assert cases["referral-gp.json"].find("failure") is not None
    assert cases["referral-no-gp.json"].find("failure") is None


def _thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638: the kid ``gateway clients add`` registers, and the kit's token request names."""
    members = {key: jwk[key] for key in ("crv", "kty", "x", "y")}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def test_the_kit_passes_with_authentication_on_as_a_registered_sender(tmp_path: Path) -> None:
    sender = SmartClient(
        "kit-sender",
        "sender",
        ["system/ServiceRequest.c", "system/Consent.c", "system/*.rs"],
        # The callbacks the example messages name (MessageHeader.source.endpoint) are registered for it.
        endpoints=["https://logiciel-medecin.example.org/fhir", "https://hopital-exemple.fr/fhir"],
    )
    sender.kid = _thumbprint({k: str(v) for k, v in sender.public_jwk().items()})
    key = write_private_key(tmp_path / "kit-sender.pem")
    platform = Platform()
    routing, tokens = loopback_routing(tmp_path, platform.endpoint)
    clients = write_clients(tmp_path / "clients", [sender])
    env = {**tokens, "GATEWAY_AUTH": "on", "GATEWAY_CLIENTS": str(clients), "GATEWAY_AUTH_SECRET": TEST_SECRET}
    process = GatewayProcess(tmp_path, routing, env=env)
    with running(platform, process):
        refused = kit(process.base)
        assert refused.returncode == 1 and refused.stdout.splitlines()[-1] == f"0 passed, {len(EXPECTED)} failed"
        done = kit(process.base, "--client-id", "kit-sender", "--key", str(key))
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.splitlines()[-1] == f"{len(EXPECTED)} passed, 0 failed"
