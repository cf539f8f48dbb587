"""fhirclient (SMART on FHIR's Python client, R4 models) against a real gateway, authentication off and on."""

from __future__ import annotations

from typing import Any

import pytest

from tests.clients.conftest import Served, library
from tests.clients.test_fhirpy import CONSENT_ID, consent
from tests.support.referrals import fresh


def _server(served: Served) -> Any:
    server_module = library("fhirclient.server")
    server = server_module.FHIRServer(None, base_uri=served.base)
    server.session.headers.update(served.headers)  # the Bearer token, when authentication is on
    return server


def test_fhirclient(served: Served) -> None:
    server = _server(served)
    patient_model = library("fhirclient.models.patient")
    consent_model = library("fhirclient.models.consent")
    bundle_model = library("fhirclient.models.bundle")
    server_module = library("fhirclient.server")
    requests = library("requests")

    # a transaction: fhirclient posts it to the base with its trailing slash (POST /fhir/), which is /fhir
    answer = bundle_model.Bundle(fresh(tag="fhirclient")).create(server)
    assert answer["type"] == "transaction-response"
    patient_id = next(e["response"]["location"] for e in answer["entry"] if "Patient/" in e["fullUrl"]).split("/")[1]
    served.referral("fhirclient-2")

    # read, and search with paging to the end
    patient = patient_model.Patient.read(patient_id, server)
    assert patient.id == patient_id and patient.identifier
    found = list(patient_model.Patient.where({"_count": "1"}).perform_resources_iter(server))
    assert len(found) >= 2 and len({p.id for p in found}) == len(found)

    # conditional create both ways, each repeated: one Consent
    tag = served.process.port + 11
    by_header = consent(f"FC-H-{tag}", tag) | {"resourceType": "Consent"}
    server.session.headers["If-None-Exist"] = f"identifier={CONSENT_ID}|FC-H-{tag}"
    first = consent_model.Consent(by_header).create(server)
    again = consent_model.Consent(by_header).create(server)
    del server.session.headers["If-None-Exist"]
    assert again["id"] == first["id"]
    by_url = consent(f"FC-U-{tag}", tag) | {"resourceType": "Consent"}
    url = f"Consent?identifier={CONSENT_ID}|FC-U-{tag}"
    assert server.post_json(url, by_url).json()["id"] == server.post_json(url, by_url).json()["id"]
    for value in (f"FC-H-{tag}", f"FC-U-{tag}"):
        search = consent_model.Consent.where({"identifier": f"{CONSENT_ID}|{value}"})
        assert len(list(search.perform_resources_iter(server))) == 1

    # history, $validate, $process-message
    history = bundle_model.Bundle.read_from(f"Consent/{first['id']}/_history", server)
    assert history.type == "history" and history.entry[0].request.method == "POST"
    outcome = server.post_json("Consent/$validate", by_header).json()
    assert outcome["resourceType"] == "OperationOutcome"
    message = library("tests.support.referrals").example("message-referral-gp.json")
    assert server.post_json("$process-message", message).json()["type"] == "message"

    # errors: the library's exceptions, carrying the OperationOutcome
    with pytest.raises(server_module.FHIRNotFoundException) as missing:
        patient_model.Patient.read("no-such-patient", server)
    assert missing.value.response.json()["resourceType"] == "OperationOutcome"
    with pytest.raises(requests.HTTPError) as refused:
        server.post_json("Consent", by_header | {"status": "not-a-status"})  # the models would refuse it first
    assert refused.value.response.status_code == 422
    assert refused.value.response.json()["issue"][0]["expression"] == ["Consent.status"]


def test_fhirclient_updates_a_task(gateway: Served) -> None:
    server = _server(gateway)
    task_model = library("fhirclient.models.task")
    task = task_model.Task(gateway.gp_validation_task("fhirclient-task"))
    task.status = "accepted"
    server.session.headers["If-Match"] = 'W/"1"'
    updated = task.update(server)
    assert updated["status"] == "accepted" and updated["meta"]["versionId"] == "2"
    requests = library("requests")
    with pytest.raises(requests.HTTPError) as stale:
        task.update(server)  # still If-Match: W/"1"
    assert stale.value.response.status_code == 412
    assert stale.value.response.json()["resourceType"] == "OperationOutcome"
