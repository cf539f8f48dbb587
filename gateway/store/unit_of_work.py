"""Unit of work: one database transaction, rolled back unless ``commit()`` is called.

    async with UnitOfWork(database) as uow:
        uow.resources.add(...)
        await uow.commit()

A unique-key violation (two writers racing for one identifier or idempotency key) surfaces as
``DuplicateKey``; the caller decides whether to retry. A database that cannot be reached is a 503
``StoreUnavailable``.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.errors import IssueCode, StoreUnavailable
from gateway.store.database import Database
from gateway.store.outbox import OutboxRepository
from gateway.store.repository import IdempotencyRepository, PendingWrites, ResourceRepository


class DuplicateKey(Exception):
    """A unique key was taken by a concurrent transaction; this one was rolled back."""


def _unavailable(exc: BaseException) -> StoreUnavailable:
    return StoreUnavailable.single(
        IssueCode.STORE_UNAVAILABLE, f"the database cannot be reached ({type(exc).__name__}); retry later"
    )


class UnitOfWork:
    resources: ResourceRepository
    idempotency: IdempotencyRepository
    outbox: OutboxRepository

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
        except (OSError, sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
            if self._connection is not None:
                await self._connection.close()
            if lock is not None:
                lock.release()
            raise _unavailable(exc) from exc
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        self.resources = ResourceRepository(self._connection, self._pending)
        self.idempotency = IdempotencyRepository(self._connection, self._pending)
        self.outbox = OutboxRepository(self._connection, self._pending, skip_locked=not self._database.is_sqlite)
        return self

    async def commit(self) -> None:
        assert self._connection is not None, "commit() outside 'async with'"
        try:
            await self._pending.flush(self._connection)
            await self._connection.commit()
        except sa_exc.IntegrityError as exc:
            raise DuplicateKey(str(exc.orig)) from exc
        self._committed = True

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        connection, self._connection = self._connection, None
        try:
            if connection is not None:
                try:
                    if not self._committed:
                        await connection.rollback()
                finally:
                    await connection.close()
        finally:
            lock = self._database.write_lock if self._write else None
            if lock is not None:
                lock.release()
        if isinstance(exc, sa_exc.IntegrityError):
            raise DuplicateKey(str(exc.orig)) from exc
        if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)) and exc.connection_invalidated:
            raise _unavailable(exc) from exc
