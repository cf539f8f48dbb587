"""fhir-kit-client (Node) against a real gateway, authentication off and on: a Node script drives it
(tests/clients/fhir_kit_client.mjs), as tests/support/fhir_validators.py runs the Node validators."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.clients.conftest import TOOLS, Served, node_client_missing
from tests.clients.test_fhirpy import CONSENT_ID, consent
from tests.support.referrals import example, fresh

SCRIPT = Path(__file__).with_name("fhir_kit_client.mjs")
MODULE = TOOLS / "node_modules" / "fhir-kit-client" / "dist" / "index.js"


def test_fhir_kit_client(served: Served, request: pytest.FixtureRequest) -> None:
    if (reason := node_client_missing()) is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"fhir-kit-client cannot run under CI: {reason}")
        pytest.skip(reason)
    tag = served.process.port + 23
    with_task = served.authorization is None  # deciding on a GP's Task is not the sender's; covered auth off
    task = served.gp_validation_task("fhir-kit") if with_task else None
    given = {
        "module": str(MODULE),
        "base": served.base,
        "authorization": served.authorization,
        "referral": fresh(tag="fhir-kit"),
        "message": example("message-referral-gp.json"),
        "consentHeader": {
            "identifier": f"{CONSENT_ID}|FK-H-{tag}",
            "body": consent(f"FK-H-{tag}", tag) | {"resourceType": "Consent"},
        },
        "consentUrl": {
            "identifier": f"{CONSENT_ID}|FK-U-{tag}",
            "body": consent(f"FK-U-{tag}", tag + 1) | {"resourceType": "Consent"},
        },
        "task": task,
    }
    run = subprocess.run(
        ["node", str(SCRIPT), json.dumps(given)], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout)
    assert out["transactionType"] == "transaction-response"
    assert out["read"] is True
    assert len(out["pagedIds"]) >= 1 and len(set(out["pagedIds"])) == len(out["pagedIds"])
    assert out["conditional"]["header"][0] == out["conditional"]["header"][1]
    assert out["conditional"]["url"][0] == out["conditional"]["url"][1]
    assert out["matchingConsents"] == 1
    assert out["historyMethods"] == ["POST"] and out["typeHistory"] == "history"
    assert out["validate"] == "OperationOutcome" and out["message"] == "ok"
    if with_task:
        assert out["task"] == ["2", "3", "in-progress"]
        assert out["taskHistoryMethods"] == ["PATCH", "PUT", "POST"]
    assert out["notFound"] == [404, "OperationOutcome"]
    assert out["invalid"] == [422, ["Consent.status"]]
