"""outbox: NOTIFY gateway_outbox when deliveries are enqueued (PostgreSQL)

A statement-level trigger, so that every transaction that inserts into the outbox — whatever writes it, in
however many rows or statements — wakes the workers listening on ``gateway_outbox`` when it commits (PostgreSQL
sends notifications at commit, once per transaction and channel), at no extra round trip. SQLite has no such
thing: there the only worker is in the writing process, woken by the unit of work itself.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 07:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE FUNCTION gateway_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('gateway_outbox', '');
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER outbox_notify AFTER INSERT ON outbox "
        "FOR EACH STATEMENT EXECUTE FUNCTION gateway_outbox_notify()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS outbox_notify ON outbox")
    op.execute("DROP FUNCTION IF EXISTS gateway_outbox_notify()")
