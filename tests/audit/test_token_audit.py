"""A refused token request leaves an AuditEvent: who it claimed to be, from where, why — never its assertion
(issue 23: failed token requests were not audited)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.auth.conftest import OPERATOR, SENDER, TOKEN_URL, token_of


@pytest.mark.parametrize(
    ("make_form", "client_id", "reason"),
    [
        (lambda: SENDER.token_form(TOKEN_URL, aud="https://elsewhere.example/token"), "hospital", "invalid_client"),
        (lambda: SENDER.token_form(TOKEN_URL, iss="intruder", sub="intruder"), "intruder", "invalid_client"),
        (lambda: SENDER.token_form(TOKEN_URL, scope="system/AuditEvent.rs"), "hospital", "invalid_scope"),
        (lambda: {"grant_type": "password", "client_id": "someone"}, "someone", "unsupported_grant_type"),
        (lambda: {"grant_type": "client_credentials", "client_assertion_type": "x"}, None, "invalid_client"),
    ],
    ids=["wrong-audience", "unregistered", "scope-not-registered", "grant-type", "no-assertion"],
)
async def test_a_refused_token_request_is_audited_without_its_assertion(
    secure_app: FastAPI,
    secure: httpx.AsyncClient,
    make_form: Callable[[], dict[str, Any]],
    client_id: str | None,
    reason: str,
) -> None:
    # Made when the test runs: an assertion made at collection expires (240 s) before a long suite reaches it.
    form = make_form()
    refused = await secure.post("/auth/token", data=form)
    assert refused.status_code in (400, 401), refused.text
    await secure_app.state.audit.flush()
    operator = await token_of(secure, OPERATOR)
    found = (await secure.get("/fhir/AuditEvent", params={"outcome": "4"}, headers=operator)).json()
    events = [e["resource"] for e in found.get("entry", []) if e["resource"]["type"]["code"] == "110114"]
    assert len(events) == 1
    (event,) = events
    requestor = event["agent"][0]
    assert requestor["requestor"] is True
    assert requestor["network"] == {"address": "127.0.0.1", "type": "2"}
    assert requestor["who"].get("identifier", {}).get("value") == client_id
    assert event["subtype"][0]["code"] == "110122"
    assert event["outcomeDesc"].startswith(f"{reason}: ")
    if form.get("client_assertion"):
        assert form["client_assertion"] not in repr(event)
        assert form["client_assertion"].split(".")[2] not in repr(event)  # not even its signature


async def test_a_replayed_assertion_is_audited_and_a_granted_token_is_not(
    secure_app: FastAPI, secure: httpx.AsyncClient
) -> None:
    form = SENDER.token_form(TOKEN_URL, "system/ServiceRequest.c")
    assert (await secure.post("/auth/token", data=form)).status_code == 200
    assert (await secure.post("/auth/token", data=form)).status_code in (400, 401)
    await secure_app.state.audit.flush()
    operator = await token_of(secure, OPERATOR)
    found = (await secure.get("/fhir/AuditEvent", headers=operator)).json()
    logins = [e["resource"] for e in found.get("entry", []) if e["resource"]["type"]["code"] == "110114"]
    assert [(e["outcome"], e["outcomeDesc"]) for e in logins] == [("4", "invalid_client: client-authentication-failed")]
