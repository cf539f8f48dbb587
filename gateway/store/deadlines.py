"""Pending deadlines: the GP validations still waiting for an answer, by deadline (``pending_deadlines``).

What the escalation scan reads (``gateway.workflow.deadlines``): the rows due, oldest first — an index range over
the open validations only, however many Tasks were decided before. A row is written in the transaction that
creates its Task and removed in the one that decides or escalates it. The Task stays the truth: a row whose Task
no longer waits is dropped when it comes due, a row whose Task's deadline moved is moved with it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.store.repository import PendingWrites, any_of, as_utc
from gateway.store.tables import pending_deadlines

_d = pending_deadlines.c
_DUE = (
    sa.select(_d.task_id, _d.due_at)
    .where(_d.due_at <= sa.bindparam("now", type_=_d.due_at.type))
    .order_by(_d.due_at, _d.task_id)
    .limit(sa.bindparam("limit", type_=sa.Integer))
)
_MOVE = (
    sa.update(pending_deadlines)
    .where(_d.task_id == sa.bindparam("id"))
    .values(due_at=sa.bindparam("until", type_=_d.due_at.type))
)


class DeadlineRepository:
    def __init__(self, connection: AsyncConnection, pending: PendingWrites) -> None:
        self._connection = connection
        self._pending = pending
        self._postgresql = connection.dialect.name == "postgresql"

    async def _execute(self, statement: sa.Executable, parameters: dict[str, Any] | None = None) -> Any:
        await self._pending.flush(self._connection)
        return await self._connection.execute(statement, parameters)

    def add(self, task_id: str, due_at: datetime) -> None:
        """A Task now waits for an answer until ``due_at`` (written with the transaction's other rows)."""
        self._pending.add(pending_deadlines, {"task_id": task_id, "due_at": due_at})

    async def remove(self, task_ids: Iterable[str]) -> None:
        """These Tasks wait no more (decided, cancelled, escalated); ids without a row are ignored."""
        ids = list(dict.fromkeys(task_ids))
        if not ids:
            return
        condition = any_of(_d.task_id, "ids", ids) if self._postgresql else _d.task_id.in_(ids)
        await self._execute(sa.delete(pending_deadlines).where(condition))

    async def move(self, task_id: str, until: datetime) -> None:
        """The Task's row comes due at ``until`` instead (its deadline moved, or its escalation failed)."""
        await self._execute(_MOVE, {"id": task_id, "until": until})

    async def due(self, now: datetime, limit: int) -> list[tuple[str, datetime]]:
        """Up to ``limit`` rows due at ``now``, oldest deadline first: (Task id, deadline)."""
        result = await self._execute(_DUE, {"now": now, "limit": limit})
        return [(row.task_id, as_utc(row.due_at)) for row in result]

    async def all(self) -> list[tuple[str, datetime]]:
        """Every row, by deadline (operators, tests)."""
        result = await self._execute(sa.select(_d.task_id, _d.due_at).order_by(_d.due_at, _d.task_id))
        return [(row.task_id, as_utc(row.due_at)) for row in result]
