"""After an opposition, nothing more about the patient leaves (DESIGN §11) — by Subscriptions either.

Once a referral is revoked for the patient's opposition, an event about it (its ServiceRequest, or a Task whose
focus it is) is numbered only for a Subscription that received the referral — its owner posted it, or the
Subscription was notified of it before (its kept events name the ServiceRequest or one of its Tasks), or its owner
sees everything — and a Subscription that never did is told nothing, not even that something changed. What a
notification, or ``$events``, carries of such a referral is the minimal form that updates after an opposition
carry (``gateway.routing.messages``: the ServiceRequest and Tasks cut, one implementation); no other resource is a
notification's focus. Notifications queued before the opposition are cut as they leave (``as_sent``), and so are
the replays of old ones. ``$events`` answers the events it keeps as a notification leaving now would carry them:
cut too for a referral closed before the opposition (completed, rejected by the GP…), which the opposition does not
revoke, while that opposition is in force (``withheld_referrals``). A REST read is another matter: a party reads
its own record of a referral it had, as stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

import orjson

from gateway.fhir.codec import parse_resource, serialize_resource
from gateway.fhir.media import FhirFormat
from gateway.fhir.search import split_reference
from gateway.fhir.types import Resource
from gateway.referral.consents import CONSENTS_OF_A_PATIENT, opposition_in_force
from gateway.routing.messages import OPPOSITION, minimal_service_request, minimal_task, opposed
from gateway.store.outbox import OutboxEntry
from gateway.store.subscriptions import SubscriptionRecord
from gateway.store.unit_of_work import UnitOfWork

_MINIMAL = {"ServiceRequest": minimal_service_request, "Task": minimal_task}


def minimal(resource: Resource) -> Resource:
    """A notification's focus as it may leave after an opposition (a ServiceRequest or a Task, cut)."""
    cut = _MINIMAL.get(str(resource.get("resourceType")))
    return (
        cut(resource) if cut is not None else {"resourceType": resource.get("resourceType"), "id": resource.get("id")}
    )


async def _referrals_of(uow: UnitOfWork, focuses: Iterable[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Of these focuses (``Type/id``: ServiceRequests and Tasks), each with its ServiceRequest's id, and the text of
    those ServiceRequests as they stand — a query per level (the Tasks' focus, then the referrals)."""
    keys = {focus: split_reference(focus) for focus in set(focuses)}
    tasks = [("Task", resource_id) for resource_type, resource_id in keys.values() if resource_type == "Task"]
    task_texts = await uow.outbox.resource_texts(tasks) if tasks else {}
    referral: dict[str, str] = {}
    for focus, (resource_type, resource_id) in keys.items():
        if resource_type == "ServiceRequest":
            referral[focus] = resource_id
        elif (text := task_texts.get(("Task", resource_id))) is not None:
            target = str((orjson.loads(text).get("focus") or {}).get("reference", ""))
            target_type, target_id = split_reference(target)
            if target_type == "ServiceRequest":
                referral[focus] = target_id
    if not referral:
        return {}, {}
    texts = await uow.outbox.resource_texts(("ServiceRequest", sr) for sr in set(referral.values()))
    return referral, {sr: text for (_, sr), text in texts.items()}


def _opposed(text: str) -> bool:
    """Whether this stored ServiceRequest was revoked for the patient's opposition (parsed only when it may be)."""
    return OPPOSITION in text and opposed(orjson.loads(text))


async def opposed_referrals(uow: UnitOfWork, focuses: Iterable[str]) -> dict[str, str]:
    """Of these focuses (``Type/id``: ServiceRequests and Tasks), those about a referral revoked for the patient's
    opposition, each with its ServiceRequest's id."""
    referral, texts = await _referrals_of(uow, focuses)
    revoked = {sr for sr, text in texts.items() if _opposed(text)}
    return {focus: sr for focus, sr in referral.items() if sr in revoked}


async def withheld_referrals(uow: UnitOfWork, focuses: Iterable[str], at: datetime) -> dict[str, str]:
    """Of these focuses, those about a referral whose patient objects: revoked for the opposition, or closed before
    it (completed, rejected by the GP…: not revoked by it) while an opposition of its patient is in force at ``at``
    — what ``$events`` answers in the minimal forms, as a notification leaving now would carry them. A look-up of
    the denials per patient (``ResourceRepository.denials``, as the intake's): ``$events`` only, not every change's
    notification (a closed referral changes no more)."""
    referral, texts = await _referrals_of(uow, focuses)
    withheld = {sr for sr, text in texts.items() if _opposed(text)}
    patients: dict[str, list[str]] = {}
    for sr, text in texts.items():
        subject = orjson.loads(text).get("subject") or {}
        target_type, patient_id = split_reference(str(subject.get("reference", "")))
        if sr not in withheld and target_type == "Patient" and patient_id:
            patients.setdefault(patient_id, []).append(sr)
    for patient_id, of_patient in patients.items():
        denials = await uow.resources.denials(patient_id, (), CONSENTS_OF_A_PATIENT)
        if any(opposition_in_force(consent.content, at) for consent in denials):
            withheld.update(of_patient)
    return {focus: sr for focus, sr in referral.items() if sr in withheld}


async def received(uow: UnitOfWork, record: SubscriptionRecord, service_request_id: str) -> bool:
    """Whether the Subscription's owner had the referral (so may hear of it in the minimal form): it sees
    everything, or posted it, or this Subscription was notified of it before."""
    if record.viewer.everything:
        return True
    senders = await uow.visibility.senders_of([service_request_id])
    if record.owner and record.owner in senders.get(service_request_id, ()):
        return True
    tasks = await uow.outbox.task_texts([service_request_id])
    about = [("ServiceRequest", service_request_id)]
    about += [("Task", task_id) for task_id, _ in tasks.get(service_request_id, [])]
    return await uow.subscriptions.notified_of(record.id, about)


def _format(content_type: str) -> FhirFormat:
    return FhirFormat.XML if content_type.endswith("xml") else FhirFormat.JSON


def _focuses(entry: OutboxEntry) -> list[str]:
    """What a notification is about: its focus, and those of the events it carries (``backport-max-count``)."""
    found = [str(entry.payload["focus"])] if entry.payload.get("focus") else []
    for event in entry.payload.get("events") or []:
        if isinstance(event, dict) and event.get("focus"):
            found.append(str(event["focus"]))
    return found


async def as_sent(uow: UnitOfWork, entries: Sequence[OutboxEntry]) -> dict[str, bytes]:
    """The body of each of these notifications as it leaves now: as built when queued — but, where its referral was
    revoked for the patient's opposition since, its resources cut to the minimal forms."""
    revoked = await opposed_referrals(uow, (focus for entry in entries for focus in _focuses(entry)))
    bodies: dict[str, bytes] = {}
    for entry in entries:
        post = entry.payload.get("post") or {}
        body = str(post.get("body", "")).encode()
        if any(focus in revoked for focus in _focuses(entry)):
            fmt = _format(str(post.get("content_type", "")))
            bundle = parse_resource(body, fmt)
            for item in (bundle.get("entry") or [])[1:]:  # entry 0: the status Parameters
                resource = item.get("resource") or {}
                if f"{resource.get('resourceType')}/{resource.get('id')}" in revoked:
                    item["resource"] = minimal(resource)
            body = serialize_resource(bundle, fmt)
        bodies[entry.id] = body
    return bodies
