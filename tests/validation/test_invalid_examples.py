"""The conformance kit (examples/invalid/): each bundle gives exactly its expected findings — through the API,
through $validate and through `gateway validate` — and stores nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import httpx
import pytest

from tests.conftest import EXAMPLES

INVALID = EXAMPLES / "invalid"
EXPECTED: dict[str, Any] = json.loads((INVALID / "expected.json").read_text())
FHIR_JSON = {"content-type": "application/fhir+json"}


def _findings(outcome: dict[str, Any]) -> list[tuple[str, str | None]]:
    return sorted(
        (issue["details"]["coding"][0]["code"], (issue.get("expression") or [None])[0])
        for issue in outcome["issue"]
        if issue["severity"] in ("error", "fatal")
    )


def test_the_kit_is_complete() -> None:
    assert len(EXPECTED) >= 15
    assert sorted(p.name for p in INVALID.glob("*.json") if p.name != "expected.json") == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_each_invalid_referral_gives_exactly_its_findings(client: httpx.AsyncClient, name: str) -> None:
    body = (INVALID / name).read_bytes()
    expected = EXPECTED[name]
    wanted = sorted((issue["code"], issue["expression"]) for issue in expected["issues"])
    posted = await client.post("/fhir", content=body, headers=FHIR_JSON)
    assert posted.status_code == expected["status"], posted.text
    assert _findings(posted.json()) == wanted
    validated = await client.post("/fhir/$validate", content=body, headers=FHIR_JSON)
    for_validate = wanted if expected["validate"] is None else expected["validate"]
    assert validated.status_code == 200 and _findings(validated.json()) == for_validate
    assert (await client.get("/fhir/ServiceRequest", params={"_summary": "count"})).json()["total"] == 0


def test_the_command_line_reports_them_all() -> None:
    files = [str(INVALID / name) for name in sorted(EXPECTED) if EXPECTED[name]["validate"] is None]
    result = subprocess.run([sys.executable, "-m", "gateway", "validate", *files], capture_output=True, text=True)
    assert result.returncode == 1
    for name, expected in EXPECTED.items():
        if expected["validate"] is not None:
            continue
        assert f"{name}: INVALID" in result.stdout
        for issue in expected["issues"]:
            assert f"{issue['code']} at {issue['expression']}" in result.stdout
