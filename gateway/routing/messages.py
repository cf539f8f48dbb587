"""The message Bundles the gateway sends (DESIGN §3.5): built when sent, from what is stored then, under the
outbox entry's id — the MessageHeader id, the same on every retry, so receivers drop duplicates."""

from __future__ import annotations

from gateway.fhir.primitives import fhir_instant, utc_now
from gateway.fhir.search import parse_search, split_reference
from gateway.fhir.types import Resource
from gateway.intake.referral import HOP_COUNT_EXTENSION, MESSAGE_EVENT_SYSTEM
from gateway.store.outbox import OutboxEntry
from gateway.store.repository import StoredResource
from gateway.store.unit_of_work import UnitOfWork


def _references(stored: StoredResource) -> list[str]:
    """What a resource of the referral stands on, to send along with it."""
    content = stored.content
    references: list[str] = []
    if stored.resource_type == "ServiceRequest":
        references += [str((content.get(key) or {}).get("reference", "")) for key in ("subject", "requester")]
        references += [str(item.get("reference", "")) for item in content.get("performer") or []]
        references += [str(item.get("reference", "")) for item in content.get("supportingInfo") or []]
    elif stored.resource_type == "PractitionerRole":
        references += [str((content.get(k) or {}).get("reference", "")) for k in ("practitioner", "organization")]
    elif stored.resource_type == "CareTeam":
        references += [str((p.get("member") or {}).get("reference", "")) for p in content.get("participant") or []]
    elif stored.resource_type == "Patient":
        references += [str(item.get("reference", "")) for item in content.get("generalPractitioner") or []]
    return references


async def _gather(uow: UnitOfWork, service_request: StoredResource, with_tasks: bool) -> list[StoredResource]:
    """The ServiceRequest and what it stands on: patient, requester (role, practitioner, organisation),
    platform, CareTeam and its members, Consent — and the Tasks, for a platform. One query per level."""
    found: dict[str, StoredResource] = {service_request.reference: service_request}
    level = [service_request]
    while level:
        wanted: list[tuple[str, str]] = []
        for stored in level:
            for reference in _references(stored):
                resource_type, resource_id = split_reference(reference)
                if resource_type and f"{resource_type}/{resource_id}" not in found:
                    wanted.append((resource_type, resource_id))
        fetched = await uow.resources.get_many(wanted)
        level = [stored for stored in fetched.values() if stored.reference not in found]
        found.update((stored.reference, stored) for stored in level)
    if with_tasks:
        tasks = await uow.resources.find(
            parse_search("Task", [("focus", service_request.reference)], default_count=100, max_count=100), limit=100
        )
        for task in tasks:
            found[task.reference] = task
    return list(found.values())


class NothingToSend(Exception):
    """The delivery has no reason to be any more (its referral is gone, or was revoked before it left)."""


async def build_message(uow: UnitOfWork, entry: OutboxEntry, base_url: str) -> Resource:
    """The Bundle to POST for an outbox entry."""
    focus_type, focus_id = split_reference(str(entry.payload.get("focus", "")))
    service_request = await uow.resources.get("ServiceRequest", focus_id) if focus_type == "ServiceRequest" else None
    if service_request is None:
        raise NothingToSend("the ServiceRequest of this delivery no longer exists")
    if entry.event == "referral-request" and service_request.content.get("status") in ("revoked", "entered-in-error"):
        # An opposition (or a rejection) came first: the referral, and the patient's data, stay here.
        raise NothingToSend(f"not sent: the referral was {service_request.content['status']} before delivery")
    # A peer gateway runs its own workflow: it gets the referral, not our Tasks.
    with_tasks = entry.payload.get("kind") != "peer-gateway"
    resources = await _gather(uow, service_request, with_tasks)
    header: Resource = {
        "resourceType": "MessageHeader",
        "id": entry.id,
        "eventCoding": {"system": MESSAGE_EVENT_SYSTEM, "code": entry.event},
        "destination": [{"endpoint": entry.endpoint}],
        "source": {"name": "DAC Gateway", "endpoint": base_url},
        "focus": [{"reference": f"{base_url}/{service_request.reference}"}],
    }
    if "hop" in entry.payload:
        header["extension"] = [{"url": HOP_COUNT_EXTENSION, "valueUnsignedInt": int(entry.payload["hop"])}]
    return {
        "resourceType": "Bundle",
        "id": entry.id,
        "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{entry.id}"},
        "type": "message",
        "timestamp": fhir_instant(utc_now()),
        "entry": [
            {"fullUrl": f"urn:uuid:{entry.id}", "resource": header},
            *({"fullUrl": f"{base_url}/{stored.reference}", "resource": stored.content} for stored in resources),
        ],
    }
