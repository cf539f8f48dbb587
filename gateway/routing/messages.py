"""The message Bundles the gateway sends (DESIGN §3.5): built when sent, from what is stored then, under the
outbox entry's id — the MessageHeader id, the same on every retry, so receivers drop duplicates.

A worker builds the messages of a whole claim at once, one query per level of references for all of them, and
splices each stored resource's JSON into the Bundle as it is: only the resources whose references lead further
(ServiceRequest, PractitionerRole, CareTeam, Patient) are parsed, nothing is dumped again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from gateway.fhir.primitives import fhir_instant, utc_now
from gateway.fhir.search import split_reference
from gateway.fhir.types import Resource
from gateway.intake.referral import HOP_COUNT_EXTENSION, MESSAGE_EVENT_SYSTEM
from gateway.store.outbox import OutboxEntry
from gateway.store.unit_of_work import UnitOfWork

Key = tuple[str, str]  # (resource type, id)


def _references(resource_type: str, content: Resource) -> list[str]:
    """What a resource of the referral stands on, to send along with it."""
    references: list[str] = []
    if resource_type == "ServiceRequest":
        references += [str((content.get(key) or {}).get("reference", "")) for key in ("subject", "requester")]
        references += [str(item.get("reference", "")) for item in content.get("performer") or []]
        references += [str(item.get("reference", "")) for item in content.get("supportingInfo") or []]
    elif resource_type == "PractitionerRole":
        references += [str((content.get(k) or {}).get("reference", "")) for k in ("practitioner", "organization")]
    elif resource_type == "CareTeam":
        references += [str((p.get("member") or {}).get("reference", "")) for p in content.get("participant") or []]
    elif resource_type == "Patient":
        references += [str(item.get("reference", "")) for item in content.get("generalPractitioner") or []]
    return references


_LEADING = frozenset({"ServiceRequest", "PractitionerRole", "CareTeam", "Patient"})  # those _references follows


@dataclass(frozen=True, slots=True)
class NothingToSend:
    """The delivery has no reason to be any more (its referral is gone, or was revoked before it left)."""

    reason: str


async def _gather(
    uow: UnitOfWork, service_requests: dict[str, str], parsed: dict[Key, Resource]
) -> dict[str, dict[Key, str]]:
    """For each ServiceRequest (id → JSON), it and what it stands on: patient, requester (role, practitioner,
    organisation), platform, CareTeam and its members, Consent — in order found. One query per level. ``parsed``
    holds the resources parsed so far (the ServiceRequests at least), and gains those parsed here."""
    texts: dict[Key, str] = {("ServiceRequest", sr): text for sr, text in service_requests.items()}
    found: dict[str, dict[Key, str]] = {sr: {("ServiceRequest", sr): text} for sr, text in service_requests.items()}
    level: dict[str, list[Key]] = {sr: [("ServiceRequest", sr)] for sr in service_requests}
    while level:
        wanted: dict[str, list[Key]] = {}
        for sr, keys in level.items():
            for key in keys:
                if key[0] not in _LEADING:
                    continue
                if key not in parsed:
                    parsed[key] = orjson.loads(texts[key])
                for reference in _references(key[0], parsed[key]):
                    resource_type, resource_id = split_reference(reference)
                    if resource_type and (resource_type, resource_id) not in found[sr]:
                        wanted.setdefault(sr, []).append((resource_type, resource_id))
        missing = {key for keys in wanted.values() for key in keys if key not in texts}
        texts.update(await uow.outbox.resource_texts(missing))
        level = {}
        for sr, keys in wanted.items():
            for key in dict.fromkeys(keys):
                if key in texts and key not in found[sr]:
                    found[sr][key] = texts[key]
                    level.setdefault(sr, []).append(key)
    return found


def _message(entry: OutboxEntry, base_url: str, service_request: str, resources: Sequence[tuple[Key, str]]) -> bytes:
    header: Resource = {
        "resourceType": "MessageHeader",
        "id": entry.id,
        "eventCoding": {"system": MESSAGE_EVENT_SYSTEM, "code": entry.event},
        "destination": [{"endpoint": entry.endpoint}],
        "source": {"name": "DAC Gateway", "endpoint": base_url},
        "focus": [{"reference": f"{base_url}/ServiceRequest/{service_request}"}],
    }
    if "hop" in entry.payload:
        header["extension"] = [{"url": HOP_COUNT_EXTENSION, "valueUnsignedInt": int(entry.payload["hop"])}]
    bundle = orjson.dumps(
        {
            "resourceType": "Bundle",
            "id": entry.id,
            "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{entry.id}"},
            "type": "message",
            "timestamp": fhir_instant(utc_now()),
        }
    )
    entries = [orjson.dumps({"fullUrl": f"urn:uuid:{entry.id}", "resource": header})]
    for (resource_type, resource_id), text in resources:
        full_url = orjson.dumps(f"{base_url}/{resource_type}/{resource_id}")
        entries.append(b'{"fullUrl":' + full_url + b',"resource":' + text.encode() + b"}")
    return bundle[:-1] + b',"entry":[' + b",".join(entries) + b"]}"


async def build_messages(
    uow: UnitOfWork, entries: Sequence[OutboxEntry], base_url: str
) -> dict[str, bytes | NothingToSend]:
    """The Bundle to POST (serialised) for each outbox entry, by entry id — or why there is nothing to send."""
    focus: dict[str, str] = {}
    for entry in entries:
        focus_type, focus_id = split_reference(str(entry.payload.get("focus", "")))
        if focus_type == "ServiceRequest":
            focus[entry.id] = focus_id
    stored = await uow.outbox.resource_texts(("ServiceRequest", sr) for sr in focus.values())
    service_requests = {sr: text for (_, sr), text in stored.items()}
    parsed: dict[Key, Resource] = {key: orjson.loads(text) for key, text in stored.items()}
    gathered = await _gather(uow, service_requests, parsed)
    # A peer gateway runs its own workflow: it gets the referral, not our Tasks.
    with_tasks = {focus[e.id] for e in entries if e.id in focus and e.payload.get("kind") != "peer-gateway"}
    tasks = await uow.outbox.task_texts(sr for sr in with_tasks if sr in service_requests)
    messages: dict[str, bytes | NothingToSend] = {}
    for entry in entries:
        sr = focus.get(entry.id)
        if sr is None or sr not in service_requests:
            messages[entry.id] = NothingToSend("the ServiceRequest of this delivery no longer exists")
            continue
        status = parsed["ServiceRequest", sr].get("status")
        if entry.event == "referral-request" and status in ("revoked", "entered-in-error"):
            # An opposition (or a rejection) came first: the referral, and the patient's data, stay here.
            messages[entry.id] = NothingToSend(f"not sent: the referral was {status} before delivery")
            continue
        resources = list(gathered[sr].items())
        if entry.payload.get("kind") != "peer-gateway":
            resources += [(("Task", task_id), text) for task_id, text in tasks.get(sr, [])]
        messages[entry.id] = _message(entry, base_url, sr, resources)
    return messages
