"""Subscriptions as their owners manage them: create (checked, stored ``requested``, handshake queued in the same
transaction), read, search, update (its status to ``off``, or back to ``requested``), delete, ``$status`` and
``$events``. A client reaches its own Subscriptions only: another's is a 404, as if it did not exist."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gateway.errors import BusinessRuleViolation, InvalidRequest, IssueCode, PreconditionFailed, ResourceNotFound
from gateway.fhir.primitives import new_id, utc_now
from gateway.fhir.types import Resource
from gateway.notify.bundles import NotifiedEvent, notification_bundle, status_bundle, status_parameters
from gateway.notify.events import HANDSHAKE, queue_notification
from gateway.notify.opposition import minimal, withheld_referrals
from gateway.notify.topics import BACKPORT_SUBSCRIPTION, CONTENTS, read_subscription
from gateway.store.database import Database
from gateway.store.subscriptions import OFF, REQUESTED, SubscriptionRecord
from gateway.store.unit_of_work import UnitOfWork
from gateway.store.visibility import Viewer

#: What an owner may set the status to: off (stop), or requested (handshake again, after an error or off).
SETTABLE = (OFF, REQUESTED)
#: The most events one ``$events`` call answers.
MAX_EVENTS = 100


@dataclass(frozen=True, slots=True)
class Owner:
    """Who manages Subscriptions: the client id ('' with authentication off, when any caller sees them all — as
    an operator), and what it may see."""

    client_id: str
    viewer: Viewer
    everything: bool = False

    @property
    def scope(self) -> str | None:
        """The owner to filter by; None: every Subscription (an operator)."""
        return None if self.everything else self.client_id


def _not_found(subscription_id: str) -> ResourceNotFound:
    return ResourceNotFound.single(IssueCode.RESOURCE_NOT_FOUND, f"Subscription/{subscription_id} is not known", None)


def _stored_content(resource: Resource) -> Resource:
    content = {k: v for k, v in resource.items() if k not in ("id", "meta", "status", "error")}
    content["meta"] = {"profile": [BACKPORT_SUBSCRIPTION]}
    return content


async def create(
    database: Database,
    owner: Owner,
    resource: Resource,
    endpoint: Callable[[object, str], str | None],
    base_url: str,
) -> SubscriptionRecord:
    if resource.get("resourceType") != "Subscription":
        raise InvalidRequest.single(IssueCode.RESOURCE_TYPE_UNSUPPORTED, "the body must be a Subscription", None)
    status = resource.get("status")
    if status not in (None, REQUESTED):
        raise BusinessRuleViolation.single(
            IssueCode.SUBSCRIPTION_INVALID,
            "a Subscription is created 'requested'; the gateway makes it active after its handshake",
            "Subscription.status",
        )
    request = read_subscription(resource, endpoint)
    now = utc_now()
    async with UnitOfWork(database) as uow:
        record = await uow.subscriptions.add(
            id=new_id(),
            owner=owner.client_id,
            viewer=owner.viewer,
            topic=request.topic.url,
            content=_stored_content(resource),
            heartbeat_period=request.heartbeat_period,
            now=now,
        )
        await queue_notification(uow, record, base_url, HANDSHAKE, now)
        await uow.commit()
    return record


async def read(database: Database, owner: Owner, subscription_id: str) -> SubscriptionRecord:
    async with UnitOfWork(database, write=False) as uow:
        record = await uow.subscriptions.get(subscription_id, owner.scope)
    if record is None:
        raise _not_found(subscription_id)
    return record


async def search(database: Database, owner: Owner, status: str | None) -> list[SubscriptionRecord]:
    async with UnitOfWork(database, write=False) as uow:
        return await uow.subscriptions.of_owner(owner.scope, status)


async def update(
    database: Database,
    owner: Owner,
    subscription_id: str,
    resource: Resource,
    if_match: str | None,
    base_url: str,
) -> SubscriptionRecord:
    """Only the status changes (off, or requested for a new handshake); anything else is a 422 naming it."""
    if resource.get("resourceType") != "Subscription" or resource.get("id") != subscription_id:
        raise InvalidRequest.single(
            IssueCode.RESOURCE_TYPE_UNSUPPORTED, "the body must be this Subscription, with its id", "Subscription.id"
        )
    async with UnitOfWork(database) as uow:
        # Its row first, locked, before its queue (``gateway.store.subscriptions``' lock order): a handshake
        # recorded meanwhile waits, rather than making this a 412 the client did not ask for.
        current = await uow.subscriptions.get(subscription_id, owner.scope, for_update=True)
        if current is None:
            raise _not_found(subscription_id)
        if if_match is not None and if_match.strip().removeprefix("W/") != current.etag.removeprefix("W/"):
            raise PreconditionFailed.single(
                IssueCode.CONCURRENT_CHANGE, f"the Subscription is at version {current.version_id}", None
            )
        changed = sorted(
            key
            for key in set(resource) | set(current.content)
            if key not in ("id", "meta", "status", "error", "text") and resource.get(key) != current.content.get(key)
        )
        if changed:
            raise BusinessRuleViolation.single(
                IssueCode.SUBSCRIPTION_CHANGE_NOT_ALLOWED,
                f"only the status of a Subscription may change ({', '.join(changed)} did)",
                f"Subscription.{changed[0]}",
            )
        status = resource.get("status")
        if status == current.status:
            return current
        if status not in SETTABLE:
            raise BusinessRuleViolation.single(
                IssueCode.SUBSCRIPTION_CHANGE_NOT_ALLOWED,
                f"a Subscription's status may be set to {' or '.join(SETTABLE)} only",
                "Subscription.status",
            )
        now = utc_now()
        updated = await uow.subscriptions.set_status(current, str(status), now)
        if updated is None:
            raise PreconditionFailed.single(IssueCode.CONCURRENT_CHANGE, "the Subscription changed meanwhile", None)
        if updated.status == REQUESTED:
            await queue_notification(uow, updated, base_url, HANDSHAKE, now)
        await uow.commit()
    return updated


async def delete(database: Database, owner: Owner, subscription_id: str) -> None:
    async with UnitOfWork(database) as uow:
        current = await uow.subscriptions.get(subscription_id, owner.scope, for_update=True)
        if current is None:
            raise _not_found(subscription_id)
        await uow.subscriptions.delete(current, utc_now())
        await uow.commit()


async def status(database: Database, owner: Owner, subscription_id: str, base_url: str) -> Resource:
    record = await read(database, owner, subscription_id)
    parameters = status_parameters(
        base_url, record.id, record.topic, record.status, "query-status", record.events_count, [], "id-only"
    )
    return status_bundle(base_url, parameters, utc_now())


async def events(
    database: Database,
    owner: Owner,
    subscription_id: str,
    base_url: str,
    since: int | None,
    until: int | None,
    content: str | None,
) -> Resource:
    """The events kept of this Subscription (7 days) between the two numbers, as a ``query-event`` notification
    Bundle — what a subscriber that saw a gap in event numbers asks for. ``full-resource``: each focus as it was
    at its event (the version then written)."""
    if content is not None and content not in CONTENTS:
        raise InvalidRequest.single(
            IssueCode.SUBSCRIPTION_PAYLOAD_UNSUPPORTED, f"content is one of {', '.join(CONTENTS)}", "content"
        )
    async with UnitOfWork(database, write=False) as uow:
        record = await uow.subscriptions.get(subscription_id, owner.scope)
        if record is None:
            raise _not_found(subscription_id)
        last = record.events_count
        low = max(1, since or 1)
        high = min(last, until if until is not None else last, low + MAX_EVENTS - 1)
        kept = await uow.subscriptions.events(record.id, low, high) if low <= high else []
        mode = content or "id-only"
        versions = {}
        if mode == "full-resource":
            # A referral whose patient objects since — revoked for it, or closed before it: its resources in the
            # minimal form only, as a notification leaving now carries them (the REST read is the party's record).
            revoked = await withheld_referrals(
                uow, {f"{event.focus_type}/{event.focus_id}" for event in kept}, utc_now()
            )
            for event in kept:
                stored = await uow.resources.get_version(event.focus_type, event.focus_id, event.focus_version)
                if stored is not None:
                    about = f"{event.focus_type}/{event.focus_id}"
                    versions[event.number] = minimal(stored.content) if about in revoked else stored.content
    notified = [
        NotifiedEvent(
            event.number,
            event.occurred_at,
            f"{event.focus_type}/{event.focus_id}",
            versions.get(event.number),
            event.focus_version == 1,
        )
        for event in kept
    ]
    return notification_bundle(
        base_url, new_id(), record.id, record.topic, record.status, "query-event", last, notified, mode, utc_now()
    )
