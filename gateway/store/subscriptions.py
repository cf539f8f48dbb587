"""FHIR Subscriptions as stored (DESIGN §12): each one's owner and view, status and counters, its events, and the
order of its notifications in the outbox.

A Subscription's notifications are outbox entries of the destination ``subscription/{id}``, delivered one at a
time, in order: an entry queued while an earlier one of the same Subscription is still pending (or waiting) is
queued ``waiting``, and becomes ``pending`` when the one before it is delivered. One dead-lettered (its retries
spent, or refused for good) holds the rest: they stay ``waiting`` — numbered, kept, nothing lost — and the
Subscription's ``error`` says so, until that notification is replayed (``replay``: queued again ahead of them,
under its id) and delivered; then they follow, in order. So a subscriber gets every event once, in order, with no
gap, whatever an operator replays when. Both sides take
the Subscription's row lock first (``next_number`` on queueing, ``notifications_ended`` on recording an outcome),
so a notification queued while the one before it ends is never left waiting: either the queueing sees the earlier
one ended, or the recording sees the new one waiting.

The lock order, everywhere: the resources a transaction changes, then Subscriptions' rows (in the order of their
ids), then the outbox rows of their queues. A change numbers its Subscriptions' events after it wrote its
resources; ending (``set_status`` off, ``delete``) and replaying take the Subscription's row before they touch its
queue; the worker, whose recording writes the outcomes of notifications (their outbox rows) before it moves their
queues on and shows deliveries on Tasks, takes those Tasks' rows and its notifications' Subscriptions' first
(``lock``).
Taken the other way round by one side, an owner setting its Subscription off while the worker recorded one of its
notifications deadlocked on PostgreSQL (the one holding the outbox row waited for the Subscription's, and the
other the reverse).

Event numbers come from the same row (``events_count``), incremented in the transaction of the change: they run
1, 2, 3… per Subscription, without gaps, and a number is never given twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.fhir.primitives import fhir_instant
from gateway.fhir.types import Resource
from gateway.store.outbox import DEAD, DELIVERED, PENDING, WAITING, OutboxEntry
from gateway.store.repository import PendingWrites, as_utc
from gateway.store.tables import outbox, subscription_events, subscriptions
from gateway.store.visibility import Viewer

#: The outbox destination of a Subscription's notifications: this prefix, then its id.
SUBSCRIPTION_PREFIX = "subscription/"
REQUESTED, ACTIVE, ERROR, OFF = "requested", "active", "error", "off"
#: The statuses in which a Subscription is given events (a requested one's wait behind its handshake).
LIVE = (REQUESTED, ACTIVE)
HANDSHAKE = "subscription-handshake"
#: A heartbeat carries no event: dead-lettered, it holds nothing (the queue goes on, the error is not set).
HEARTBEAT = "subscription-heartbeat"


def destination_of(subscription_id: str) -> str:
    return f"{SUBSCRIPTION_PREFIX}{subscription_id}"


def _held(destination: Any) -> sa.ColumnElement[bool]:
    """Whether a dead letter holds this Subscription queue: one dead (an event's) with nothing of the queue
    delivered after it. Dead letters of an ended queue stop holding once a later handshake is delivered."""
    dead, later = outbox.alias("dead"), outbox.alias("later")
    delivered_after = sa.exists().where(
        later.c.destination == dead.c.destination, later.c.status == DELIVERED, later.c.id > dead.c.id
    )
    return sa.exists().where(
        dead.c.destination == destination,
        dead.c.status == DEAD,
        dead.c.event.not_in((HANDSHAKE, HEARTBEAT)),
        ~delivered_after,
    )


def viewer_json(viewer: Viewer) -> str:
    return orjson.dumps(
        {
            "everything": viewer.everything,
            "sender": viewer.sender,
            "platform_organization": viewer.platform_organization,
            "professionals": viewer.professionals,
        }
    ).decode()


def _viewer(text: str) -> Viewer:
    data = orjson.loads(text)
    organization = data.get("platform_organization")
    return Viewer(
        everything=bool(data.get("everything")),
        sender=data.get("sender"),
        platform_organization=(organization[0], organization[1]) if organization else None,
        professionals=tuple((system, value) for system, value in data.get("professionals") or ()),
    )


@dataclass(frozen=True, slots=True)
class SubscriptionRecord:
    id: str
    owner: str
    viewer: Viewer
    topic: str
    status: str
    content: Resource
    version_id: int
    last_updated: datetime
    events_count: int
    notifications_count: int
    last_queued_at: datetime | None
    heartbeat_period: int | None
    error: str | None

    @classmethod
    def from_row(cls, row: Any) -> SubscriptionRecord:
        return cls(
            row.id,
            row.owner,
            _viewer(row.viewer),
            row.topic,
            row.status,
            orjson.loads(row.content),
            row.version_id,
            as_utc(row.last_updated),
            row.events_count,
            row.notifications_count,
            as_utc(row.last_queued_at) if row.last_queued_at else None,
            row.heartbeat_period,
            row.error,
        )

    @property
    def destination(self) -> str:
        return destination_of(self.id)

    @property
    def etag(self) -> str:
        return f'W/"{self.version_id}"'

    def resource(self) -> Resource:
        """The Subscription as its owner reads it: its status (and error) as they stand."""
        content = dict(self.content)
        content["id"] = self.id
        content["meta"] = {"versionId": str(self.version_id), "lastUpdated": fhir_instant(self.last_updated)}
        content["status"] = self.status
        if self.error:
            content["error"] = self.error
        else:
            content.pop("error", None)
        return content


@dataclass(frozen=True, slots=True)
class SubscriptionEvent:
    subscription_id: str
    number: int
    occurred_at: datetime
    focus_type: str
    focus_id: str
    focus_version: int


#: ``SubscriptionRepository.live``'s statement, built once: it runs at every commit that changes a resource, and
#: building it afresh (and its cache key) cost more than running it (issue 21).
_LIVE = (
    sa.select(subscriptions)
    .where(subscriptions.c.topic.in_(sa.bindparam("topics", expanding=True)), subscriptions.c.status.in_(LIVE))
    .order_by(subscriptions.c.id)
)


class SubscriptionRepository:
    def __init__(self, connection: AsyncConnection, pending: PendingWrites) -> None:
        self._connection = connection
        self._pending = pending

    async def _execute(self, statement: sa.Executable, parameters: Any = None) -> sa.CursorResult[Any]:
        await self._pending.flush(self._connection)
        return await self._connection.execute(statement, parameters)

    async def add(
        self,
        *,
        id: str,
        owner: str,
        viewer: Viewer,
        topic: str,
        content: Resource,
        heartbeat_period: int | None,
        now: datetime,
    ) -> SubscriptionRecord:
        row = {
            "id": id,
            "owner": owner,
            "viewer": viewer_json(viewer),
            "topic": topic,
            "status": REQUESTED,
            "content": orjson.dumps(content).decode(),
            "version_id": 1,
            "last_updated": now,
            "events_count": 0,
            "notifications_count": 0,
            "last_queued_at": None,
            "heartbeat_period": heartbeat_period,
            "error": None,
        }
        await self._execute(sa.insert(subscriptions).values(**row))
        return SubscriptionRecord.from_row(_Row(row))

    async def get(
        self, subscription_id: str, owner: str | None = None, *, for_update: bool = False
    ) -> SubscriptionRecord | None:
        """The Subscription; None when there is none, or (``owner`` given) it is another client's. ``for_update``:
        its row locked until the transaction ends (what changes it reads it so: nothing moves it meanwhile)."""
        s = subscriptions.c
        query = sa.select(subscriptions).where(s.id == subscription_id)
        if owner is not None:
            query = query.where(s.owner == owner)
        if for_update:
            query = query.with_for_update()
        row = (await self._execute(query)).first()
        return SubscriptionRecord.from_row(row) if row else None

    async def of_owner(self, owner: str | None, status: str | None = None) -> list[SubscriptionRecord]:
        s = subscriptions.c
        query = sa.select(subscriptions).order_by(s.last_updated, s.id)
        if owner is not None:
            query = query.where(s.owner == owner)
        if status is not None:
            query = query.where(s.status == status)
        return [SubscriptionRecord.from_row(row) for row in await self._execute(query)]

    async def live(self, topics: Iterable[str]) -> list[SubscriptionRecord]:
        """The Subscriptions of these topics that are given events (requested or active). Read without flushing
        the unit of work's writes first: on PostgreSQL it is then one read before them, and a change that no
        Subscription hears of keeps its writes one statement (``gateway.store.database``)."""
        topics = sorted(set(topics))
        if not topics:
            return []
        result = await self._connection.execute(_LIVE, {"topics": topics})
        return [SubscriptionRecord.from_row(row) for row in result]

    async def set_status(
        self, current: SubscriptionRecord, status: str, now: datetime, content: Resource | None = None
    ) -> SubscriptionRecord | None:
        """The next version with this status (and content); None when another writer changed it first."""
        s = subscriptions.c
        values: dict[str, Any] = {"status": status, "version_id": current.version_id + 1, "last_updated": now}
        if content is not None:
            values["content"] = orjson.dumps(content).decode()
        result = await self._execute(
            sa.update(subscriptions)
            .where(s.id == current.id, s.version_id == current.version_id)
            .values(**values)
            .returning(*subscriptions.c)
        )
        row = result.first()
        if row is None:
            return None
        if status not in LIVE:
            await self._end_queue(current.id, f"the Subscription is {status}", now)
        return SubscriptionRecord.from_row(row)

    async def delete(self, current: SubscriptionRecord, now: datetime) -> bool:
        s = subscriptions.c
        result = await self._execute(sa.delete(subscriptions).where(s.id == current.id))
        await self._execute(sa.delete(subscription_events).where(subscription_events.c.subscription_id == current.id))
        await self._end_queue(current.id, "the Subscription was deleted", now)
        return bool(result.rowcount)

    async def _end_queue(self, subscription_id: str, reason: str, now: datetime) -> None:
        """What is still queued for a Subscription that ended is not sent: dead letters, saying why (not lost)."""
        o = outbox.c
        await self._execute(
            sa.update(outbox)
            .where(o.destination == destination_of(subscription_id), o.status.in_((PENDING, WAITING)))
            .values(status=DEAD, last_error=reason, lease_owner=None, lease_expires_at=None, delivered_at=None)
        )

    # --- numbering and order ---

    async def lock(self, destinations: Iterable[str]) -> None:
        """Take the row locks of the Subscriptions these outbox destinations name (others are ignored), in the
        order of their ids: before any outbox row of their queues (the module's lock order). SQLite has one writer:
        nothing to take."""
        ids = sorted({d.removeprefix(SUBSCRIPTION_PREFIX) for d in destinations if d.startswith(SUBSCRIPTION_PREFIX)})
        if ids and self._connection.dialect.name == "postgresql":
            s = subscriptions.c
            await self._execute(sa.select(s.id).where(s.id.in_(ids)).order_by(s.id).with_for_update(key_share=False))

    async def next_number(self, subscription_id: str, now: datetime, *, event: bool) -> tuple[int, int, str] | None:
        """Take the Subscription's row lock and its next numbers: (event number — the last one when not ``event``
        —, notification number, the outbox status the new notification is queued with). None when it is no
        longer there or live."""
        s = subscriptions.c
        result = await self._execute(
            sa.update(subscriptions)
            .where(s.id == subscription_id, s.status.in_(LIVE))
            .values(
                events_count=s.events_count + (1 if event else 0),
                notifications_count=s.notifications_count + 1,
                last_queued_at=now,
            )
            .returning(s.events_count, s.notifications_count)
        )
        row: Any = result.first()
        if row is None:
            return None
        o = outbox.c
        destination = destination_of(subscription_id)
        queued = sa.exists().where(o.destination == destination, o.status.in_((PENDING, WAITING)))
        # An event queued after a dead letter waits behind it too, even when nothing else did (its replay first).
        earlier = await self._execute(sa.select(sa.or_(queued, _held(destination)) if event else queued))
        return int(row[0]), int(row[1]), WAITING if earlier.scalar_one() else PENDING

    async def last_waiting(self, subscription_id: str) -> OutboxEntry | None:
        """The Subscription's last notification still waiting behind another (call under its row lock: nothing
        sends it meanwhile)."""
        o = outbox.c
        row = (
            await self._execute(
                sa.select(outbox)
                .where(o.destination == destination_of(subscription_id), o.status == WAITING)
                .order_by(o.id.desc())
                .limit(1)
            )
        ).first()
        return OutboxEntry.from_row(row) if row else None

    async def rewrite_waiting(self, entry_id: str, payload: dict[str, Any]) -> bool:
        """A waiting notification given more events (``backport-max-count``)."""
        o = outbox.c
        result = await self._execute(
            sa.update(outbox)
            .where(o.id == entry_id, o.status == WAITING)
            .values(payload=orjson.dumps(payload).decode())
        )
        return bool(result.rowcount == 1)

    async def replay(self, entry_id: str, now: datetime) -> bool | None:
        """Queue a Subscription's notification again, under its id, in its place in the Subscription's order: due at
        once when nothing else of the Subscription is being sent, else ``waiting`` — its id sorts before those of
        the notifications queued after it, so it is the next one sent. None when ``entry_id`` is not a
        Subscription's notification; False when there is none, it is still queued (waiting, or being sent), it is
        a dead letter of a queue that went on since (a new handshake delivered), or its Subscription is no longer
        live (off, error, deleted: a new handshake, status ``requested``, starts it again)."""
        o, s = outbox.c, subscriptions.c
        destination = (await self._execute(sa.select(o.destination).where(o.id == entry_id))).scalar_one_or_none()
        if destination is None or not destination.startswith(SUBSCRIPTION_PREFIX):
            return None
        subscription_id = destination.removeprefix(SUBSCRIPTION_PREFIX)
        await self.lock([destination])  # its row before its queue
        status = (await self._execute(sa.select(s.status).where(s.id == subscription_id))).scalar_one_or_none()
        if status not in LIVE:
            return False
        sending = await self._execute(
            sa.select(sa.exists().where(o.destination == destination, o.status == PENDING, o.id != entry_id))
        )
        later = outbox.alias("later")
        delivered_since = sa.exists().where(
            later.c.destination == destination, later.c.status == DELIVERED, later.c.id > entry_id
        )
        result = await self._execute(
            sa.update(outbox)
            # Not one still queued: it is sent in its turn (replayed, a waiting one would go past a dead letter);
            # nor a dead letter with something of its queue delivered since (a new handshake): it would come after.
            .where(o.id == entry_id, sa.or_(o.status == DELIVERED, sa.and_(o.status == DEAD, ~delivered_since)))
            .values(
                status=WAITING if sending.scalar_one() else PENDING,
                attempts=0,
                next_attempt_at=now,
                lease_owner=None,
                lease_expires_at=None,
            )
        )
        return bool(result.rowcount == 1)

    def add_event(self, event: SubscriptionEvent) -> None:
        self._pending.add(
            subscription_events,
            {
                "subscription_id": event.subscription_id,
                "event_number": event.number,
                "occurred_at": event.occurred_at,
                "focus_type": event.focus_type,
                "focus_id": event.focus_id,
                "focus_version": event.focus_version,
            },
        )

    async def notified_of(self, subscription_id: str, focuses: Sequence[tuple[str, str]]) -> bool:
        """Whether an event of the Subscription kept (7 days) is about one of these resources (type, id)."""
        e = subscription_events.c
        by_type: dict[str, list[str]] = {}
        for resource_type, resource_id in focuses:
            by_type.setdefault(resource_type, []).append(resource_id)
        if not by_type:
            return False
        about = sa.or_(*(sa.and_(e.focus_type == t, e.focus_id.in_(ids)) for t, ids in by_type.items()))
        result = await self._execute(sa.select(sa.exists().where(e.subscription_id == subscription_id, about)))
        return bool(result.scalar_one())

    async def events(self, subscription_id: str, since: int, until: int) -> list[SubscriptionEvent]:
        e = subscription_events.c
        result = await self._execute(
            sa.select(subscription_events)
            .where(e.subscription_id == subscription_id, e.event_number >= since, e.event_number <= until)
            .order_by(e.event_number)
        )
        return [
            SubscriptionEvent(
                row.subscription_id,
                row.event_number,
                as_utc(row.occurred_at),
                row.focus_type,
                row.focus_id,
                row.focus_version,
            )
            for row in result
        ]

    async def purge_events(self, before: datetime) -> int:
        result = await self._execute(sa.delete(subscription_events).where(subscription_events.c.occurred_at < before))
        return int(result.rowcount or 0)

    async def heartbeats_due(self, now: datetime) -> list[SubscriptionRecord]:
        """Active Subscriptions with a heartbeat period to which nothing was queued for that long."""
        s, o = subscriptions.c, outbox.c
        waiting = sa.exists().where(
            o.destination == sa.literal(SUBSCRIPTION_PREFIX) + s.id, o.status.in_((PENDING, WAITING))
        )
        # In the order of their ids: the heartbeats are queued — their rows locked — in the module's lock order.
        query = (
            sa.select(subscriptions).where(s.status == ACTIVE, s.heartbeat_period.is_not(None), ~waiting).order_by(s.id)
        )
        due = []
        for row in await self._execute(query):
            record = SubscriptionRecord.from_row(row)
            last = record.last_queued_at or record.last_updated
            if record.heartbeat_period and (now - last).total_seconds() >= record.heartbeat_period:
                due.append(record)
        return due

    async def notifications_ended(self, ended: Sequence[tuple[str, str, str]], now: datetime) -> int:
        """Notifications delivered or dead-lettered — (destination, event, outbox status) —: under each
        Subscription's row lock, a handshake's outcome makes it ``active`` (delivered) or ``error`` (retries
        spent), and its next waiting notification becomes due. Returns how many became due."""
        s, o = subscriptions.c, outbox.c
        promoted = 0
        for destination, event, status in sorted(ended):  # row locks in one order, as ``next_number`` takes them
            subscription_id = destination.removeprefix(SUBSCRIPTION_PREFIX)
            values: dict[str, Any] = {"last_queued_at": s.last_queued_at}  # the lock, whatever else changes
            held_still = False
            if event == HANDSHAKE:
                handshake = {DELIVERED: ACTIVE, DEAD: ERROR}.get(status)
                if handshake is not None:
                    values = {
                        "status": sa.case((s.status == REQUESTED, handshake), else_=s.status),
                        "version_id": sa.case((s.status == REQUESTED, s.version_id + 1), else_=s.version_id),
                        "last_updated": sa.case((s.status == REQUESTED, now), else_=s.last_updated),
                        "error": sa.case(
                            (s.status == REQUESTED, "the handshake was not delivered" if handshake == ERROR else None),
                            else_=s.error,
                        ),
                    }
            elif event == HEARTBEAT and status == DEAD:
                # No event lost: the next one goes (unless an event's dead letter holds them), no error set.
                held_still = bool((await self._execute(sa.select(_held(destination)))).scalar_one())
            elif status == DELIVERED and (await self._execute(sa.select(_held(destination)))).scalar_one():
                # One before the dead letter (its replay, a duplicate the receiver drops) or a heartbeat: the rest
                # still wait for the dead letter's replay, and the error stays.
                held_still = True
            else:
                # A notification dead-lettered holds the rest of the queue: the owner reads why; one delivered (its
                # replay) moves it on again.
                held = (
                    "a notification was not delivered (a dead letter: gateway outbox list --status dead); the next "
                    "ones wait until it is replayed (gateway outbox replay ID)"
                )
                changed = s.error.is_distinct_from(held) if status == DEAD else s.error.is_not(None)
                values = {
                    "error": sa.case((changed, held if status == DEAD else None), else_=s.error),
                    "version_id": sa.case((changed, s.version_id + 1), else_=s.version_id),
                    "last_updated": sa.case((changed, now), else_=s.last_updated),
                }
            await self._execute(sa.update(subscriptions).where(s.id == subscription_id).values(**values))
            if event == HANDSHAKE and status == DEAD:
                # Its endpoint never took the handshake: nothing more is sent until the owner asks for another one.
                await self._end_queue(subscription_id, "the Subscription's handshake was not delivered", now)
                continue
            if (status == DEAD and event != HEARTBEAT) or held_still:
                continue  # the next ones wait for the dead letter's replay
            following = (
                sa.select(o.id)
                .where(o.destination == destination, o.status == WAITING)
                .order_by(o.id)
                .limit(1)
                .scalar_subquery()
            )
            still_pending = await self._execute(
                sa.select(sa.exists().where(o.destination == destination, o.status == PENDING))
            )
            if not still_pending.scalar_one():
                result = await self._execute(
                    sa.update(outbox).where(o.id == following).values(status=PENDING, next_attempt_at=now)
                )
                promoted += int(result.rowcount or 0)
        return promoted


class _Row:
    """A row's values as attributes (what ``from_row`` reads), for a row just inserted."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)
