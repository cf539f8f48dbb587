"""Notification Bundles as the backport IG shapes them for R4 (``backport-subscription-notification-r4``): a
``history`` Bundle whose first entry is the ``backport-subscription-status-r4`` Parameters, then — for
``full-resource`` — the resources the events are about."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from gateway.fhir.primitives import fhir_instant, new_id
from gateway.fhir.types import Resource
from gateway.notify.topics import NOTIFICATION_PROFILE, SUBSCRIPTION_STATUS_PROFILE


@dataclass(frozen=True, slots=True)
class NotifiedEvent:
    number: int
    timestamp: datetime
    focus: str  # Type/id
    resource: Resource | None = None  # the focus as of the event (full-resource)
    created: bool = False


def status_parameters(
    base_url: str,
    subscription_id: str,
    topic: str,
    status: str,
    notification_type: str,
    events_since_start: int,
    events: Sequence[NotifiedEvent],
    content: str,
) -> Resource:
    parameters: list[Resource] = [
        {"name": "subscription", "valueReference": {"reference": f"{base_url}/Subscription/{subscription_id}"}},
    ]
    if content != "empty":  # the IG: SHOULD NOT be present with empty payloads
        parameters.append({"name": "topic", "valueCanonical": topic})
    parameters += [
        {"name": "status", "valueCode": status},
        {"name": "type", "valueCode": notification_type},
        {"name": "events-since-subscription-start", "valueString": str(events_since_start)},
    ]
    for event in events:
        parts: list[Resource] = [
            {"name": "event-number", "valueString": str(event.number)},
            {"name": "timestamp", "valueInstant": fhir_instant(event.timestamp)},
        ]
        if content != "empty":
            parts.append({"name": "focus", "valueReference": {"reference": f"{base_url}/{event.focus}"}})
        parameters.append({"name": "notification-event", "part": parts})
    return {
        "resourceType": "Parameters",
        "id": new_id(),
        "meta": {"profile": [SUBSCRIPTION_STATUS_PROFILE]},
        "parameter": parameters,
    }


def notification_bundle(
    base_url: str,
    bundle_id: str,
    subscription_id: str,
    topic: str,
    status: str,
    notification_type: str,
    events_since_start: int,
    events: Sequence[NotifiedEvent],
    content: str,
    now: datetime,
) -> Resource:
    """The Bundle posted to the subscriber (or answered by ``$events`` / ``$status``)."""
    parameters = status_parameters(
        base_url, subscription_id, topic, status, notification_type, events_since_start, events, content
    )
    entries: list[Resource] = [
        {
            "fullUrl": f"urn:uuid:{parameters['id']}",
            "resource": parameters,
            "request": {"method": "GET", "url": f"{base_url}/Subscription/{subscription_id}/$status"},
            "response": {"status": "200"},
        }
    ]
    if content == "full-resource":
        seen: dict[str, Resource] = {}
        for event in events:
            if event.resource is not None:  # as of its last event: a later one (its revocation) is not hidden
                seen[event.focus] = {"resource": event.resource, "created": event.created}
        for focus, item in seen.items():
            resource_type = focus.split("/", 1)[0]
            created = bool(item["created"])
            entries.append(
                {
                    "fullUrl": f"{base_url}/{focus}",
                    "resource": item["resource"],
                    "request": {"method": "POST" if created else "PUT", "url": resource_type if created else focus},
                    "response": {"status": "201" if created else "200"},
                }
            )
    return {
        "resourceType": "Bundle",
        "id": bundle_id,
        "meta": {"profile": [NOTIFICATION_PROFILE]},
        "type": "history",
        "timestamp": fhir_instant(now),
        "entry": entries,
    }


def status_bundle(base_url: str, parameters: Resource, now: datetime) -> Resource:
    """``$status``'s answer: a searchset holding the status Parameters."""
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "timestamp": fhir_instant(now),
        "total": 1,
        "entry": [{"fullUrl": f"urn:uuid:{parameters['id']}", "resource": parameters, "search": {"mode": "match"}}],
    }
