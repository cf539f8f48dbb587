"""After an opposition, nothing more about the patient leaves by Subscriptions (DESIGN §11, §12), authentication on:
whatever was queued before the opposition and sent after it, the events it makes, and ``$events`` — full-resource,
id-only or empty — carry neither the patient's INS nor names; a Subscription that never had the referral hears
nothing of it, one that did the minimal forms."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI

from gateway import Settings, create_app
from gateway.routing.config import RoutingTable
from gateway.store import Database
from tests.auth.conftest import token_of
from tests.notify.test_subscriptions import REFERRAL_STATUS, TASK_TOPIC, deliver, status_of, subscription
from tests.support.auth import TEST_SECRET, SmartClient, write_clients
from tests.workflow.test_decisions_api import pta_2016_referral

FHIR_JSON = {"Content-Type": "application/fhir+json"}
NURSE_BASE, GP_BASE = "https://nurse.example/fhir", "https://cabinet-lilas.example/fhir"
SUBSCRIBE = "system/Subscription.crud"
CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
NURSE = SmartClient(
    "hopital", "sender", ["system/ServiceRequest.cr", "system/*.rs", "system/Consent.c", SUBSCRIBE],
    endpoints=[NURSE_BASE],
)  # fmt: skip
GP = SmartClient(
    "cabinet-lilas", "practitioner", ["system/*.rs", "system/Task.u", SUBSCRIBE], rpps=["10100345676"],
    endpoints=[GP_BASE],
)  # fmt: skip


@pytest.fixture
async def secure(
    database_url: str, tmp_path: Path, database: Database, routing: RoutingTable
) -> AsyncIterator[httpx.AsyncClient]:
    clients = write_clients(tmp_path, [NURSE, GP])
    settings = Settings(database_url=database_url, auth="on", clients=clients, auth_secret=TEST_SECRET)
    app: FastAPI = create_app(settings, database, routing)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test") as http:
        yield http


def _named_referral() -> tuple[dict[str, Any], list[str]]:
    """The nurse's referral with the patient named in it as senders do (the subject's display and INS, a note),
    and what must never leave after the opposition: the INS and the names."""
    bundle = pta_2016_referral("-opposed")
    patient = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    ins = patient["identifier"][0]
    secrets = [ins["value"], *{n["family"] for n in patient["name"]}, *{g for n in patient["name"] for g in n["given"]}]
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "ServiceRequest":
            name = patient["name"][0]
            resource["subject"] |= {"display": f"{name['given'][0]} {name['family']}", "identifier": ins}
            resource["note"] = [{"text": f"{name['given'][0]} {name['family']} ({ins['value']}) vit seule."}]
    return bundle, secrets


def _deny(patient: str) -> dict[str, Any]:
    """The patient's opposition (L1110-12), naming the stored Patient."""
    return {
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{"system": CONSENT_SCOPE, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": patient.split("/_history")[0]},
        "dateTime": "2026-11-23T10:00:00+01:00",
        "policyRule": {"text": "Code de la santé publique, art. L1110-12"},
        "provision": {"type": "deny"},
    }  # fmt: skip


@respx.mock
async def test_nothing_about_the_patient_leaves_after_the_opposition(
    secure: httpx.AsyncClient, database: Database, routing: RoutingTable
) -> None:
    respx.post(url__regex=r".*\$process-message").mock(return_value=httpx.Response(200))
    up = {"up": True}
    hooks = {
        name: respx.post(url).mock(side_effect=lambda request: httpx.Response(200 if up["up"] else 503))
        for name, url in {
            "nurse": f"{NURSE_BASE}/referrals",
            "nurse-ids": f"{NURSE_BASE}/tasks",
            "nurse-xml": f"{NURSE_BASE}/xml",
            "gp": f"{GP_BASE}/validations",
            "gp-cancelled": f"{GP_BASE}/cancelled",
        }.items()
    }
    nurse, gp = await token_of(secure, NURSE), await token_of(secure, GP)
    subscribed = {}
    for name, client, resource in (
        ("nurse", nurse, subscription(REFERRAL_STATUS, endpoint=f"{NURSE_BASE}/referrals")),
        ("nurse-ids", nurse, subscription(TASK_TOPIC, content="id-only", endpoint=f"{NURSE_BASE}/tasks")),
        (
            "nurse-xml",
            nurse,
            subscription(REFERRAL_STATUS, payload="application/fhir+xml", endpoint=f"{NURSE_BASE}/xml"),
        ),
        ("gp", gp, subscription(TASK_TOPIC, ("Task?code=gp-validation",), endpoint=f"{GP_BASE}/validations")),
        ("gp-cancelled", gp, subscription(TASK_TOPIC, ("Task?status=cancelled",), endpoint=f"{GP_BASE}/cancelled")),
    ):
        answer = await secure.post("/fhir/Subscription", json=resource, headers=client | FHIR_JSON)
        assert answer.status_code == 201, answer.text
        subscribed[name] = answer.json()["id"]
    await deliver(database, routing)  # the handshakes
    up["up"] = False  # the referral's notifications wait in the outbox, built with the patient's name in them
    bundle, secrets = _named_referral()
    posted = await secure.post("/fhir", json=bundle, headers=nurse | FHIR_JSON)
    assert posted.status_code == 200, posted.text
    patient = next(e["response"]["location"] for e in posted.json()["entry"] if "/Patient/" in e["fullUrl"])
    await deliver(database, routing)  # refused: still queued
    opposed = await secure.post("/fhir/Consent", json=_deny(patient), headers=nurse | FHIR_JSON)
    assert opposed.status_code == 201, opposed.text
    before = {name: len(hook.calls) for name, hook in hooks.items()}
    up["up"] = True
    await deliver(database, routing, rounds=6)
    sent = {
        name: [call.request.content.decode() for call in hook.calls[before[name] :]] for name, hook in hooks.items()
    }
    assert sent["nurse"] and sent["nurse-ids"] and sent["nurse-xml"] and sent["gp"]
    assert "revoked" in sent["nurse-xml"][-1] and "<note>" not in "".join(sent["nurse-xml"])
    for name, bodies in sent.items():
        for body in bodies:
            assert not [secret for secret in secrets if secret in body], (name, body)
    # The requester hears its referral was revoked — in the minimal form: no note, the subject a bare reference.
    events = [json.loads(body) for body in sent["nurse"]]
    revoked = [b["entry"][1]["resource"] for b in events if b["entry"][1]["resource"]["status"] == "revoked"]
    assert revoked and all("note" not in sr and set(sr["subject"]) == {"reference"} for sr in revoked)
    assert revoked[-1]["extension"][0]["valueCodeableConcept"]["coding"][0]["code"] == "patient-opposition"
    # The GP's software had its Task: it hears it cancelled (cut); its Subscription to cancelled Tasks never had
    # the referral: nothing, not even an id.
    gp_tasks = [json.loads(body)["entry"][1]["resource"] for body in sent["gp"]]
    assert gp_tasks[-1]["status"] == "cancelled" and "for" not in gp_tasks[-1] and "owner" not in gp_tasks[-1]
    assert sent["gp-cancelled"] == []
    # Asked again, by number, in every content: nothing of the patient either.
    for name, client in (("nurse", nurse), ("nurse-ids", nurse), ("gp", gp), ("gp-cancelled", gp)):
        for content in ("full-resource", "id-only", "empty"):
            answer = await secure.get(
                f"/fhir/Subscription/{subscribed[name]}/$events", params={"content": content}, headers=client
            )
            assert answer.status_code == 200, answer.text
            assert not [secret for secret in secrets if secret in answer.text], (name, content, answer.text)
            if name == "gp-cancelled":
                assert "events" not in status_of(answer.json())


async def _closed_then_opposed(
    http: httpx.AsyncClient, database: Database, routing: RoutingTable, nurse: dict[str, str], gp: dict[str, str]
) -> tuple[dict[str, str], list[str]]:
    """The nurse's named referral, its Subscription and the GP's notified of it; the GP rejects it (closed:
    revoked ``gp-rejected``, not for an opposition); then the patient objects. The Subscriptions' ids by owner,
    and what must not leave any more: the INS and the names."""
    subscribed = {}
    for name, client, resource in (
        ("nurse", nurse, subscription(REFERRAL_STATUS, endpoint=f"{NURSE_BASE}/referrals")),
        ("gp", gp, subscription(TASK_TOPIC, ("Task?code=gp-validation",), endpoint=f"{GP_BASE}/validations")),
    ):
        answer = await http.post("/fhir/Subscription", json=resource, headers=client | FHIR_JSON)
        assert answer.status_code == 201, answer.text
        subscribed[name] = answer.json()["id"]
    await deliver(database, routing)  # the handshakes
    bundle, secrets = _named_referral()
    posted = await http.post("/fhir", json=bundle, headers=nurse | FHIR_JSON)
    assert posted.status_code == 200, posted.text
    locations = [e["response"]["location"].split("/_history")[0] for e in posted.json()["entry"]]
    patient = next(location for location in locations if location.startswith("Patient/"))
    service_request = next(location for location in locations if location.startswith("ServiceRequest/"))
    tasks = (await http.get("/fhir/Task", params={"focus": service_request}, headers=gp)).json()["entry"]
    (task,) = [t["resource"] for t in tasks if t["resource"]["code"]["coding"][0]["code"] == "gp-validation"]
    rejected = task | {"status": "rejected", "statusReason": {"text": "Je suis déjà la situation avec l'IDE."}}
    answer = await http.put(
        f"/fhir/Task/{task['id']}",
        json=rejected,
        headers=gp | FHIR_JSON | {"if-match": f'W/"{task["meta"]["versionId"]}"'},
    )
    assert answer.status_code == 200, answer.text
    await deliver(database, routing)
    closed = (await http.get(f"/fhir/{service_request}", headers=nurse)).json()
    assert closed["status"] == "revoked" and "gp-rejected" in json.dumps(closed["extension"])
    # Before the opposition, $events carries the referral as written: the test sees what it must not see after.
    before = await http.get(
        f"/fhir/Subscription/{subscribed['nurse']}/$events", params={"content": "full-resource"}, headers=nurse
    )
    assert [secret for secret in secrets if secret in before.text]
    opposed = await http.post("/fhir/Consent", json=_deny(patient), headers=nurse | FHIR_JSON)
    assert opposed.status_code == 201, opposed.text
    # A closed referral is not revoked again: it stays what it was (rejected by the GP); its sender reads its own
    # record of it as stored (the REST rule), while $events answers as a notification leaving now (below).
    assert (await http.get(f"/fhir/{service_request}", headers=nurse)).json() == closed
    assert [secret for secret in secrets if secret in json.dumps(closed)]
    return subscribed, secrets


async def _events_leave_nothing_of_the_patient(
    http: httpx.AsyncClient, subscribed: dict[str, str], owners: dict[str, dict[str, str]], secrets: list[str]
) -> None:
    for name, subscription_id in subscribed.items():
        answer = await http.get(
            f"/fhir/Subscription/{subscription_id}/$events", params={"content": "full-resource"}, headers=owners[name]
        )
        assert answer.status_code == 200, answer.text
        contents = [e["resource"] for e in answer.json()["entry"][1:]]
        assert contents, (name, answer.text)  # the events are kept, and still answered: in the minimal form
        for content in contents:
            assert not [secret for secret in secrets if secret in json.dumps(content)], (name, content)
            if content["resourceType"] == "ServiceRequest":
                assert "note" not in content and set(content["subject"]) == {"reference"}, content
            else:
                assert "for" not in content and "owner" not in content, content
        assert not [secret for secret in secrets if secret in answer.text], (name, answer.text)


@respx.mock
async def test_events_of_a_closed_referral_are_cut_after_the_opposition(
    secure: httpx.AsyncClient, database: Database, routing: RoutingTable
) -> None:
    """A referral closed before the opposition (rejected by the GP) is not revoked by it, and its events are kept:
    ``$events`` full-resource then answers them as a notification would leave now — the minimal forms, as for a
    referral the opposition revoked — not the versions written, which name the patient."""
    respx.post(url__regex=r".*\$process-message").mock(return_value=httpx.Response(200))
    respx.post(url__regex=r"https://(nurse|cabinet-lilas)\.example/.*").mock(return_value=httpx.Response(200))
    nurse, gp = await token_of(secure, NURSE), await token_of(secure, GP)
    subscribed, secrets = await _closed_then_opposed(secure, database, routing, nurse, gp)
    await _events_leave_nothing_of_the_patient(secure, subscribed, {"nurse": nurse, "gp": gp}, secrets)


@respx.mock
async def test_events_of_a_closed_referral_are_cut_after_the_opposition_without_auth(
    client: httpx.AsyncClient, database: Database, routing: RoutingTable
) -> None:
    respx.post(url__regex=r".*\$process-message").mock(return_value=httpx.Response(200))
    respx.post(url__regex=r"https://(nurse|cabinet-lilas)\.example/.*").mock(return_value=httpx.Response(200))
    subscribed, secrets = await _closed_then_opposed(client, database, routing, {}, {})
    await _events_leave_nothing_of_the_patient(client, subscribed, {"nurse": {}, "gp": {}}, secrets)
