"""The outbox: deliveries written in the transaction of the change they announce, then leased by workers.

A lease is a time-limited claim (``lease_owner``, ``lease_expires_at``): a worker that dies mid-delivery loses
nothing, its rows are taken again when the lease expires. On PostgreSQL claims use ``FOR UPDATE SKIP LOCKED``
so several workers never wait on each other; on SQLite the single writer serialises claims.
"""

from __future__ import annotations

import builtins
import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.store.repository import PendingWrites, any_of, as_utc, rows_in
from gateway.store.tables import outbox, referral_origins, referral_senders, resources, search_index

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
#: Queued behind an earlier entry of the same destination that must be delivered (or dead-lettered) first: the
#: notifications of one Subscription, in order (``gateway.store.subscriptions``). Never claimed as such.
WAITING = "waiting"


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    id: str
    destination: str
    endpoint: str
    event: str
    payload: dict[str, Any]
    task_id: str | None
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None = None
    created_at: datetime | None = None
    delivered_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Any) -> OutboxEntry:
        return cls(
            row.id,
            row.destination,
            row.endpoint,
            row.event,
            orjson.loads(row.payload),
            row.task_id,
            row.status,
            row.attempts,
            as_utc(row.next_attempt_at),
            row.last_error,
            as_utc(row.created_at) if row.created_at else None,
            as_utc(row.delivered_at) if row.delivered_at else None,
        )


@dataclass(frozen=True, slots=True)
class Finished:
    """What became of one attempt: ``status`` delivered, dead, or pending again from ``at`` (a retry); for a
    delivery, ``at`` is when it was delivered."""

    id: str
    status: str
    attempts: int
    at: datetime
    error: str | None = None


# Bounded: its shape counts the destinations in flight, and Subscriptions' are one each (issue 21: memory).
@functools.lru_cache(maxsize=64)
def _claim_statement(skip_locked: bool, full: int, open_rooms: int, limited: bool) -> sa.Update:
    """The claim's statement for its shape (how many destinations are full, how many have a room of their own),
    built once: building and cache-keying this tree of CTEs afresh cost more than running it. Parameters: ``now``,
    ``owner``, ``lease_until``, ``limit``, ``scan_limit``, ``per_destination``, ``full`` (destinations skipped),
    ``room_destination_N`` / ``room_N``."""
    o = outbox.c
    now = sa.bindparam("now", type_=o.next_attempt_at.type)
    due = [
        o.status == PENDING,
        o.next_attempt_at <= now,
        sa.or_(o.lease_expires_at.is_(None), o.lease_expires_at < now),
    ]
    scan = sa.select(o.id, o.destination, o.next_attempt_at).where(*due)
    if full:
        scan = scan.where(o.destination.not_in(sa.bindparam("full", expanding=True)))
    # Look past the first ``limit`` rows so that one destination's backlog does not hide the others'. In the order
    # of the (status, next_attempt_at) index alone, so that reading it in order, up to the limit, is the plan even
    # where the statistics are stale (a tie-break on id would need a sort of every due row).
    scan = scan.order_by(o.next_attempt_at).limit(sa.bindparam("scan_limit", type_=sa.Integer))
    if skip_locked:
        scan = scan.with_for_update(skip_locked=True)
    # MATERIALIZED: computed once. As a plain subquery PostgreSQL may rescan it for each row the UPDATE touches —
    # and each rescan, seeing the leases just written, would pick other rows, past ``limit``.
    candidates = scan.cte("candidates").prefix_with("MATERIALIZED")
    chosen: sa.CTE = candidates
    if limited:
        c = candidates.c
        rank = sa.func.row_number().over(partition_by=c.destination, order_by=(c.next_attempt_at, c.id))
        ranked = sa.select(candidates, rank.label("rank")).subquery("ranked")
        per_destination = sa.bindparam("per_destination", type_=sa.Integer)
        cap: sa.ColumnElement[int] = (
            sa.case(
                *(
                    (
                        ranked.c.destination == sa.bindparam(f"room_destination_{n}"),
                        sa.bindparam(f"room_{n}", type_=sa.Integer),
                    )
                    for n in range(open_rooms)
                ),
                else_=per_destination,
            )
            if open_rooms
            else per_destination
        )
        chosen = (
            sa.select(ranked.c.id)
            .where(ranked.c.rank <= cap)
            .order_by(ranked.c.next_attempt_at, ranked.c.id)
            .limit(sa.bindparam("limit", type_=sa.Integer))
            .cte("chosen")
            .prefix_with("MATERIALIZED")
        )
    # By id alone: the rows chosen are due, and ours until the statement ends (locked on PostgreSQL; SQLite has one
    # writer). Conditions on status or time here would let PostgreSQL, misled by stale statistics, drive the UPDATE
    # from a scan of every due row, each joined with every row chosen.
    return (
        sa.update(outbox)
        .where(o.id == chosen.c.id)
        .values(
            lease_owner=sa.bindparam("owner"),
            lease_expires_at=sa.bindparam("lease_until", type_=o.lease_expires_at.type),
        )
        .returning(*outbox.c)
    )


class OutboxRepository:
    def __init__(self, connection: AsyncConnection, pending: PendingWrites, *, skip_locked: bool) -> None:
        self._connection = connection
        self._pending = pending
        self._skip_locked = skip_locked
        self._postgresql = connection.dialect.name == "postgresql"
        self.enqueued = False  # deliveries were added (or put back) in this transaction: wake the workers

    async def _execute(
        self, statement: sa.Executable, parameters: dict[str, Any] | None = None
    ) -> sa.CursorResult[Any]:
        await self._pending.flush(self._connection)
        return await self._connection.execute(statement, parameters)

    def enqueue(
        self,
        *,
        id: str,
        destination: str,
        endpoint: str,
        event: str,
        payload: dict[str, Any],
        now: datetime,
        task_id: str | None = None,
        status: str = PENDING,
    ) -> None:
        self.enqueued = True
        self._pending.add(
            outbox,
            {
                "id": id,
                "destination": destination,
                "endpoint": endpoint,
                "event": event,
                "payload": orjson.dumps(payload).decode(),
                "task_id": task_id,
                "status": status,
                "attempts": 0,
                "next_attempt_at": now,
                "lease_owner": None,
                "lease_expires_at": None,
                "last_error": None,
                "created_at": now,
                "delivered_at": None,
            },
        )

    async def claim(
        self,
        owner: str,
        now: datetime,
        lease: timedelta,
        limit: int,
        *,
        per_destination: int | None = None,
        rooms: Mapping[str, int] | None = None,
    ) -> list[OutboxEntry]:
        """Lease up to ``limit`` due deliveries, oldest first, in one statement; at most ``per_destination`` for
        any destination, or its own room in ``rooms`` (a room of 0 skips it: its slots are all busy).

        The candidates are locked with ``SKIP LOCKED`` (PostgreSQL), so concurrent workers take disjoint rows;
        a destination at its limit is passed over without holding back the others in the same claim."""
        rooms = rooms or {}
        full = [destination for destination, room in rooms.items() if room <= 0]
        open_rooms = [(destination, room) for destination, room in rooms.items() if room > 0]
        limited = per_destination is not None
        statement = _claim_statement(self._skip_locked, len(full), len(open_rooms) if limited else 0, limited)
        parameters: dict[str, Any] = {
            "now": now,
            "owner": owner,
            "lease_until": now + lease,
            "limit": limit,
            "scan_limit": 2 * limit if limited else limit,
            "per_destination": limit if per_destination is None else per_destination,
            "full": full,
        }
        for n, (destination, room) in enumerate(open_rooms if limited else ()):
            parameters[f"room_destination_{n}"], parameters[f"room_{n}"] = destination, room
        result = await self._execute(statement, parameters)
        entries = [OutboxEntry.from_row(row) for row in result]
        return sorted(entries, key=lambda entry: entry.next_attempt_at)

    async def finish(self, owner: str, finished: Sequence[Finished]) -> set[str]:
        """Record the outcome of deliveries this worker holds, in this transaction; returns the ids recorded.
        An entry whose lease ran out and was taken by another worker is left alone: that worker's outcome counts.

        Deliveries — the usual case — are one statement for the whole batch; retries and dead letters (rare,
        each with its own error and next attempt) one each."""
        o = outbox.c
        held = [o.lease_owner == owner, o.status == PENDING]
        cleared = {"lease_owner": None, "lease_expires_at": None}
        recorded: set[str] = set()
        delivered_at: dict[datetime, list[str]] = {}
        for outcome in finished:
            if outcome.status == DELIVERED:
                delivered_at.setdefault(outcome.at, []).append(outcome.id)
        for moment, ids in delivered_at.items():
            result = await self._execute(
                sa.update(outbox)
                .where(self._id_in(ids), *held)
                .values(status=DELIVERED, delivered_at=moment, attempts=o.attempts + 1, last_error=None, **cleared)
                .returning(o.id)
            )
            recorded.update(row.id for row in result)
        for outcome in finished:
            if outcome.status == DELIVERED:
                continue
            values: dict[str, Any] = {
                "status": outcome.status,
                "attempts": outcome.attempts,
                "last_error": outcome.error,
            }
            if outcome.status == PENDING:
                values["next_attempt_at"] = outcome.at
            result = await self._execute(
                sa.update(outbox).where(o.id == outcome.id, *held).values(**values, **cleared).returning(o.id)
            )
            recorded.update(row.id for row in result)
        return recorded

    def _id_in(self, ids: Sequence[str]) -> sa.ColumnElement[bool]:
        """``outbox.id`` is one of ``ids``: on PostgreSQL ``= ANY`` of one array — one statement whatever their
        number, looked up by the primary key (an IN list is a statement, and a plan, per length)."""
        if self._postgresql:
            return any_of(outbox.c.id, "ids", list(ids))
        return outbox.c.id.in_(list(ids))

    async def release(self, owner: str, entry_ids: Sequence[str]) -> None:
        """Give back leases without an attempt (the worker could not send them): due again at once."""
        self.enqueued = True  # for the other workers to take them now
        o = outbox.c
        await self._execute(
            sa.update(outbox)
            .where(self._id_in(entry_ids), o.lease_owner == owner, o.status == PENDING)
            .values(lease_owner=None, lease_expires_at=None)
        )

    async def get(self, entry_id: str) -> OutboxEntry | None:
        row = (await self._execute(sa.select(outbox).where(outbox.c.id == entry_id))).first()
        return OutboxEntry.from_row(row) if row else None

    async def entries(self, status: str | None = None, limit: int = 100) -> list[OutboxEntry]:
        query = sa.select(outbox).order_by(outbox.c.created_at.desc()).limit(limit)
        if status:
            query = query.where(outbox.c.status == status)
        return [OutboxEntry.from_row(row) for row in await self._execute(query)]

    async def replay(self, entry_id: str, now: datetime) -> bool:
        """Put a dead (or delivered) entry back in the queue, with its id — receivers drop duplicates by it."""
        self.enqueued = True
        result = await self._execute(
            sa.update(outbox)
            .where(outbox.c.id == entry_id)
            .values(status=PENDING, attempts=0, next_attempt_at=now, lease_owner=None, lease_expires_at=None)
        )
        return bool(result.rowcount == 1)

    async def stats(self, now: datetime) -> builtins.list[dict[str, Any]]:
        """Per destination and status: how many, and the age of the oldest waiting (for operators, metrics)."""
        o = outbox.c
        rows: Any = await self._execute(
            sa.select(o.destination, o.status, sa.func.count(), sa.func.min(o.created_at)).group_by(
                o.destination, o.status
            )
        )
        stats = []
        for row in rows:
            destination, status, count, oldest = row[0], row[1], row[2], row[3]
            age = (now - (as_utc(oldest) if oldest else now)).total_seconds() if status == PENDING else None
            stats.append({"destination": destination, "status": status, "count": count, "oldest_age_seconds": age})
        return stats

    async def referral_deliveries(self, task_ids: Iterable[str]) -> dict[str, tuple[str, str]]:
        """For each of these platform-intake Tasks (or an escalation's contact-gp Tasks), the delivery of its
        referral: (destination, status)."""
        ids = list(dict.fromkeys(task_ids))
        if not ids:
            return {}
        o = outbox.c
        result = await self._execute(
            sa.select(o.task_id, o.destination, o.status).where(
                o.task_id.in_(ids), o.event.in_(("referral-request", "contact-gp"))
            )
        )
        return {row.task_id: (row.destination, row.status) for row in result}

    async def of_referral(self, service_request: str, task_ids: Iterable[str], limit: int = 200) -> list[OutboxEntry]:
        """Deliveries about one referral (``ServiceRequest/{id}``): those of its Tasks, and the messages whose focus
        it is (its updates back to the sender), oldest first — for the console's timeline."""
        o = outbox.c
        ids = list(dict.fromkeys(task_ids))
        about = o.payload.contains(f'"{service_request}"', autoescape=True)
        query = sa.select(outbox).where(sa.or_(about, o.task_id.in_(ids)) if ids else about)
        rows = await self._execute(query.order_by(o.created_at, o.id).limit(limit))
        return [OutboxEntry.from_row(row) for row in rows]

    # --- where updates go back ---

    def record_origin(self, service_request_id: str, endpoint: str) -> None:
        self._pending.add(referral_origins, {"service_request_id": service_request_id, "endpoint": endpoint})

    async def origins_of(self, service_request_ids: Iterable[str]) -> dict[str, str]:
        """Where each of these referrals wants its updates sent (those that came as messages) — one query."""
        ids = list(dict.fromkeys(service_request_ids))
        if not ids:
            return {}
        result = await self._execute(_ORIGINS_FROM_ARRAY if self._postgresql else _ORIGINS, {"ids": ids})
        return {row.service_request_id: row.endpoint for row in result}

    async def senders_of(self, service_request_ids: Iterable[str]) -> dict[str, str]:
        """The client that posted each of these referrals (authentication on), whose registration says how the
        gateway authenticates the updates it sends back; the first by id when several posted one — one query."""
        ids = list(dict.fromkeys(service_request_ids))
        if not ids:
            return {}
        result = await self._execute(_SENDERS_FROM_ARRAY if self._postgresql else _SENDERS, {"ids": ids})
        return {row.service_request_id: row.client_id for row in result}

    # --- what messages carry: stored resources as JSON text, sent as they are (no parse, no dump) ---

    async def resource_texts(self, references: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The current JSON of several resources (type, id) — one query."""
        references = list(dict.fromkeys(references))
        if not references:
            return {}
        if self._postgresql:
            types, ids = (list(column) for column in zip(*references, strict=True))
            result = await self._execute(_RESOURCE_TEXTS_FROM_ARRAYS, {"types": types, "ids": ids})
        else:
            r = resources.c
            result = await self._execute(
                sa.select(r.resource_type, r.id, r.content).where(rows_in((r.resource_type, r.id), references))
            )
        return {(row.resource_type, row.id): row.content for row in result}

    async def task_texts(self, service_request_ids: Iterable[str]) -> dict[str, list[tuple[str, str]]]:
        """The Tasks whose focus is each of these ServiceRequests: {ServiceRequest id: [(Task id, JSON)]}, each
        list in the order the Tasks were last updated."""
        ids = list(dict.fromkeys(service_request_ids))
        if not ids:
            return {}
        if self._postgresql:
            result = await self._execute(_TASK_TEXTS_FROM_ARRAY, {"ids": ids})
        else:
            r, s = resources.c, search_index.c
            result = await self._execute(
                sa.select(s.value, r.id, r.content, r.last_updated)
                .join(resources, sa.and_(r.resource_type == s.resource_type, r.id == s.resource_id))
                .where(s.resource_type == "Task", s.param == "focus", s.system == "ServiceRequest", s.value.in_(ids))
            )
        tasks: dict[str, list[tuple[str, str]]] = {}
        for row in sorted(result, key=lambda row: (as_utc(row.last_updated), row.id)):
            tasks.setdefault(row.value, []).append((row.id, row.content))
        return tasks


_ORIGINS = sa.select(referral_origins.c.service_request_id, referral_origins.c.endpoint).where(
    referral_origins.c.service_request_id.in_(sa.bindparam("ids", expanding=True))
)
_ORIGINS_FROM_ARRAY = sa.select(referral_origins.c.service_request_id, referral_origins.c.endpoint).where(
    any_of(referral_origins.c.service_request_id, "ids")
)
_FIRST_SENDER = (referral_senders.c.service_request_id, sa.func.min(referral_senders.c.client_id).label("client_id"))
_SENDERS = (
    sa.select(*_FIRST_SENDER)
    .where(referral_senders.c.service_request_id.in_(sa.bindparam("ids", expanding=True)))
    .group_by(referral_senders.c.service_request_id)
)
_SENDERS_FROM_ARRAY = (
    sa.select(*_FIRST_SENDER)
    .where(any_of(referral_senders.c.service_request_id, "ids"))
    .group_by(referral_senders.c.service_request_id)
)
# On PostgreSQL, look-ups by many keys join the keys as arrays: one statement whatever their number (an IN list
# of n values is a new statement, planned anew, for each n), and a nested loop of index look-ups, one per key, that
# the planner picks whether or not the tables were analysed lately — an IN list is otherwise a filter over the
# index's whole prefix (every Task's focus row) when the statistics are stale. ``OFFSET 0`` keeps each LATERAL
# subquery a look-up per key: flattened into a join, it is the planner's to reorder.
_RESOURCE_TEXTS_FROM_ARRAYS = sa.text(
    "SELECT r.resource_type, r.id, r.content "
    "FROM unnest(CAST(:types AS VARCHAR[]), CAST(:ids AS VARCHAR[])) AS k(resource_type, id) "
    "CROSS JOIN LATERAL (SELECT resource_type, id, content FROM resources "
    "WHERE resources.resource_type = k.resource_type AND resources.id = k.id OFFSET 0) AS r"
)
_TASK_TEXTS_FROM_ARRAY = sa.text(
    "SELECT s.value, r.id, r.content, r.last_updated "
    "FROM unnest(CAST(:ids AS VARCHAR[])) AS k(value) "
    "CROSS JOIN LATERAL (SELECT value, resource_id FROM search_index "
    "WHERE resource_type = 'Task' AND param = 'focus' AND value = k.value AND system = 'ServiceRequest' OFFSET 0) AS s "
    "JOIN resources AS r ON r.resource_type = 'Task' AND r.id = s.resource_id"
).columns(
    sa.column("value", sa.String),
    sa.column("id", sa.String),
    sa.column("content", sa.Text),
    sa.column("last_updated", sa.DateTime(timezone=True)),
)
