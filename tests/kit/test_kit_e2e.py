"""The conformance kit against real ``gateway serve`` processes: every example passes, twice in a row against the
same server (the examples that share identifiers are idempotent replays), with a JUnit report; and a server that
routes otherwise fails it, exit status 1, each failing line naming its example."""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import loopback_routing
from tests.support.processes import GATEWAY, GatewayProcess, Platform, running, write_routing

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


def test_a_server_that_routes_otherwise_fails_the_kit(tmp_path: Path) -> None:
    platform = Platform()
    routing = write_routing(
        tmp_path, {"elsewhere": {"endpoint": platform.endpoint, "finess": "130000005"}}, {"2A": "elsewhere"}
    )
    routing.write_text('default = "elsewhere"\n' + routing.read_text())
    process = GatewayProcess(tmp_path, routing)
    with running(platform, process):
        report = tmp_path / "kit.xml"
        done = kit(process.base, "--junit", str(report))
    assert done.returncode == 1, done.stdout
    failing = [line for line in done.stdout.splitlines() if line.startswith("FAIL")]
    assert any(line.startswith("FAIL  referral-gp.json — platform") and "130000005" in line for line in failing)
    assert done.stdout.splitlines()[-1] == f"{len(EXPECTED) - len(failing)} passed, {len(failing)} failed"
    assert all(line.split()[1] in EXPECTED for line in failing)
    cases = {case.get("name"): case for case in ET.parse(report).getroot()}
    assert cases["referral-gp.json"].find("failure") is not None
    assert cases["invalid/bad-ins-key.json"].find("failure") is None
