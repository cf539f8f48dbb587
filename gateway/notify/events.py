"""Events, numbered and queued in the transaction of the change (DESIGN §12).

``Notifier`` is one of the database's change listeners (``gateway.store.unit_of_work``): before a unit of work
commits, it looks at the ServiceRequests and Tasks written in it; for each change that triggers a topic, each
live Subscription of that topic whose filters match the resource and whose owner may see it gets the next event
number and a notification in the outbox — in the same transaction, so a change is never committed without its
notifications, nor a notification queued for a change that was not. Delivery is the outbox's
(``gateway.routing.delivery``): retries, backoff, dead letters, metrics, outbound authentication, and the order of
each Subscription's notifications (``gateway.store.subscriptions``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.fhir.codec import serialize_resource
from gateway.fhir.media import FhirFormat
from gateway.fhir.primitives import fhir_instant, utc_now
from gateway.fhir.search import IndexEntry, index_entries
from gateway.fhir.types import Resource
from gateway.notify.bundles import NotifiedEvent, notification_bundle
from gateway.notify.opposition import minimal, opposed_referrals, received
from gateway.notify.topics import TOPIC_OF_TYPE, TOPICS, Channel, Topic, channel_of, filters_of
from gateway.store.database import Database
from gateway.store.outbox import WAITING
from gateway.store.repository import Change, StoredResource
from gateway.store.subscriptions import SubscriptionEvent, SubscriptionRecord
from gateway.store.unit_of_work import UnitOfWork

HANDSHAKE, HEARTBEAT, EVENT = "handshake", "heartbeat", "event-notification"
#: The outbox event of each notification type.
OUTBOX_EVENT = {kind: f"subscription-{kind}" for kind in (HANDSHAKE, HEARTBEAT, EVENT)}


def _format(payload_type: str) -> FhirFormat:
    return FhirFormat.XML if payload_type.endswith("xml") else FhirFormat.JSON


async def queue_notification(
    uow: UnitOfWork,
    record: SubscriptionRecord,
    base_url: str,
    kind: str,
    now: datetime,
    change: Change | None = None,
    resource: Resource | None = None,
) -> int | None:
    """Number and queue one notification of ``record`` (an event's when ``change`` is given, its focus carried as
    ``resource`` — the minimal form after an opposition — or as written); the event number given, or None when the
    Subscription is no longer live."""
    numbers = await uow.subscriptions.next_number(record.id, now, event=change is not None)
    if numbers is None:
        return None
    event_number, sequence, status = numbers
    channel = channel_of(record.content)
    events: list[NotifiedEvent] = []
    focus: str | None = None
    if change is not None:
        stored = change.after
        focus = stored.reference
        uow.subscriptions.add_event(
            SubscriptionEvent(record.id, event_number, now, stored.resource_type, stored.id, stored.version_id)
        )
        notified = stored.content if resource is None else resource
        events.append(NotifiedEvent(event_number, now, focus, notified, change.before is None))
    if change is not None and status == WAITING and channel.max_count > 1:
        # The subscriber takes several events per notification: this one joins the last notification still
        # waiting, if there is room in it (it is not being sent: it waits, and the row lock is ours).
        last = await uow.subscriptions.last_waiting(record.id)
        carried = last.payload.get("events") if last is not None and last.event == OUTBOX_EVENT[EVENT] else None
        if last is not None and isinstance(carried, list) and len(carried) < channel.max_count:
            events = [_event_from(item) for item in carried] + events
            payload = _payload(record, base_url, last.id, kind, event_number, events, channel, now, focus)
            if await uow.subscriptions.rewrite_waiting(last.id, payload):
                return event_number
    bundle_id = f"{record.id}-{sequence:012d}"  # sorts in the Subscription's order (its outbox id too)
    uow.outbox.enqueue(
        id=bundle_id,
        destination=record.destination,
        endpoint=channel.endpoint,
        event=OUTBOX_EVENT[kind],
        payload=_payload(record, base_url, bundle_id, kind, event_number, events, channel, now, focus),
        now=now,
        status=status,
    )
    return event_number if change is not None else None


def _payload(
    record: SubscriptionRecord,
    base_url: str,
    bundle_id: str,
    kind: str,
    event_number: int,
    events: Sequence[NotifiedEvent],
    channel: Channel,
    now: datetime,
    focus: str | None,
) -> dict[str, Any]:
    """An outbox entry's payload: the notification as posted; with ``backport-max-count``, its events too, so that
    later ones may join it while it waits."""
    bundle = notification_bundle(
        base_url, bundle_id, record.id, record.topic, record.status, kind, event_number, events, channel.content, now
    )
    payload: dict[str, Any] = {
        "client": record.owner or None,
        "subscription": record.id,
        "focus": focus,
        "post": {
            "content_type": channel.payload_type,
            "headers": list(channel.headers),
            "body": serialize_resource(bundle, _format(channel.payload_type)).decode(),
        },
    }
    if channel.timeout is not None:
        payload["post"]["timeout"] = channel.timeout  # backport-timeout: the POST's time limit
    if kind == EVENT and channel.max_count > 1:
        payload["events"] = [
            {
                "number": event.number,
                "timestamp": fhir_instant(event.timestamp),
                "focus": event.focus,
                "resource": event.resource if channel.content == "full-resource" else None,
                "created": event.created,
            }
            for event in events
        ]
    return payload


def _event_from(item: dict[str, Any]) -> NotifiedEvent:
    return NotifiedEvent(
        int(item["number"]),
        datetime.fromisoformat(str(item["timestamp"])),
        str(item["focus"]),
        item.get("resource"),
        bool(item.get("created")),
    )


@dataclass(frozen=True, slots=True)
class Notifier:
    """The change listener; ``base_url``: the gateway's FHIR base, what notifications reference."""

    base_url: str

    async def __call__(self, uow: UnitOfWork, changes: Sequence[Change]) -> None:
        matched = await _matched(uow, changes)
        if not matched:
            return
        # After an opposition, only who had the referral hears of it, in the minimal form (``opposition``).
        revoked = await opposed_referrals(
            uow, {c.after.reference for _, changes_of in matched.values() for c in changes_of}
        )
        # Numbered Subscription by Subscription, in the order of their ids: two transactions take their row locks
        # in the same order (never a deadlock); each one's events in the order of the changes.
        now = utc_now()
        for subscription_id in sorted(matched):
            record, changes_of = matched[subscription_id]
            for change in changes_of:
                service_request = revoked.get(change.after.reference)
                if service_request is None:
                    await queue_notification(uow, record, self.base_url, EVENT, now, change)
                elif await received(uow, record, service_request):
                    cut = minimal(change.after.content)
                    await queue_notification(uow, record, self.base_url, EVENT, now, change, cut)


async def _matched(uow: UnitOfWork, changes: Sequence[Change]) -> dict[str, tuple[SubscriptionRecord, list[Change]]]:
    """The live Subscriptions that hear of these changes — a topic they trigger, the Subscription's filters
    matching, its owner allowed to see the resource —, by id, each with its changes in order."""
    triggered: list[tuple[Topic, Change]] = []
    for change in changes:
        topic = TOPIC_OF_TYPE.get(change.after.resource_type)
        if topic is not None and topic.triggered(change.before, change.after.content):
            triggered.append((topic, change))
    if not triggered:
        return {}
    live = await uow.subscriptions.live({topic.url for topic, _ in triggered})
    matched: dict[str, tuple[SubscriptionRecord, list[Change]]] = {}
    for topic, change in triggered:
        entries: list[IndexEntry] | None = None  # only for a change some Subscription of its topic may hear of
        for record in live:
            if record.topic != topic.url:
                continue
            if entries is None:
                entries = index_entries(change.after.content)
            if not all(f.matches(entries) for f in filters_of(TOPICS[record.topic], record.content)):
                continue
            # Nothing the owner may not see, and so no filter tells it that something exists.
            if not await uow.visibility.can_see(record.viewer, change.after.resource_type, change.after.id):
                continue
            matched.setdefault(record.id, (record, []))[1].append(change)
    return matched


async def hearing_of(uow: UnitOfWork, resources: Sequence[StoredResource]) -> list[str]:
    """The Subscriptions that may hear of a change of these resources, as they stand — what a transaction that will
    change them, and holds Subscriptions' rows already, locks with those, in one order, before it changes them
    (``gateway.store.subscriptions``). A superset: the change may not trigger a topic, or be about a referral
    revoked since for an opposition."""
    return sorted(await _matched(uow, [Change(None, stored) for stored in resources]))


def listen(database: Database, base_url: str) -> None:
    """Number and queue Subscriptions' events in every unit of work of ``database`` (once, however often asked:
    the API and the worker of one process share their database)."""
    if not any(isinstance(listener, Notifier) for listener in database.change_listeners):
        database.change_listeners.append(Notifier(base_url))
