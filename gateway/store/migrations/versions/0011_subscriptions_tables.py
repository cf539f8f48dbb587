"""subscriptions: FHIR Subscriptions (DESIGN §12) and the events numbered for each

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 15:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=False),
        sa.Column("viewer", sa.Text(), nullable=False),
        sa.Column("topic", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("events_count", sa.BigInteger(), nullable=False),
        sa.Column("notifications_count", sa.BigInteger(), nullable=False),
        sa.Column("last_queued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_period", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriptions")),
    )
    op.create_index(op.f("ix_subscriptions_topic_status"), "subscriptions", ["topic", "status"], unique=False)
    op.create_index(op.f("ix_subscriptions_owner"), "subscriptions", ["owner"], unique=False)
    op.create_table(
        "subscription_events",
        sa.Column("subscription_id", sa.String(length=64), nullable=False),
        sa.Column("event_number", sa.BigInteger(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("focus_type", sa.String(length=64), nullable=False),
        sa.Column("focus_id", sa.String(length=64), nullable=False),
        sa.Column("focus_version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("subscription_id", "event_number", name=op.f("pk_subscription_events")),
    )
    op.create_index(op.f("ix_subscription_events_occurred_at"), "subscription_events", ["occurred_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_subscription_events_occurred_at"), table_name="subscription_events")
    op.drop_table("subscription_events")
    op.drop_index(op.f("ix_subscriptions_owner"), table_name="subscriptions")
    op.drop_index(op.f("ix_subscriptions_topic_status"), table_name="subscriptions")
    op.drop_table("subscriptions")
