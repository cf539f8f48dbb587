"""pending deadlines: the GP validations still waiting for an answer, by deadline (the escalation scan's index)

The escalation scan read every Task whose deadline ever passed, decided ones too, and opened a write transaction
for each; it now reads ``pending_deadlines``, which holds the open validations only. The table is filled from the
Tasks stored: each ``gp-validation`` Task still ``requested`` (or ``received``), not escalated, with a deadline —
its deadline the start of the indexed ``deadline`` period (``search_index``, UTC), as the scan compared it before.
Tasks are read through their ``deadline`` index rows, in batches by id; rows inserted many at once. Running it
again (after a ``stamp``) gives the same rows; the downgrade drops the table.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 15:00:00.000000
"""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 5_000
_BASE = "https://fhir.dac-gateway.org/CodeSystem"
_resources = sa.table(
    "resources", sa.column("resource_type", sa.String), sa.column("id", sa.String), sa.column("content", sa.Text)
)
_index = sa.table(
    "search_index",
    sa.column("resource_type", sa.String),
    sa.column("resource_id", sa.String),
    sa.column("param", sa.String),
    sa.column("value", sa.String),
)


def _coded(concept: Any, system: str, code: str) -> bool:
    codings = concept.get("coding") if isinstance(concept, dict) else None
    return any(isinstance(c, dict) and c.get("system") == system and c.get("code") == code for c in (codings or []))


def _waiting(task: dict[str, Any]) -> bool:
    """A GP validation waiting for its answer, not escalated yet (``gateway.workflow.deadlines.waiting``)."""
    return (
        _coded(task.get("code"), f"{_BASE}/dac-task-type", "gp-validation")
        and task.get("status") in ("requested", "received")
        and not _coded(task.get("businessStatus"), f"{_BASE}/dac-task-business-status", "escalated")
    )


def _instant(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def upgrade() -> None:
    table = op.create_table(
        "pending_deadlines",
        sa.Column("task_id", sa.String(length=64), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_pending_deadlines")),
        if_not_exists=True,
    )
    op.create_index(
        op.f("ix_pending_deadlines_due_at"), "pending_deadlines", ["due_at"], unique=False, if_not_exists=True
    )
    connection = op.get_bind()
    connection.execute(sa.delete(table))
    r, s = _resources.c, _index.c
    after = ""
    while True:
        batch = connection.execute(
            sa.select(r.id, r.content, s.value)
            .select_from(_index.join(_resources, sa.and_(r.resource_type == s.resource_type, r.id == s.resource_id)))
            .where(s.resource_type == "Task", s.param == "deadline", s.resource_id > after)
            .order_by(s.resource_id)
            .limit(_BATCH)
        ).all()
        if not batch:
            break
        after = batch[-1].id
        rows: dict[str, datetime] = {}
        for row in batch:
            due = _instant(row.value)
            if due is not None and row.id not in rows and _waiting(orjson.loads(row.content)):
                rows[row.id] = due
        if rows:
            connection.execute(sa.insert(table), [{"task_id": task, "due_at": due} for task, due in rows.items()])


def downgrade() -> None:
    op.drop_index(op.f("ix_pending_deadlines_due_at"), table_name="pending_deadlines")
    op.drop_table("pending_deadlines")
