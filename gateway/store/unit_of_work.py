"""Unit of work: one database transaction, rolled back unless ``commit()`` is called.

    async with UnitOfWork(database) as uow:
        uow.resources.add(...)
        await uow.commit()

A unique-key violation (two writers racing for one identifier or idempotency key) surfaces as
``DuplicateKey``; the caller decides whether to retry. A database that cannot be reached — refused connections,
or a connection lost in the middle of a transaction (the server restarted, a failover) — is a 503
``StoreUnavailable``: the transaction was not committed, and the pool replaces the lost connections by itself,
so the gateway works again as soon as the database does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Self

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.audit.context import current_audit
from gateway.errors import IssueCode, StoreUnavailable
from gateway.store.assertions import AssertionRepository
from gateway.store.database import Database
from gateway.store.deadlines import DeadlineRepository
from gateway.store.outbox import OutboxRepository
from gateway.store.repository import Change, IdempotencyRepository, PendingWrites, ResourceRepository
from gateway.store.subscriptions import SubscriptionRepository
from gateway.store.visibility import VisibilityRepository


class DuplicateKey(Exception):
    """A unique key was taken by a concurrent transaction; this one was rolled back."""


#: SQLSTATE classes of a lost server: 08 connection exception, 57P operator intervention (shutdown, restart).
_LOST_SQLSTATES = ("08", "57P")


def connection_lost(exc: BaseException | None) -> bool:
    """Whether an error means the database is out of reach, rather than that a statement failed."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if not isinstance(exc, sa_exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    causes = [exc.orig, getattr(exc.orig, "__cause__", None)]
    return any(str(getattr(cause, "sqlstate", "") or "").startswith(_LOST_SQLSTATES) for cause in causes)


def _unavailable(exc: BaseException) -> StoreUnavailable:
    return StoreUnavailable.single(
        IssueCode.STORE_UNAVAILABLE, f"the database cannot be reached ({type(exc).__name__}); retry later"
    )


#: What a unit of work calls before it commits, with the resources written in it (``Database.change_listeners``):
#: it may read and write in the same transaction — what it writes is committed with the change, or not at all.
ChangeListener = Callable[["UnitOfWork", Sequence[Change]], Awaitable[None]]


class UnitOfWork:
    resources: ResourceRepository
    idempotency: IdempotencyRepository
    outbox: OutboxRepository
    assertions: AssertionRepository
    visibility: VisibilityRepository
    subscriptions: SubscriptionRepository
    deadlines: DeadlineRepository

    def __init__(self, database: Database, *, write: bool = True) -> None:
        self._database = database
        self._write = write
        self._connection: AsyncConnection | None = None
        self._pending = PendingWrites()
        self._committed = False

    async def __aenter__(self) -> Self:
        lock = self._database.write_lock if self._write else None
        if lock is not None:
            await lock.acquire()
        try:
            self._connection = await self._database.connect(write=self._write)
            await self._connection.begin()
        except (OSError, sa_exc.DBAPIError) as exc:
            if self._connection is not None:
                with contextlib.suppress(OSError, sa_exc.DBAPIError):
                    await self._connection.close()
            if lock is not None:
                lock.release()
            if isinstance(exc, (OSError, sa_exc.OperationalError, sa_exc.InterfaceError)) or connection_lost(exc):
                raise _unavailable(exc) from exc
            raise
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        self.resources = ResourceRepository(self._connection, self._pending)
        self.idempotency = IdempotencyRepository(self._connection, self._pending)
        self.outbox = OutboxRepository(self._connection, self._pending, skip_locked=not self._database.is_sqlite)
        self.assertions = AssertionRepository(self._connection)
        self.visibility = VisibilityRepository(self._connection, self._pending)
        self.subscriptions = SubscriptionRepository(self._connection, self._pending)
        self.deadlines = DeadlineRepository(self._connection, self._pending)
        return self

    async def replay_delivery(self, delivery_id: str, now: datetime) -> bool:
        """A dead (or delivered) delivery queued again under its id (receivers drop duplicates by it); a
        Subscription's notification in its place in that Subscription's order (``SubscriptionRepository.replay``).
        False when there is none to replay."""
        replayed = await self.subscriptions.replay(delivery_id, now)
        if replayed is None:
            return await self.outbox.replay(delivery_id, now)
        self.outbox.enqueued = self.outbox.enqueued or replayed  # wake the workers
        return replayed

    async def commit(self) -> None:
        assert self._connection is not None, "commit() outside 'async with'"
        changes, self._pending.changes = self._pending.changes, []
        if changes:
            listeners: list[ChangeListener] = self._database.change_listeners
            for listener in listeners:
                await listener(self, changes)
        # A change made for an API request is audited in its own transaction: both are kept, or neither.
        audit = current_audit()
        event = audit.change_event(self._pending.written) if audit is not None else None
        if event is not None:
            self.resources.add(event)
        try:
            # On PostgreSQL, when nothing was written before, the flush is the one write: a single statement,
            # sent without BEGIN and COMMIT (gateway.store.database); the commit below then has nothing to end.
            self._database.commit_alone(self._connection)
            await self._pending.flush(self._connection)
            await self._connection.commit()
        except sa_exc.IntegrityError as exc:
            raise DuplicateKey(str(exc.orig)) from exc
        self._committed = True
        if self.outbox.enqueued:
            self._database.outbox_written()  # wake the workers, this process's and (PostgreSQL) the others'
        if audit is not None and event is not None:
            audit.recorded_in_transaction = True

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        connection, self._connection = self._connection, None
        try:
            if connection is not None:
                try:
                    if not self._committed:
                        await connection.rollback()
                except (OSError, sa_exc.DBAPIError) as cleanup:
                    # A connection lost mid-transaction cannot roll back; the server already did. Only that
                    # is swallowed: the error that brought us here (if any) is reported below.
                    if not connection_lost(cleanup):
                        raise
                finally:
                    with contextlib.suppress(OSError, sa_exc.DBAPIError):
                        await connection.close()
        finally:
            lock = self._database.write_lock if self._write else None
            if lock is not None:
                lock.release()
        if isinstance(exc, sa_exc.IntegrityError):
            raise DuplicateKey(str(exc.orig)) from exc
        if connection_lost(exc):
            assert exc is not None
            raise _unavailable(exc) from exc
