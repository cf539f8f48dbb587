"""A sender's callback URL — which may carry credentials and a token — appears in no metric line and no log line,
and in an audit event only without them; metrics name every callback by one label (issue 23: /metrics and logs
carried the URLs, one series per URL)."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest
import structlog

from gateway.routing.config import RoutingTable
from gateway.routing.delivery import DeliverySettings, Dispatcher
from gateway.routing.destinations import SENDER_CALLBACKS, destination_label, shown_destination
from gateway.store import Database
from tests.auth.conftest import OPERATOR, SENDER, clients_file, secure, secure_app, token_of
from tests.conftest import load_example

__all__ = ["clients_file", "secure", "secure_app"]  # the fixtures with authentication on
# Credentials, a query or a fragment in a callback are refused at intake (gateway.routing.callbacks); what remains
# of a callback — its host and path, under the sender's registered endpoint — is still nobody's metric or log line.
CALLBACK = "https://sender-a.example/fhir/tok-4242"
SECRETS = ("sender-a.example", "tok-4242")
WITH_CREDENTIALS = "https://lucie:s3cr3t-pass@callback.example:8443/fhir?token=tok-4242#frag"


@pytest.mark.parametrize(
    ("destination", "label", "shown"),
    [
        ("dac-75", "dac-75", "dac-75"),
        (f"sender:{WITH_CREDENTIALS}", SENDER_CALLBACKS, "sender:https://callback.example:8443/fhir"),
        ("sender:http://u:p@[::1]:9/x?a=b", SENDER_CALLBACKS, "sender:http://[::1]:9/x"),
        ("sender:http://h:99999/x", SENDER_CALLBACKS, SENDER_CALLBACKS),  # no port one can read: nothing shown
    ],
)
def test_how_a_destination_is_named(destination: str, label: str, shown: str) -> None:
    assert (destination_label(destination), shown_destination(destination)) == (label, shown)


def _message_with_callback() -> dict[str, Any]:
    message = copy.deepcopy(load_example("message-referral-gp.json"))
    message["entry"][0]["resource"]["source"]["endpoint"] = CALLBACK
    return message


@pytest.mark.parametrize("auth", ["off", "on"])
async def test_a_callback_url_with_credentials_is_in_no_metric_nor_log_line(
    auth: str, client: httpx.AsyncClient, secure: httpx.AsyncClient, database: Database, routing: RoutingTable
) -> None:
    http = secure if auth == "on" else client
    headers = await token_of(secure, SENDER) if auth == "on" else {}
    sent: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(str(request.url))
        return httpx.Response(200)

    with structlog.testing.capture_logs() as logs:
        posted = await http.post("/fhir/$process-message", json=_message_with_callback(), headers=headers)
        assert posted.status_code == 200, posted.text
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as outbound:
            dispatcher = Dispatcher(database, routing, outbound, DeliverySettings(base_url="http://gateway.test/fhir"))
            await dispatcher.deliver_due()  # the referral to the platform: delivered, which the sender is told
            await dispatcher.deliver_due()  # that update, to the sender's callback
    assert CALLBACK + "/$process-message" in sent  # it went there
    assert any(entry.get("destination") == SENDER_CALLBACKS for entry in logs)
    logged = repr(logs)
    metrics = (await http.get("/metrics")).text
    assert f'gateway_deliveries_total{{destination="{SENDER_CALLBACKS}",verdict="delivered"}}' in metrics
    for secret in SECRETS:
        assert secret not in logged, secret
        assert secret not in metrics, secret
    # The audit trail says where it went, without what was secret in the URL.
    operator = await token_of(secure, OPERATOR) if auth == "on" else {}
    events = (await http.get("/fhir/AuditEvent", params={"_count": 100}, headers=operator)).json()
    trail = repr(events)
    assert CALLBACK in trail
